//! ptc's compiled hot path (`pt_collector._native`): frames or capture chunks in, records out
//! already encoded as JSON lines or msgpack, grouped per source node, with the counters.
//! Twin of the pure-Python engine (decode.py, tts.py, record.py, pcap.py); the tests hold them byte-equal.

pub mod addr;
pub mod analyze;
pub mod block;
pub mod core;
mod encode;
pub mod path_histogram;
pub mod pcap;
pub mod record_batch;
pub mod routes;
pub mod rules;
pub mod source_shift;
pub mod tts;
pub mod walk;

#[cfg(feature = "python")]
mod python;
