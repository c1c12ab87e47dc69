//! Frames to encoded records: the walk's shape made into a schema v1 record, written straight to
//! JSON or msgpack bytes exactly as msgspec writes `pt_collector.record.Record`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::addr;
use crate::encode::{append, bound, key, Cursor, Json, Msgpack, Secs, Writer};
use crate::path_histogram::HistProbe;
use crate::rules::{hist_probe, Probe, Rules};
use crate::tts::{midpoint_times, MAX_SHIFT};
use crate::walk::{walk, Shape, Stop, MCD_SIZE};

/// A field of a map: JSON writes `,"name":` (no comma for the first) in one copy, msgpack the key.
macro_rules! field {
    ($w:ty, $c:expr, first $name:literal) => {{
        const KEY: [u8; $name.len() + 1] = key($name);
        <$w>::field($c, concat!("\"", $name, "\":").as_bytes(), &KEY)
    }};
    ($w:ty, $c:expr, $name:literal) => {{
        const KEY: [u8; $name.len() + 1] = key($name);
        <$w>::field($c, concat!(",\"", $name, "\":").as_bytes(), &KEY)
    }};
}

const NS_PER_S: i64 = 1_000_000_000;
const SCHEMA_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Msgpack,
}

/// A TTS shift outside 0..=24 (the message says so as Python's Decoder does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftError(pub String);

fn checked(shift: Option<i64>) -> Result<Option<u32>, ShiftError> {
    match shift {
        Some(s) if !(0..=MAX_SHIFT).contains(&s) => {
            Err(ShiftError(format!("TTS shift must be 0..{MAX_SHIFT}, not {s}")))
        }
        s => Ok(s.map(|s| s as u32)),
    }
}

/// An IPv6 prefix and the TTS shift of the sources it holds.
#[derive(Debug, Clone)]
pub struct Prefix {
    pub network: u128,
    pub len: u8,
    pub shift: Option<u32>,
}

impl Prefix {
    fn holds(&self, a: u128) -> bool {
        self.len == 0 || (a ^ self.network) >> (128 - self.len as u32) == 0
    }
}

/// The decoded records of a batch, encoded, with the counters: every frame lands in one counter.
#[derive(Default)]
pub struct Output {
    pub data: Vec<u8>,
    /// Per record: (group, end offset in `data`, index of its frame in the input).
    pub records: Vec<(u32, u32, u32)>,
    /// Per source node in first-seen order: (address, record count); `source_text` gives its text.
    pub groups: Vec<([u8; 16], u32)>,
    group_of: HashMap<[u8; 16], u32, BuildHasherDefault<AddressHasher>>,
    pub frames: u64,
    pub not_pt: u64,
    /// (layer, reason, count), in first-seen order.
    pub malformed: Vec<(&'static str, &'static str, u64)>,
    /// With flow rules set (`Core::rules`): per record its route (rules.rs), and the rules that made them.
    pub routes: Vec<u32>,
    pub rules: Option<Arc<Rules>>,
    /// The latest capture time of a record (0: none).
    pub latest_ns: u64,
    /// Routed: what a histogram rule needs of each of its probes, in input order (path_histogram.rs).
    pub hist: Vec<HistProbe>,
    /// Whether `hist` went into the rules' windows already (once only: `Rules::aggregate`).
    pub aggregated: std::sync::atomic::AtomicBool,
}

/// A hasher for 16-byte addresses (keys ptc made from the probes' own bytes: no need for SipHash's
/// flooding defence, a batch's groups are bounded by its frames).
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_ne_bytes(word)).wrapping_mul(0x517C_C1B7_2722_0A95);
        }
    }
}

impl Output {
    /// An output with room for about `frames` records of `format`.
    pub fn with_capacity(frames: usize, format: Format) -> Self {
        let per_record = if format == Format::Json { 800 } else { 560 };
        Output {
            data: Vec::with_capacity(frames * per_record),
            records: Vec::with_capacity(frames),
            ..Default::default()
        }
    }

    pub fn decoded(&self) -> usize {
        self.records.len()
    }

    pub fn count_malformed(&mut self, layer: &'static str, reason: &'static str) {
        match self.malformed.iter_mut().find(|(l, r, _)| *l == layer && *r == reason) {
            Some(entry) => entry.2 += 1,
            None => self.malformed.push((layer, reason, 1)),
        }
    }

    fn group(&mut self, src: &[u8; 16]) -> u32 {
        if let Some(g) = self.group_of.get(src) {
            return *g;
        }
        let g = self.groups.len() as u32;
        self.groups.push((*src, 0));
        self.group_of.insert(*src, g);
        g
    }

    /// The text of group `g`'s source address (made when asked: most batches never need it).
    pub fn source_text(&self, g: usize) -> String {
        let mut text = Vec::with_capacity(39);
        addr::write(&mut text, &self.groups[g].0);
        String::from_utf8(text).expect("ASCII")
    }
}

/// Decoder settings and caches; one per engine instance.
pub struct Core {
    pub tts_shift: Option<u32>,
    prefixes: Vec<Prefix>,
    sources: crate::source_shift::SourceShifts,
    pub format: Format,
    addresses: addr::Cache,
    secs: Secs,
    tts: Vec<u8>,
    times: Vec<Option<i64>>,
    /// Flow rules matched on each record as it is decoded (rules.rs), when set.
    pub rules: Option<Arc<Rules>>,
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn be32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn addr16(f: &[u8], at: usize) -> &[u8; 16] {
    f[at..at + 16].try_into().expect("16 bytes")
}

impl Core {
    /// `prefixes`: (network, prefix length, shift) as the config's `tts_shift_by_source` gives them.
    pub fn new(
        tts_shift: Option<i64>,
        prefixes: &[(u128, u8, Option<i64>)],
        format: Format,
    ) -> Result<Self, ShiftError> {
        let mut checked_prefixes = Vec::with_capacity(prefixes.len());
        for (network, len, shift) in prefixes {
            checked_prefixes.push(Prefix { network: *network, len: *len, shift: checked(*shift)? });
        }
        // longest first (a stable sort, as Python's sorted), so the first prefix holding a source is the most specific
        checked_prefixes.sort_by_key(|p| std::cmp::Reverse(p.len));
        Ok(Core {
            tts_shift: checked(tts_shift)?,
            prefixes: checked_prefixes,
            sources: Default::default(),
            format,
            addresses: addr::Cache::default(),
            secs: Secs::default(),
            tts: Vec::with_capacity(16),
            times: Vec::with_capacity(16),
            rules: None,
        })
    }

    /// The TTS shift for the midpoints on paths from the source `src`.
    pub fn shift_for(&self, src: &[u8; 16]) -> Option<u32> {
        if let Some(shift) = self.sources.get(src) {
            return shift;
        }
        let a = u128::from_be_bytes(*src);
        self.prefixes.iter().find(|p| p.holds(a)).map_or(self.tts_shift, |p| p.shift)
    }

    /// `src` decodes with `shift` from now on, whatever the prefixes say.
    pub fn set_source_shift(&mut self, src: [u8; 16], shift: Option<i64>) -> Result<(), ShiftError> {
        self.sources.set(src, checked(shift)?);
        Ok(())
    }

    /// Decode one frame into `out`: a record appended and counted, or a not-PT or malformed count.
    pub fn decode(&mut self, out: &mut Output, frame: &[u8], capture_ns: u64, linktype: u32, index: u32) {
        out.frames += 1;
        match walk(frame, linktype) {
            Ok(shape) => {
                let src = addr16(frame, shape.probe + 8);
                let group = out.group(src);
                out.groups[group as usize].1 += 1;
                let timed = match self.format {
                    Format::Json => self.record::<Json>(&mut out.data, frame, &shape, capture_ns),
                    Format::Msgpack => self.record::<Msgpack>(&mut out.data, frame, &shape, capture_ns),
                };
                out.records.push((group, out.data.len() as u32, index));
                out.latest_ns = out.latest_ns.max(capture_ns);
                if let Some(rules) = &self.rules {
                    let route = rules.route(&Probe::of(frame, &shape));
                    if rules.is_histogram(route) {
                        let times = if timed { Some(&self.times[..]) } else { None };
                        out.hist.push(hist_probe(frame, &shape, capture_ns, route, times));
                    }
                    out.routes.push(route);
                    if out.rules.is_none() {
                        out.rules = Some(rules.clone());
                    }
                }
            }
            Err(Stop::NotPt) => out.not_pt += 1,
            Err(Stop::Malformed(layer, reason)) => out.count_malformed(layer, reason),
        }
    }

    /// Encode one record; whether its midpoints were timed (`self.times` holds their times in path order).
    fn record<W: Writer>(&mut self, out: &mut Vec<u8>, f: &[u8], shape: &Shape, capture_ns: u64) -> bool {
        let p = shape.probe;
        let vtcfl = be32(f, p);
        let src = addr16(f, p + 8);
        let (word, sec, nsec, session, sequence) = match shape.src_tlv {
            Some(t) => (be16(f, t + 2), be32(f, t + 4), be32(f, t + 8), be16(f, t + 12), be16(f, t + 14)),
            None => (0, 0, 0, 0, 0),
        };
        let src_ns = sec as i64 * NS_PER_S + nsec as i64;
        // the MCD stack, newest first, ends at the first all-zero MCD; path order is the reverse
        let (stack_at, stack_len) = shape.stack;
        let stack = &f[stack_at..stack_at + stack_len];
        let count = stack.chunks_exact(MCD_SIZE).position(|m| m == [0, 0, 0]).unwrap_or(stack_len / MCD_SIZE);
        let sink = shape.sink.map(|(t, outer)| {
            let ns = be32(f, t + 4) as i64 * NS_PER_S + be32(f, t + 8) as i64;
            (be16(f, t + 2), ns, addr16(f, outer + 8))
        });
        let src_known = shape.src_tlv.is_some();
        let mut timed = false;
        if let (Some((_, sink_ns, _)), true, Some(shift)) = (sink, src_known, self.shift_for(src)) {
            self.tts.clear();
            self.tts.extend((0..count).rev().map(|i| stack[i * MCD_SIZE + 2]));
            midpoint_times(&self.tts, shift, src_ns, sink_ns, &mut self.times);
            timed = true;
        }

        let (addresses, secs, times) = (&mut self.addresses, &mut self.secs, &self.times);
        let room = bound(shape.segments.1, count);
        append(out, room, secs, |c| unsafe {
            // SAFETY: `room` is `bound` for this record's segments and hops, as `append` needs.
            W::map(c, 13);
            field!(W, c, first "v");
            W::uint(c, SCHEMA_VERSION as u64);
            field!(W, c, "capture_ns");
            W::time_u(c, capture_ns);
            field!(W, c, "session_id");
            W::uint(c, session as u64);
            field!(W, c, "sequence");
            W::uint(c, sequence as u64);
            field!(W, c, "src");
            node::<W>(c, addresses, src, word, if src_known { src_ns } else { 0 });
            field!(W, c, "sink");
            match sink {
                Some((sink_word, sink_ns, sink_addr)) => node::<W>(c, addresses, sink_addr, sink_word, sink_ns),
                None => W::null(c),
            }
            field!(W, c, "dst");
            address::<W>(c, addresses, addr16(f, p + 24));
            field!(W, c, "segments");
            let (first, n) = shape.segments;
            W::array(c, n);
            for i in (0..n).rev() {
                address::<W>(c, addresses, addr16(f, first + 16 * i));
                if i > 0 {
                    W::sep(c);
                }
            }
            W::end_array(c);
            field!(W, c, "hops");
            W::array(c, count);
            for (k, i) in (0..count).rev().enumerate() {
                let m = &stack[i * MCD_SIZE..i * MCD_SIZE + MCD_SIZE];
                W::map(c, 4);
                field!(W, c, first "if_id");
                W::uint(c, ((m[0] as u64) << 4) | (m[1] as u64 >> 4));
                field!(W, c, "if_load");
                W::uint(c, m[1] as u64 & 0xF);
                field!(W, c, "tts");
                W::uint(c, m[2] as u64);
                field!(W, c, "time_ns");
                match if timed { times[k] } else { None } {
                    Some(t) => W::time(c, t),
                    None => W::null(c),
                }
                W::end_map(c);
                if i > 0 {
                    W::sep(c);
                }
            }
            W::end_array(c);
            field!(W, c, "e2e_ns");
            match sink {
                Some((_, sink_ns, _)) if src_known => W::int(c, sink_ns - src_ns),
                _ => W::null(c),
            }
            field!(W, c, "traffic_class");
            W::uint(c, (vtcfl >> 20 & 0xFF) as u64);
            field!(W, c, "flow_label");
            W::uint(c, (vtcfl & 0xFFFFF) as u64);
            field!(W, c, "hop_limit");
            W::uint(c, f[p + 7] as u64);
            W::end_map(c);
            W::end_record(c);
        });
        timed
    }
}

/// A node (source or sink) as a map.
unsafe fn node<W: Writer>(c: &mut Cursor, addresses: &mut addr::Cache, a: &[u8; 16], word: u16, time_ns: i64) {
    W::map(c, 4);
    field!(W, c, first "addr");
    address::<W>(c, addresses, a);
    field!(W, c, "if_id");
    W::uint(c, (word >> 4) as u64);
    field!(W, c, "if_load");
    W::uint(c, (word & 0xF) as u64);
    field!(W, c, "time_ns");
    W::time(c, time_ns);
    W::end_map(c);
}

#[inline(always)]
unsafe fn address<W: Writer>(c: &mut Cursor, addresses: &mut addr::Cache, a: &[u8; 16]) {
    let (block, len) = addresses.text(a);
    W::str(c, block, len);
}

/// The msgpack header of an array of `n` elements (a Kafka message of n records is this and their bytes).
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first testbed probe of pt-wire-format.md section 5, encapsulated as the sink sends it
    /// (outer IPv6 + SRH with no segments and the sink's PT TLV, then the probe).
    pub(crate) fn encapsulated_testbed_probe() -> Vec<u8> {
        let src_t64: u64 = 7049743939458283446;
        let sink_t64: u64 = 7049743940258383836;
        let mut inner = vec![0x60, 0x12, 0x34, 0x56, 0, 0, 0, 63];
        inner.extend([0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        inner.extend([0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        inner.extend([43, 4, 0x32, 36, 0x03, 0xe0, 0x29, 0x02, 0xb0, 0x2e, 0x01, 0x60, 0x32]);
        inner.extend([0u8; 27]);
        inner.extend([59, 2, 4, 0, 255, 0, 0, 0, 128, 14, 0x01, 0x23]);
        inner.extend(src_t64.to_be_bytes());
        inner.extend([0, 7, 0, 42]);
        let plen = (inner.len() - 40) as u16;
        inner[4..6].copy_from_slice(&plen.to_be_bytes());
        let mut outer = vec![0x60, 0, 0, 0, 0, 0, 43, 64];
        outer.extend([0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x55]);
        outer.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]);
        outer.extend([41, 2, 4, 0, 255, 0, 0, 0, 128, 14, 0x00, 0x51]);
        outer.extend(sink_t64.to_be_bytes());
        outer.extend([0, 0, 0, 0]);
        outer.extend(inner);
        let plen = (outer.len() - 40) as u16;
        outer[4..6].copy_from_slice(&plen.to_be_bytes());
        outer
    }

    fn decode(core: &mut Core, frame: &[u8]) -> Output {
        let mut out = Output::default();
        core.decode(&mut out, frame, 1_000, 101, 0);
        out
    }

    #[test]
    fn the_testbed_probe_as_a_json_line() {
        let mut core = Core::new(Some(18), &[], Format::Json).unwrap();
        let out = decode(&mut core, &encapsulated_testbed_probe());
        let line = String::from_utf8(out.data.clone()).unwrap();
        // src T64 7049743939458283446 = sec 1641396419 nsec 81770422, sink 7049743940258383836 = nsec 881870812
        // (wire format, section 5): 800 ms apart, more than a 2^26 ns TTS period at shift 18, so no hop time
        assert!(
            line.starts_with(
                "{\"v\":1,\"capture_ns\":1000,\"session_id\":7,\"sequence\":42,\
             \"src\":{\"addr\":\"fc00::1\",\"if_id\":18,\"if_load\":3,\"time_ns\":1641396419081770422},\
             \"sink\":{\"addr\":\"fc00::55\",\"if_id\":5,\"if_load\":1,\"time_ns\":1641396419881870812},\
             \"dst\":\"fc00::9\",\"segments\":[],\"hops\":[{\"if_id\":22,\"if_load\":0,\"tts\":50,\"time_ns\":null}"
            ),
            "{line}"
        );
        assert!(line.contains("{\"if_id\":43,\"if_load\":0,\"tts\":46,"), "{line}");
        assert!(line.contains("{\"if_id\":62,\"if_load\":0,\"tts\":41,"), "{line}");
        assert!(
            line.ends_with("\"e2e_ns\":800100390,\"traffic_class\":1,\"flow_label\":144470,\"hop_limit\":63}\n"),
            "{line}"
        );
        assert_eq!(out.source_text(0), "fc00::1");
        assert_eq!(out.records, vec![(0, line.len() as u32, 0)]);
    }

    #[test]
    fn msgpack_keys_and_short_integers() {
        let mut core = Core::new(None, &[], Format::Msgpack).unwrap();
        let out = decode(&mut core, &encapsulated_testbed_probe());
        assert_eq!(&out.data[..6], &[0x8d, 0xa1, b'v', 1, 0xaa, b'c']);
        // no shift: every hop's time is nil
        let hop_times = out.data.windows(9).filter(|w| *w == b"\xa7time_ns\xc0").count();
        assert_eq!(hop_times, 3);
    }

    #[test]
    fn per_source_shifts_pick_the_longest_prefix() {
        let fc00 = 0xfc00u128 << 112;
        let core = Core::new(Some(1), &[(fc00, 16, Some(10)), (fc00, 120, Some(20))], Format::Json).unwrap();
        let mut a = [0u8; 16];
        a[0] = 0xfc;
        a[15] = 1;
        assert_eq!(core.shift_for(&a), Some(20));
        a[14] = 1;
        assert_eq!(core.shift_for(&a), Some(10));
        a[0] = 0x20;
        assert_eq!(core.shift_for(&a), Some(1));
        assert!(Core::new(Some(25), &[], Format::Json).is_err());
    }

    #[test]
    fn counters_by_reason() {
        let mut core = Core::new(None, &[], Format::Json).unwrap();
        let mut frame = encapsulated_testbed_probe();
        let mut out = Output::default();
        core.decode(&mut out, &frame[..50], 0, 101, 0);
        frame.truncate(frame.len() - 1);
        core.decode(&mut out, &frame, 0, 101, 1);
        core.decode(&mut out, &frame, 0, 101, 2);
        assert_eq!((out.frames, out.not_pt, out.decoded()), (3, 1, 0));
        // the cut falls in the inner SRH, walked before the packet's end is checked
        assert_eq!(out.malformed, vec![("srh", "truncated frame", 2)]);
    }

    /// The widest record there is: 85 MCDs of the largest values, 126 segments, 39-character addresses,
    /// 20-character times, every integer at its widest (`append` asserts it stays in `bound`'s room).
    fn widest(src_time: [u8; 8], sink_time: [u8; 8]) -> Vec<u8> {
        let ones = [0xffu8; 16];
        let mut inner = vec![0x6f, 0xff, 0xff, 0xff, 0, 0, 0, 255];
        inner.extend(ones);
        inner.extend(ones);
        inner.extend([43, 32, 0x32, 255]); // HbH: 2 + 2 + 255 bytes, padded to 264
        inner.extend([0xffu8; 255]);
        inner.extend([1, 3, 0, 0, 0]);
        let segments = 126;
        inner.extend([59, 2 + 2 * segments as u8, 4, 0, segments as u8 - 1, 0, 0, 0]);
        for _ in 0..segments {
            inner.extend(ones);
        }
        inner.extend([128, 14, 0xff, 0xff]);
        inner.extend(src_time);
        inner.extend([0xff; 4]);
        let plen = (inner.len() - 40) as u16;
        inner[4..6].copy_from_slice(&plen.to_be_bytes());
        let mut outer = vec![0x60, 0, 0, 0, 0, 0, 43, 64];
        outer.extend(ones);
        outer.extend(ones);
        outer.extend([41, 2, 4, 0, 255, 0, 0, 0, 128, 14, 0xff, 0xff]);
        outer.extend(sink_time);
        outer.extend([0, 0, 0, 0]);
        outer.extend(inner);
        let plen = (outer.len() - 40) as u16;
        outer[4..6].copy_from_slice(&plen.to_be_bytes());
        outer
    }

    #[test]
    fn the_widest_records_fit_their_room() {
        let (zero, max, late) = ([0u8; 8], [0xffu8; 8], [0x7f, 0xff, 0xff, 0xff, 0x3b, 0x9a, 0xc9, 0xff]);
        for format in [Format::Json, Format::Msgpack] {
            for shift in [None, Some(0), Some(24)] {
                let mut core = Core::new(shift, &[], format).unwrap();
                let mut out = Output::default();
                for (src, sink) in [(zero, max), (max, zero), (zero, late), (late, late)] {
                    core.decode(&mut out, &widest(src, sink), u64::MAX, 101, 0);
                }
                assert_eq!(out.decoded(), 4, "{:?}", out.malformed);
                if format == Format::Json {
                    let text = String::from_utf8(out.data).unwrap();
                    assert!(text.contains("\"e2e_ns\":-4294967299294967295,"), "{text}");
                    assert!(text.contains("\"capture_ns\":18446744073709551615,"), "{text}");
                    assert!(text.contains("{\"if_id\":4095,\"if_load\":15,\"tts\":255,"), "{text}");
                    assert_eq!(text.matches("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").count(), 4 * 129);
                }
            }
        }
    }
}
