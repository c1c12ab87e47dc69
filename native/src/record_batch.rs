//! Kafka record batches (message format v2), built whole: ptc messages (key, value, headers), one record each, in
//! one batch, compressed and checksummed here, so the Kafka client only writes the producer's state in.
//!
//! A batch of one message holds the bytes aiokafka's DefaultRecordBatchBuilder writes for `append(0, timestamp,
//! key, value, headers)` then `build()` (tests/test_record_batch.py holds them equal): the 61-byte header, then
//! the record, compressed with the batch's codec (snappy in xerial's framing, 32 KiB blocks, as aiokafka and the
//! Java client write it), whether or not that makes it smaller, as aiokafka's compiled builder and the Java client
//! do. Several messages are records one after the other (offset deltas 0, 1, ...), the snappy blocks starting
//! again at each record, so a batch can stop before the record that would take it over its size limit.

pub const HEADER: usize = 61;
const CRC_AT: usize = 17; // CRC-32C (u32) of everything from the attributes on
const CRC_FROM: usize = 21;
const STATE_AT: usize = 43; // producer id (i64), producer epoch (i16), base sequence (i32)
const NO_PARTITION_LEADER_EPOCH: i32 = -1;
const XERIAL_HEADER: [u8; 16] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];
const XERIAL_BLOCK: usize = 32 * 1024;

/// The compression a batch is built with: the codec bits of its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Snappy = 2,
}

impl Codec {
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "none" => Some(Codec::None),
            "snappy" => Some(Codec::Snappy),
            _ => None,
        }
    }
}

fn varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64; // zigzag
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, data: &[u8]) {
    varint(out, data.len() as i64);
    out.extend_from_slice(data);
}

fn varint_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn field_len(data: &[u8]) -> usize {
    varint_len(data.len() as i64) + data.len()
}

/// One record around its value: before it, its length, attributes, timestamp delta (0) and offset delta, the key
/// and the value's length; after it, the headers.
fn record_around(key: &[u8], value_len: usize, headers: &[(&[u8], &[u8])], offset_delta: i64) -> (Vec<u8>, Vec<u8>) {
    let mut after = Vec::new();
    varint(&mut after, headers.len() as i64);
    for (name, data) in headers {
        bytes_field(&mut after, name);
        bytes_field(&mut after, data);
    }
    let len = 2 + varint_len(offset_delta) + field_len(key) + varint_len(value_len as i64) + value_len + after.len();
    let mut before = Vec::with_capacity(key.len() + 24);
    varint(&mut before, len as i64);
    before.extend_from_slice(&[0, 0]); // attributes, timestamp delta 0
    varint(&mut before, offset_delta);
    bytes_field(&mut before, key);
    varint(&mut before, value_len as i64);
    (before, after)
}

#[cfg(test)]
fn record(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])], offset_delta: i64) -> Vec<u8> {
    let (before, after) = record_around(key, value.len(), headers, offset_delta);
    [before.as_slice(), value, &after].concat()
}

/// Bytes start..end of the pieces laid end to end: a slice of one piece when they lie in it (the value, but for
/// the first and last blocks), else copied into `scratch`.
fn window<'a>(pieces: &[&'a [u8]], start: usize, end: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let mut at = 0;
    for piece in pieces {
        if at <= start && end <= at + piece.len() {
            return &piece[start - at..end - at];
        }
        at += piece.len();
    }
    scratch.clear();
    at = 0;
    for piece in pieces {
        let (lo, hi) = (start.max(at), end.min(at + piece.len()));
        if lo < hi {
            scratch.extend_from_slice(&piece[lo - at..hi - at]);
        }
        at += piece.len();
    }
    scratch
}

/// Appends the pieces, laid end to end, as snappy blocks in xerial's framing (after its header): each 32 KiB
/// block's length and snappy bytes; the blocks are read where they lie (copied only when one spans two pieces).
fn snappy_blocks(out: &mut Vec<u8>, pieces: &[&[u8]], encoder: &mut snap::raw::Encoder, scratch: &mut Vec<u8>) {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    out.reserve(total / 4);
    let mut compressed = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK)];
    for start in (0..total).step_by(XERIAL_BLOCK) {
        let block = window(pieces, start, total.min(start + XERIAL_BLOCK), scratch);
        let n = encoder.compress(block, &mut compressed).expect("a 32 KiB block always compresses");
        out.extend_from_slice(&(n as i32).to_be_bytes());
        out.extend_from_slice(&compressed[..n]);
    }
}

/// One ptc message: a record's key, its value in parts laid end to end (never joined), its headers.
pub struct Message<'a> {
    pub key: &'a [u8],
    pub value: Vec<&'a [u8]>,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// A built batch of the messages in order, one record each, as many as fit in `limit` bytes but at least one:
/// (the batch, how many it holds). The producer's state is unset (-1, -1, 0), as aiokafka's builder leaves it.
pub fn build(messages: &[Message], codec: Codec, timestamp_ms: i64, limit: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
    out.extend_from_slice(&[0; 4]); // length, below
    out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    out.push(2); // magic
    out.extend_from_slice(&[0; 4]); // CRC, below
    out.extend_from_slice(&(codec as i16).to_be_bytes()); // attributes
    out.extend_from_slice(&[0; 4]); // last offset delta, below
    out.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
    out.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&0i32.to_be_bytes()); // base sequence
    out.extend_from_slice(&[0; 4]); // records, below
    if codec == Codec::Snappy {
        out.extend_from_slice(&XERIAL_HEADER);
    }
    let (mut encoder, mut scratch) = (snap::raw::Encoder::new(), Vec::with_capacity(XERIAL_BLOCK));
    let mut count = 0;
    let (mut plain, start) = (0, out.len()); // bytes of the records so far, before and after compression
    for (index, message) in messages.iter().enumerate() {
        let value_len: usize = message.value.iter().map(|p| p.len()).sum();
        let (before, after) = record_around(message.key, value_len, &message.headers, index as i64);
        let size = before.len() + value_len + after.len();
        let mark = out.len();
        // the next record's likely size, at the ratio so far: one that would not fit is not compressed at all
        if index > 0 && mark + size * (mark - start) / plain.max(1) > limit {
            break;
        }
        let mut pieces = Vec::with_capacity(message.value.len() + 2);
        pieces.push(before.as_slice());
        pieces.extend_from_slice(&message.value);
        pieces.push(&after);
        match codec {
            Codec::None => pieces.iter().for_each(|piece| out.extend_from_slice(piece)),
            Codec::Snappy => snappy_blocks(&mut out, &pieces, &mut encoder, &mut scratch),
        }
        if index > 0 && out.len() > limit {
            out.truncate(mark);
            break;
        }
        plain += size;
        count += 1;
    }
    out[23..27].copy_from_slice(&(count as i32 - 1).to_be_bytes()); // last offset delta
    out[57..61].copy_from_slice(&(count as i32).to_be_bytes());
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    checksum(&mut out);
    (out, count)
}

fn checksum(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// Writes the idempotent producer's state into a built batch, and its checksum again.
pub fn set_producer_state(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[STATE_AT..STATE_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[STATE_AT + 8..STATE_AT + 10].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[STATE_AT + 10..STATE_AT + 14].copy_from_slice(&base_sequence.to_be_bytes());
    checksum(batch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &[u8], value: &[&[u8]], headers: &[(&[u8], &[u8])], codec: Codec, timestamp_ms: i64) -> Vec<u8> {
        let message = Message { key, value: value.to_vec(), headers: headers.to_vec() };
        let (batch, count) = build(&[message], codec, timestamp_ms, 0);
        assert_eq!(count, 1); // the first always goes in
        batch
    }

    /// The records of a batch, decompressed: (offset delta, key, value)
    fn records(batch: &[u8]) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        let mut plain = Vec::new();
        let mut body = &batch[HEADER + 16..];
        while !body.is_empty() {
            let n = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
            plain.extend(snap::raw::Decoder::new().decompress_vec(&body[4..4 + n]).unwrap());
            body = &body[4 + n..];
        }
        fn read(data: &[u8], at: &mut usize) -> i64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = data[*at];
                *at += 1;
                v |= ((b & 0x7f) as u64) << shift;
                shift += 7;
                if b < 0x80 {
                    return ((v >> 1) as i64) ^ -((v & 1) as i64);
                }
            }
        }
        let (mut at, mut out) = (0, Vec::new());
        while at < plain.len() {
            let len = read(&plain, &mut at) as usize;
            let end = at + len;
            at += 1; // attributes
            read(&plain, &mut at); // timestamp delta
            let delta = read(&plain, &mut at);
            let key_len = read(&plain, &mut at) as usize;
            let key = plain[at..at + key_len].to_vec();
            at += key_len;
            let value_len = read(&plain, &mut at) as usize;
            out.push((delta, key, plain[at..at + value_len].to_vec()));
            at = end;
        }
        out
    }

    #[test]
    fn varints_are_zigzag() {
        let mut out = Vec::new();
        for v in [0, -1, 1, 63, 64, 300] {
            varint(&mut out, v);
        }
        assert_eq!(out, [0, 1, 2, 126, 128, 1, 216, 4]);
        for v in [0, 1, 63, 64, 8191, 8192, 1 << 20, i32::MAX as i64, -1, -65] {
            let mut one = Vec::new();
            varint(&mut one, v);
            assert_eq!(varint_len(v), one.len(), "{v}");
        }
    }

    #[test]
    fn header_fields_and_checksum() {
        let mut batch = one(b"k", &[b"val", b"ue"], &[(b"h", b"1")], Codec::None, 1_700_000_000_000);
        assert_eq!(i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize, batch.len() - 12);
        assert_eq!(batch[16], 2);
        set_producer_state(&mut batch, 7, 1, 42);
        assert_eq!(i64::from_be_bytes(batch[43..51].try_into().unwrap()), 7);
        assert_eq!(i32::from_be_bytes(batch[53..57].try_into().unwrap()), 42);
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
    }

    #[test]
    fn snappy_blocks_decompress_to_the_record() {
        let value: Vec<u8> = (0..100_000u32).flat_map(|i| format!("{{\"seq\":{i}}}\n").into_bytes()).collect();
        let (a, b) = value.split_at(50_000);
        let batch = one(b"k", &[a, b], &[], Codec::Snappy, 0);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 2);
        let mut body = &batch[HEADER + 16..];
        let mut plain = Vec::new();
        while !body.is_empty() {
            let n = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
            plain.extend(snap::raw::Decoder::new().decompress_vec(&body[4..4 + n]).unwrap());
            body = &body[4 + n..];
        }
        assert_eq!(plain, record(b"k", &value, &[], 0));
    }

    #[test]
    fn windows_across_pieces() {
        let (a, b, c) = (b"abc".as_slice(), b"defghij".as_slice(), b"kl".as_slice());
        let mut scratch = Vec::new();
        assert_eq!(window(&[a, b, c], 4, 8, &mut scratch), b"efgh");
        assert_eq!(window(&[a, b, c], 1, 5, &mut scratch), b"bcde");
        assert_eq!(window(&[a, b, c], 0, 12, &mut scratch), b"abcdefghijkl");
        assert_eq!(window(&[a, b, c], 9, 12, &mut scratch), b"jkl");
    }

    #[test]
    fn incompressible_goes_compressed_all_the_same() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64; // xorshift: bytes snappy cannot shorten
        let value: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let batch = one(b"", &[&value], &[], Codec::Snappy, 0);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 2);
        assert!(batch.len() > HEADER + record(b"", &value, &[], 0).len());
    }

    #[test]
    fn several_messages_are_records_in_order_up_to_the_limit() {
        let values: Vec<Vec<u8>> = (0..10u32)
            .map(|m| (0..5_000u32).flat_map(|i| format!("{{\"m\":{m},\"seq\":{i}}}\n").into_bytes()).collect())
            .collect();
        let keys: Vec<Vec<u8>> = (0..10u8).map(|m| vec![b'k', m]).collect();
        let messages: Vec<Message> = (0..10)
            .map(|m| Message {
                key: &keys[m],
                value: vec![&values[m][..7], &values[m][7..]],
                headers: vec![(b"h", b"1")],
            })
            .collect();
        let (all, count) = build(&messages, Codec::Snappy, 0, usize::MAX);
        assert_eq!(count, 10);
        let read = records(&all);
        assert_eq!(read.len(), 10);
        for (m, (delta, key, value)) in read.iter().enumerate() {
            assert_eq!((*delta, key, value), (m as i64, &keys[m], &values[m]));
        }
        assert_eq!(i32::from_be_bytes(all[23..27].try_into().unwrap()), 9); // last offset delta
        assert_eq!(i32::from_be_bytes(all[57..61].try_into().unwrap()), 10);
        assert_eq!(u32::from_be_bytes(all[17..21].try_into().unwrap()), crc32c::crc32c(&all[21..]));
        // a limit of about four records' compressed size: fewer records, never over it (but the first)
        let limit = HEADER + 16 + (all.len() - HEADER - 16) * 4 / 10;
        let (some, count) = build(&messages, Codec::Snappy, 0, limit);
        assert!((3..=4).contains(&count), "{count}");
        assert!(some.len() <= limit);
        assert_eq!(records(&some).len(), count);
        assert_eq!(i32::from_be_bytes(some[57..61].try_into().unwrap()), count as i32);
        assert_eq!(u32::from_be_bytes(some[17..21].try_into().unwrap()), crc32c::crc32c(&some[21..]));
        let (first, count) = build(&messages, Codec::Snappy, 0, 10);
        assert_eq!((count, records(&first).len()), (1, 1));
    }
}

#[cfg(feature = "python")]
pub mod python {
    //! `record_batch` and `set_producer_state` (pt_collector/_native.pyi), for kafka/recordbatch.py.
    use pyo3::buffer::PyBuffer;
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::PyByteArray;

    use super::{Codec, Message};

    /// A built record batch of the messages (key, the value in parts laid end to end, headers), one record
    /// each, as many as fit in `limit` bytes (at least one): (the batch, how many). The GIL is released while it
    /// is built.
    #[pyfunction]
    #[allow(clippy::type_complexity)]
    fn record_batch<'py>(
        py: Python<'py>,
        messages: Vec<(Vec<u8>, Vec<PyBuffer<u8>>, Vec<(String, Vec<u8>)>)>,
        codec: &str,
        timestamp_ms: i64,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyByteArray>, usize)> {
        let codec = Codec::from_name(codec).ok_or_else(|| PyValueError::new_err(format!("no native {codec}")))?;
        if messages.is_empty() {
            return Err(PyValueError::new_err("a record batch needs a message"));
        }
        if !messages.iter().all(|(_, value, _)| value.iter().all(|part| part.is_c_contiguous())) {
            return Err(PyValueError::new_err("the value's parts must be contiguous buffers"));
        }
        let built: Vec<Message> = messages
            .iter()
            .map(|(key, value, headers)| Message {
                key,
                // SAFETY: each buffer is held in `messages` until the batch is built, and only read.
                value: value
                    .iter()
                    .map(|b| unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
                    .collect(),
                headers: headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())).collect(),
            })
            .collect();
        let (batch, count) = py.detach(|| super::build(&built, codec, timestamp_ms, limit));
        Ok((PyByteArray::new(py, &batch), count))
    }

    /// The idempotent producer's state written into a built batch, with its checksum.
    #[pyfunction]
    fn set_producer_state(
        batch: &Bound<'_, PyByteArray>,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> PyResult<()> {
        if batch.len() < super::HEADER {
            return Err(PyValueError::new_err("not a record batch"));
        }
        // SAFETY: no Python code runs while the slice is alive, so nothing can resize the bytearray.
        let data = unsafe { batch.as_bytes_mut() };
        super::set_producer_state(data, producer_id, producer_epoch, base_sequence);
        Ok(())
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(record_batch, m)?)?;
        m.add_function(wrap_pyfunction!(set_producer_state, m)?)?;
        Ok(())
    }
}
