//! Flow rules matched in the core: pipeline/rules.py's match keys compiled once, each decoded record
//! given its rule (the first that holds, 0 the default) and, for a `sample` rule, whether it is kept.
//!
//! The twin of `Match.__call__` and `Sample.keeps` (rules.py): the same keys, checked on the frame's own
//! bytes (addresses as 128-bit integers against the prefixes) rather than on a record's text. What a batch's
//! routes give the Python side (functions.py's RuleEngine): per rule its probes and kept records, per record
//! output ("slot": a topic's records) the encoded records in input order or per source node, and the records of
//! the rules whose functions still run in Python (histogram, raw) by position.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::path_histogram::{HistProbe, PathHistograms};
use crate::walk::{Shape, MCD_SIZE};

/// A route's flag: a `sample` rule's record that is not kept (its sequence is not a multiple of `one_in`).
pub const SAMPLED_OUT: u32 = 1 << 31;
/// No records output: the rule's function is not pass or sample.
pub const NO_SLOT: u32 = u32::MAX;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pass,
    /// Keep the probes whose sequence number is a multiple of this (1..=65536).
    Sample(u32),
    Histogram,
    Drop,
    Raw,
}

/// An IPv6 prefix: network (host bits zero) and length.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub network: u128,
    pub len: u8,
}

impl Net {
    fn holds(&self, a: u128) -> bool {
        self.len == 0 || (a ^ self.network) >> (128 - self.len as u32) == 0
    }
}

fn any_holds(nets: &[Net], a: &[u8; 16]) -> bool {
    let a = u128::from_be_bytes(*a);
    nets.iter().any(|n| n.holds(a))
}

/// One rule's match keys (None: any) and what it does; `slot` is its records' output (pass, sample) or NO_SLOT.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub src: Option<Vec<Net>>,
    pub sink: Option<Vec<Net>>,
    pub dst: Option<Vec<Net>>,
    pub segment: Option<Vec<Net>>,
    pub session: Option<(u16, u16)>,
    pub src_if: Option<Vec<u16>>,
    pub kind: Option<Kind>,
    pub slot: u32,
}

/// What a probe is matched on, read from its frame.
pub struct Probe<'a> {
    pub src: &'a [u8; 16],
    pub sink: Option<&'a [u8; 16]>,
    pub dst: &'a [u8; 16],
    /// The SRH's segments, 16 bytes each (order does not matter: any one matching is enough).
    pub segments: &'a [u8],
    pub session: u16,
    pub src_if: u16,
    pub sequence: u16,
}

fn addr16(f: &[u8], at: usize) -> &[u8; 16] {
    f[at..at + 16].try_into().expect("16 bytes")
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

impl<'a> Probe<'a> {
    /// The match fields of a walked frame, as the record holds them (0 for a probe without its source TLV).
    pub fn of(f: &'a [u8], shape: &Shape) -> Self {
        let p = shape.probe;
        let (word, session, sequence) = match shape.src_tlv {
            Some(t) => (be16(f, t + 2), be16(f, t + 12), be16(f, t + 14)),
            None => (0, 0, 0),
        };
        let (first, n) = shape.segments;
        Probe {
            src: addr16(f, p + 8),
            sink: shape.sink.map(|(_, outer)| addr16(f, outer + 8)),
            dst: addr16(f, p + 24),
            segments: &f[first..first + 16 * n],
            session,
            src_if: word >> 4,
            sequence,
        }
    }
}

impl Rule {
    /// Whether every key given holds (rules.py's Match.__call__, in its order).
    pub fn matches(&self, p: &Probe) -> bool {
        if let Some((first, last)) = self.session {
            if !(first..=last).contains(&p.session) {
                return false;
            }
        }
        if let Some(ids) = &self.src_if {
            if !ids.contains(&p.src_if) {
                return false;
            }
        }
        if let Some(nets) = &self.src {
            if !any_holds(nets, p.src) {
                return false;
            }
        }
        if let Some(nets) = &self.sink {
            match p.sink {
                Some(sink) if any_holds(nets, sink) => {}
                _ => return false,
            }
        }
        if let Some(nets) = &self.dst {
            if !any_holds(nets, p.dst) {
                return false;
            }
        }
        match &self.segment {
            None => true,
            Some(nets) => {
                any_holds(nets, p.dst)
                    || p.segments.chunks_exact(16).any(|s| any_holds(nets, s.try_into().expect("16 bytes")))
            }
        }
    }
}

/// The rules in order (rule i is `rules[i - 1]`), the default's records slot (the main topic's), and the
/// histogram rules' windows (rule index, its paths), which routed batches are counted into (`aggregate`).
#[derive(Debug)]
pub struct Rules {
    pub id: u64,
    pub rules: Vec<Rule>,
    pub default_slot: u32,
    pub histograms: Mutex<Vec<(u32, PathHistograms)>>,
}

impl Rules {
    pub fn new(rules: Vec<Rule>, default_slot: u32, histograms: Vec<(u32, PathHistograms)>) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Rules { id, rules, default_slot, histograms: Mutex::new(histograms) }
    }

    /// Whether a route is a histogram rule's.
    pub fn is_histogram(&self, route: u32) -> bool {
        self.kind((route & !SAMPLED_OUT) as usize) == Kind::Histogram
    }

    /// The probe's route: its rule's index (1 for the first, 0 the default), with SAMPLED_OUT when a sample
    /// rule does not keep it.
    pub fn route(&self, p: &Probe) -> u32 {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(p) {
                return match rule.kind {
                    Some(Kind::Sample(one_in)) if u32::from(p.sequence) % one_in != 0 => (i as u32 + 1) | SAMPLED_OUT,
                    _ => i as u32 + 1,
                };
            }
        }
        0
    }

    /// The records output of rule `index` (NO_SLOT: none).
    pub fn slot(&self, index: usize) -> u32 {
        if index == 0 {
            self.default_slot
        } else {
            self.rules[index - 1].slot
        }
    }

    pub fn kind(&self, index: usize) -> Kind {
        if index == 0 {
            Kind::Pass
        } else {
            self.rules[index - 1].kind.unwrap_or(Kind::Drop)
        }
    }
}

/// What a histogram rule needs of a walked frame's probe (`times`: the midpoints' times in path order, when
/// the core timed them).
pub fn hist_probe(f: &[u8], shape: &Shape, capture_ns: u64, rule: u32, times: Option<&[Option<i64>]>) -> HistProbe {
    let p = Probe::of(f, shape);
    let be32 = |at: usize| i64::from(u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]));
    let src_ns = shape.src_tlv.map_or(0, |t| be32(t + 4) * 1_000_000_000 + be32(t + 8));
    let sink_ns = shape.sink.map_or(0, |(t, _)| be32(t + 4) * 1_000_000_000 + be32(t + 8));
    let (stack_at, stack_len) = shape.stack;
    let stack = &f[stack_at..stack_at + stack_len];
    let count = stack.chunks_exact(MCD_SIZE).position(|m| m == [0, 0, 0]).unwrap_or(stack_len / MCD_SIZE);
    let hops = (0..count)
        .rev()
        .enumerate()
        .map(|(k, i)| {
            let m = &stack[i * MCD_SIZE..i * MCD_SIZE + MCD_SIZE];
            ((u16::from(m[0]) << 4) | u16::from(m[1] >> 4), times.and_then(|t| t[k]))
        })
        .collect();
    HistProbe {
        rule,
        src: *p.src,
        sink: p.sink.copied(),
        src_ns,
        sink_ns,
        capture_ns,
        session: p.session,
        sequence: p.sequence,
        e2e: (shape.sink.is_some() && shape.src_tlv.is_some()).then_some(sink_ns - src_ns),
        hops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8, first: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = first;
        a[15] = last;
        a
    }

    fn net(first: u8, len: u8) -> Net {
        Net { network: u128::from(first) << 120, len }
    }

    fn probe<'a>(src: &'a [u8; 16], sink: Option<&'a [u8; 16]>, dst: &'a [u8; 16], segments: &'a [u8]) -> Probe<'a> {
        Probe { src, sink, dst, segments, session: 7, src_if: 18, sequence: 42 }
    }

    #[test]
    fn every_key_must_hold_and_the_first_rule_wins() {
        let (src, sink, dst) = (addr(1, 0xfc), addr(0x55, 0x20), addr(9, 0xfd));
        let mut segs = addr(3, 0xfe).to_vec();
        segs.extend(addr(4, 0xfa));
        let p = probe(&src, Some(&sink), &dst, &segs);
        let rule = |f: &dyn Fn(&mut Rule)| {
            let mut r = Rule { kind: Some(Kind::Pass), slot: 0, ..Default::default() };
            f(&mut r);
            r
        };
        assert!(rule(&|_| {}).matches(&p));
        assert!(rule(&|r| r.src = Some(vec![net(0xfc, 8)])).matches(&p));
        assert!(!rule(&|r| r.src = Some(vec![net(0xfd, 8)])).matches(&p));
        assert!(rule(&|r| r.sink = Some(vec![net(0x20, 8)])).matches(&p));
        assert!(!rule(&|r| r.sink = Some(vec![net(0x20, 8)])).matches(&probe(&src, None, &dst, &segs)));
        assert!(rule(&|r| r.dst = Some(vec![net(0xfd, 8), net(0x01, 8)])).matches(&p));
        assert!(rule(&|r| r.segment = Some(vec![net(0xfa, 8)])).matches(&p));
        assert!(rule(&|r| r.segment = Some(vec![net(0xfd, 8)])).matches(&p)); // the destination counts too
        assert!(!rule(&|r| r.segment = Some(vec![net(0xfb, 8)])).matches(&p));
        assert!(rule(&|r| r.session = Some((7, 7))).matches(&p));
        assert!(!rule(&|r| r.session = Some((8, 9))).matches(&p));
        assert!(rule(&|r| r.src_if = Some(vec![3, 18])).matches(&p));
        assert!(!rule(&|r| r.src_if = Some(vec![3])).matches(&p));
        assert!(rule(&|r| r.src = Some(vec![Net { network: 0, len: 0 }])).matches(&p));

        let miss = rule(&|r| r.session = Some((1, 1)));
        let sample = rule(&|r| r.kind = Some(Kind::Sample(10)));
        let rules = Rules::new(vec![miss.clone(), sample], 0, vec![]);
        assert_eq!(rules.route(&p), 2 | SAMPLED_OUT); // 42 % 10 != 0
        let mut kept = probe(&src, Some(&sink), &dst, &segs);
        kept.sequence = 40;
        assert_eq!(rules.route(&kept), 2);
        assert_eq!(Rules::new(vec![miss], 0, vec![]).route(&p), 0);
        let every = Rules::new(vec![rule(&|r| r.kind = Some(Kind::Sample(65536)))], 0, vec![]);
        kept.sequence = 0;
        assert_eq!(every.route(&kept), 1);
    }
}

#[cfg(feature = "python")]
pub mod python {
    //! `Rules`: the flow rules compiled for `Decoder.set_rules` (pt_collector/_native.pyi).
    use std::sync::Arc;

    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;

    use super::{Kind, Net, Rule, Rules as Compiled, NO_SLOT};
    use crate::path_histogram::{Closed, Delays, HistProbe, PathHistograms};

    /// A histogram rule: (rule index, interval_ns, grace_ns, bounds_ns, hop_bounds_ns).
    type HistSpec = (u32, i64, i64, Vec<i64>, Vec<i64>);
    /// A delay histogram: (count, min_ns, max_ns, sum_ns, buckets).
    type DelayTuple = (u64, Option<i64>, Option<i64>, i128, Vec<u64>);
    /// A closed window: (rule, start_ns, src, sink, hop_if_ids, count, loss, e2e, hop delays).
    pub type ClosedTuple = (u32, i128, String, Option<String>, Vec<u16>, u64, u64, DelayTuple, Vec<DelayTuple>);
    /// A probe as the histogram function takes it from a Record (the Python path's):
    /// (src, sink, src_ns, sink_ns, capture_ns, session, sequence, e2e, [(if_id, time_ns)]).
    type ProbeValues = (String, Option<String>, i64, i64, u64, u16, u16, Option<i64>, Vec<(u16, Option<i64>)>);

    fn text(a: &[u8; 16]) -> String {
        let mut t = Vec::with_capacity(39);
        crate::addr::write(&mut t, a);
        String::from_utf8(t).expect("ASCII")
    }

    fn address(text: &str) -> PyResult<[u8; 16]> {
        let a = text.parse::<std::net::Ipv6Addr>();
        a.map(|a| a.octets()).map_err(|_| PyValueError::new_err(format!("{text:?} is not an IPv6 address")))
    }

    fn delays(d: Delays) -> DelayTuple {
        (d.count(), d.min, d.max, d.sum, d.buckets)
    }

    /// Closed windows as tuples (the Python side makes PathHistogram records of them).
    pub fn closed(found: Vec<(u32, Closed)>) -> Vec<ClosedTuple> {
        found
            .into_iter()
            .map(|(rule, c)| {
                let hops = c.hops.into_iter().map(delays).collect();
                let (src, sink) = (text(&c.src), c.sink.as_ref().map(text));
                (rule, c.start, src, sink, c.hop_if_ids, c.count, c.loss, delays(c.e2e), hops)
            })
            .collect()
    }

    type Nets = Option<Vec<(u128, u8)>>;
    /// (src, sink, dst, segment, session (first, last), src_if_ids, function, one_in, records slot)
    type Spec = (Nets, Nets, Nets, Nets, Option<(u16, u16)>, Option<Vec<u16>>, String, u32, Option<u32>);

    /// Flow rules in order, compiled: what `Decoder.set_rules` matches each record against.
    #[pyclass(module = "pt_collector._native", frozen)]
    pub struct Rules {
        pub inner: Arc<Compiled>,
    }

    fn nets(given: Nets) -> PyResult<Option<Vec<Net>>> {
        given
            .map(|list| {
                list.into_iter()
                    .map(|(network, len)| {
                        let host = if len == 0 { u128::MAX } else { u128::MAX.checked_shr(len as u32).unwrap_or(0) };
                        if len > 128 || network & host != 0 {
                            return Err(PyValueError::new_err(format!("not a prefix: {network:#x}/{len}")));
                        }
                        Ok(Net { network, len })
                    })
                    .collect()
            })
            .transpose()
    }

    fn kind(name: &str, one_in: u32) -> PyResult<Kind> {
        Ok(match name {
            "pass" => Kind::Pass,
            "sample" if (1..=65536).contains(&one_in) => Kind::Sample(one_in),
            "histogram" => Kind::Histogram,
            "drop" => Kind::Drop,
            "raw" => Kind::Raw,
            _ => return Err(PyValueError::new_err(format!("not a rule function: {name} (one_in {one_in})"))),
        })
    }

    #[pymethods]
    impl Rules {
        #[new]
        #[pyo3(signature = (rules, default_slot, histograms = Vec::new()))]
        fn new(rules: Vec<Spec>, default_slot: u32, histograms: Vec<HistSpec>) -> PyResult<Self> {
            let mut compiled = Vec::with_capacity(rules.len());
            for (src, sink, dst, segment, session, src_if, function, one_in, slot) in rules {
                compiled.push(Rule {
                    src: nets(src)?,
                    sink: nets(sink)?,
                    dst: nets(dst)?,
                    segment: nets(segment)?,
                    session,
                    src_if,
                    kind: Some(kind(&function, one_in)?),
                    slot: slot.unwrap_or(NO_SLOT),
                });
            }
            let mut windows = Vec::with_capacity(histograms.len());
            for (index, interval_ns, grace_ns, bounds, hop_bounds) in histograms {
                let valid = (index as usize) <= compiled.len() && interval_ns > 0 && grace_ns >= 0;
                if !valid
                    || !matches!(compiled.get((index as usize).wrapping_sub(1)), Some(r) if r.kind == Some(Kind::Histogram))
                {
                    return Err(PyValueError::new_err(format!("rule {index} is not a histogram rule")));
                }
                windows.push((index, PathHistograms::new(interval_ns, grace_ns, bounds, hop_bounds)));
            }
            Ok(Rules { inner: Arc::new(Compiled::new(compiled, default_slot, windows)) })
        }

        /// The histogram rule `index`'s windows the clock `now_ns` has closed.
        fn hist_tick(&self, index: u32, now_ns: i128) -> Vec<ClosedTuple> {
            self.with(index, |h| h.tick(now_ns))
        }

        /// Every open window of the histogram rule `index`, now.
        fn hist_flush(&self, index: u32) -> Vec<ClosedTuple> {
            self.with(index, |h| h.flush())
        }

        /// One probe (from a Record) into the histogram rule `index`: the window it closed, if any.
        fn hist_add(&self, index: u32, values: ProbeValues) -> PyResult<Vec<ClosedTuple>> {
            let (src, sink, src_ns, sink_ns, capture_ns, session, sequence, e2e, hops) = values;
            let sink = sink.as_deref().map(address).transpose()?;
            let probe = HistProbe {
                rule: index,
                src: address(&src)?,
                sink,
                src_ns,
                sink_ns,
                capture_ns,
                session,
                sequence,
                e2e,
                hops,
            };
            Ok(self.with(index, |h| h.add(&probe).into_iter().collect()))
        }

        /// The histogram rule `index`'s late probes (for windows already emitted).
        fn hist_late(&self, index: u32) -> u64 {
            let histograms = self.inner.histograms.lock().expect("not poisoned");
            histograms.iter().find(|(i, _)| *i == index).map_or(0, |(_, h)| h.late)
        }

        /// This compilation's id: a Batch routed by it says so (`Batch.rules_id`).
        #[getter]
        fn id(&self) -> u64 {
            self.inner.id
        }

        fn __len__(&self) -> usize {
            self.inner.rules.len()
        }
    }

    impl Rules {
        fn with(&self, index: u32, f: impl FnOnce(&mut PathHistograms) -> Vec<Closed>) -> Vec<ClosedTuple> {
            let mut histograms = self.inner.histograms.lock().expect("not poisoned");
            let found = histograms.iter_mut().find(|(i, _)| *i == index).map_or_else(Vec::new, |(_, h)| f(h));
            closed(found.into_iter().map(|c| (index, c)).collect())
        }
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<Rules>()
    }
}
