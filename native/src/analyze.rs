//! `ptc analyze`'s per-probe work (twin of pt_collector/analyze/windows.py and sketch.py): one Kafka message of
//! probe records (JSON lines or msgpack, kafka/message.py) in, one partial aggregate per window out, serialised
//! compactly for Quix Streams' state; aggregates merge in any order, and a closed window reads out as counts,
//! exact delay extremes and sums, DDSketch quantiles and the sequence spans per session for the loss.
//!
//! A window is [k * width, (k + 1) * width) ms of the probe's time (its source's T64, else its capture time).
//! A path within its source is `sink|if_id,if_id,...` (windows.path_id). Per path: the probe count, and the
//! delays end to end and per hop (between neighbours whose times are both known, the last hop to the sink),
//! each as count, min, max, sum (exact) and a DDSketch (1 % relative error). Per session: the 16-bit sequence
//! numbers unwrapped around the first one seen (`reference`), their lowest and highest offset, the count, and
//! the probes per path.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

const SEQUENCE_MOD: i64 = 1 << 16;
const NS_PER_MS: i64 = 1_000_000;

// ------------------------------------------------------------------ the records (record.py's Record)

#[derive(Deserialize)]
#[allow(dead_code)] // read to validate the record as msgspec's Record decoder does
struct Node<'a> {
    #[serde(borrow)]
    addr: Cow<'a, str>,
    if_id: i64,
    if_load: i64,
    time_ns: i64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Hop {
    if_id: i64,
    if_load: i64,
    tts: i64,
    time_ns: Option<i64>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Record<'a> {
    v: i64,
    capture_ns: i64,
    session_id: i64,
    sequence: i64,
    #[serde(borrow)]
    src: Node<'a>,
    #[serde(borrow)]
    sink: Option<Node<'a>>,
    #[serde(borrow)]
    dst: Cow<'a, str>,
    #[serde(borrow)]
    segments: Vec<Cow<'a, str>>,
    hops: Vec<Hop>,
    e2e_ns: Option<i64>,
    traffic_class: i64,
    flow_label: i64,
    hop_limit: i64,
}

fn records<'a>(value: &'a [u8], format: &str) -> Result<Vec<Record<'a>>, String> {
    match format {
        "json" => {
            // One UTF-8 check of the whole value: serde_json's reader of &str then checks no string again.
            let text = std::str::from_utf8(value).map_err(|e| format!("bad json value: {e}"))?;
            text.split('\n')
                .filter(|line| !line.trim_ascii().is_empty())
                .map(|line| serde_json::from_str(line).map_err(|e| format!("bad json value: {e}")))
                .collect()
        }
        "msgpack" => rmp_serde::from_slice(value).map_err(|e| format!("bad msgpack value: {e}")),
        other => Err(format!("unknown ptc-format {other:?}")),
    }
}

// ------------------------------------------------------------------ the aggregate

fn new_sketch() -> DDSketch {
    DDSketch::new(Config::defaults()) // relative accuracy 0.01, as sketch.RELATIVE_ACCURACY
}

/// Delays: exact count, extremes and sum, and their DDSketch.
#[derive(Clone)]
pub struct Delays {
    n: u64,
    min: i128,
    max: i128,
    sum: i128,
    sketch: DDSketch,
}

impl std::fmt::Debug for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Delays{:?}", self.exact())
    }
}

impl Delays {
    fn new() -> Self {
        Delays { n: 0, min: 0, max: 0, sum: 0, sketch: new_sketch() }
    }

    fn add(&mut self, delay: i128) {
        if self.n == 0 || delay < self.min {
            self.min = delay;
        }
        if self.n == 0 || delay > self.max {
            self.max = delay;
        }
        self.n += 1;
        self.sum += delay;
        self.sketch.add(delay as f64);
    }

    fn merge(&mut self, other: &Delays) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sketch.merge(&other.sketch).expect("one configuration for every sketch");
    }

    /// The delays at `levels`, rounded to the ns and kept within [min, max]; empty without any delay.
    pub fn quantiles(&self, levels: &[f64]) -> Vec<i128> {
        if self.n == 0 {
            return Vec::new();
        }
        levels
            .iter()
            .map(|q| {
                let value = self.sketch.quantile(*q).ok().flatten().unwrap_or(0.0).round() as i128;
                value.clamp(self.min, self.max)
            })
            .collect()
    }

    /// (count, min, max, sum): min and max None without any delay.
    pub fn exact(&self) -> (u64, Option<i128>, Option<i128>, i128) {
        let (min, max) = if self.n == 0 { (None, None) } else { (Some(self.min), Some(self.max)) };
        (self.n, min, max, self.sum)
    }
}

#[derive(Clone, Debug)]
pub struct PathAggregate {
    pub n: u64,
    pub e2e: Delays,
    pub hops: Vec<Delays>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub reference: i64,
    pub lo: i64,
    pub hi: i64,
    pub n: u64,
    pub paths: BTreeMap<String, u64>,
}

/// One source's window: its paths by path id and its sessions by session id.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    pub paths: BTreeMap<String, PathAggregate>,
    pub sessions: BTreeMap<i64, Session>,
}

/// A sequence-number difference mod 2**16 as the nearest signed step.
fn signed(step: i64) -> i64 {
    let step = step.rem_euclid(SEQUENCE_MOD);
    if step >= SEQUENCE_MOD / 2 {
        step - SEQUENCE_MOD
    } else {
        step
    }
}

/// The path id (windows.path_id) written into `id`, reused from record to record.
fn path_id(record: &Record, id: &mut String) {
    id.clear();
    if let Some(sink) = &record.sink {
        id.push_str(&sink.addr);
    }
    id.push('|');
    for (i, hop) in record.hops.iter().enumerate() {
        if i > 0 {
            id.push(',');
        }
        id.push_str(itoa::Buffer::new().format(hop.if_id));
    }
}

impl Aggregate {
    fn add(&mut self, record: &Record, pid: &str) {
        if !self.paths.contains_key(pid) {
            let hops = (0..=record.hops.len()).map(|_| Delays::new()).collect();
            self.paths.insert(pid.to_owned(), PathAggregate { n: 0, e2e: Delays::new(), hops });
        }
        let path = self.paths.get_mut(pid).expect("inserted above");
        path.n += 1;
        if let Some(e2e) = record.e2e_ns {
            path.e2e.add(e2e.into());
            hop_delays(record, &mut path.hops);
        }
        match self.sessions.get_mut(&record.session_id) {
            None => {
                let paths = BTreeMap::from([(pid.to_owned(), 1)]);
                let session = Session { reference: record.sequence, lo: 0, hi: 0, n: 1, paths };
                self.sessions.insert(record.session_id, session);
            }
            Some(session) => {
                let offset = signed(record.sequence - session.reference);
                session.lo = session.lo.min(offset);
                session.hi = session.hi.max(offset);
                session.n += 1;
                match session.paths.get_mut(pid) {
                    Some(n) => *n += 1,
                    None => {
                        session.paths.insert(pid.to_owned(), 1);
                    }
                }
            }
        }
    }

    /// Both aggregates of one source and window in one (any order gives the same).
    pub fn merge(&mut self, other: &Aggregate) {
        for (pid, p) in &other.paths {
            match self.paths.get_mut(pid) {
                None => {
                    self.paths.insert(pid.clone(), p.clone());
                }
                Some(q) => {
                    q.n += p.n;
                    q.e2e.merge(&p.e2e);
                    for (x, y) in q.hops.iter_mut().zip(&p.hops) {
                        x.merge(y);
                    }
                }
            }
        }
        for (sid, s) in &other.sessions {
            match self.sessions.get_mut(sid) {
                None => {
                    self.sessions.insert(*sid, s.clone());
                }
                Some(t) => {
                    let delta = signed(s.reference - t.reference);
                    t.lo = t.lo.min(s.lo + delta);
                    t.hi = t.hi.max(s.hi + delta);
                    t.n += s.n;
                    for (pid, n) in &s.paths {
                        *t.paths.entry(pid.clone()).or_insert(0) += n;
                    }
                }
            }
        }
    }

    pub fn probes(&self) -> u64 {
        self.paths.values().map(|p| p.n).sum()
    }
}

/// Each hop's delay between neighbours whose times are both known (as path_histogram does).
fn hop_delays(record: &Record, hops: &mut [Delays]) {
    let mut previous = Some(record.src.time_ns);
    for (delays, hop) in hops.iter_mut().zip(&record.hops) {
        if let (Some(time), Some(before)) = (hop.time_ns, previous) {
            delays.add(i128::from(time) - i128::from(before));
        }
        previous = hop.time_ns;
    }
    if let (Some(before), Some(sink), Some(last)) = (previous, &record.sink, hops.last_mut()) {
        last.add(i128::from(sink.time_ns) - i128::from(before));
    }
}

/// One message's records (all of source `key`) per window: (window start ms, latest probe time ms, aggregate),
/// in window order. An error names what is wrong with the message (it is then skipped whole).
pub fn split(value: &[u8], format: &str, key: &str, width_ms: i64) -> Result<Vec<(i64, i64, Aggregate)>, String> {
    if width_ms <= 0 {
        return Err(format!("window width {width_ms} ms"));
    }
    let records = records(value, format)?;
    let mut windows: BTreeMap<i64, (i64, Aggregate)> = BTreeMap::new();
    let mut pid = String::with_capacity(64);
    for record in &records {
        if record.src.addr != key {
            return Err(format!("records of a source other than the key {key:?}"));
        }
        let time = if record.src.time_ns != 0 { record.src.time_ns } else { record.capture_ns };
        let ms = time.div_euclid(NS_PER_MS);
        let start = ms - ms.rem_euclid(width_ms);
        let (latest, aggregate) = windows.entry(start).or_insert_with(|| (ms, Aggregate::default()));
        *latest = (*latest).max(ms);
        path_id(record, &mut pid);
        aggregate.add(record, &pid);
    }
    Ok(windows.into_iter().map(|(start, (latest, a))| (start, latest, a)).collect())
}

// ------------------------------------------------------------------ the state's bytes

/// Delays as stored: i128 as two halves (msgpack has no 128-bit integers), the sketch in Datadog's standard
/// binary encoding (sketches-java's DDSketchWithExactSummaryStatistics).
#[derive(Serialize, Deserialize)]
struct StoredDelays(u64, [i64; 2], [i64; 2], [i64; 2], #[serde(with = "serde_bytes")] Vec<u8>);

#[derive(Serialize, Deserialize)]
struct StoredPath(u64, StoredDelays, Vec<StoredDelays>);

#[derive(Serialize, Deserialize)]
struct Stored(BTreeMap<String, StoredPath>, BTreeMap<i64, Session>);

fn halves(v: i128) -> [i64; 2] {
    [(v >> 64) as i64, v as u64 as i64]
}

fn whole(h: [i64; 2]) -> i128 {
    ((h[0] as i128) << 64) | (h[1] as u64 as i128)
}

fn store(d: &Delays) -> StoredDelays {
    let sketch = if d.n == 0 { Vec::new() } else { d.sketch.to_java_bytes() };
    StoredDelays(d.n, halves(d.min), halves(d.max), halves(d.sum), sketch)
}

fn load(s: StoredDelays) -> Result<Delays, String> {
    let sketch = if s.0 == 0 {
        new_sketch()
    } else {
        DDSketch::from_java_bytes(&s.4).map_err(|e| format!("bad sketch in the state: {e}"))?
    };
    Ok(Delays { n: s.0, min: whole(s.1), max: whole(s.2), sum: whole(s.3), sketch })
}

impl Aggregate {
    /// The aggregate as bytes for the state store (msgpack).
    pub fn to_bytes(&self) -> Vec<u8> {
        let paths = self
            .paths
            .iter()
            .map(|(k, p)| (k.clone(), StoredPath(p.n, store(&p.e2e), p.hops.iter().map(store).collect())));
        rmp_serde::to_vec(&Stored(paths.collect(), self.sessions.clone())).expect("msgpack of plain values")
    }

    pub fn from_bytes(data: &[u8]) -> Result<Aggregate, String> {
        let stored: Stored = rmp_serde::from_slice(data).map_err(|e| format!("bad aggregate in the state: {e}"))?;
        let mut paths = BTreeMap::new();
        for (pid, StoredPath(n, e2e, hops)) in stored.0 {
            let hops = hops.into_iter().map(load).collect::<Result<Vec<_>, _>>()?;
            paths.insert(pid, PathAggregate { n, e2e: load(e2e)?, hops });
        }
        Ok(Aggregate { paths, sessions: stored.1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, src_ms: i64, e2e: i64, hops: &[(i64, Option<i64>)]) -> String {
        let t = src_ms * 1_000_000;
        let hops: Vec<String> = hops
            .iter()
            .map(|(id, at)| {
                let at = at.map_or("null".to_string(), |d| (t + d).to_string());
                format!(r#"{{"if_id":{id},"if_load":0,"tts":1,"time_ns":{at}}}"#)
            })
            .collect();
        format!(
            r#"{{"v":1,"capture_ns":{c},"session_id":7,"sequence":{seq},"src":{{"addr":"2001:db8::1","if_id":1,"if_load":0,"time_ns":{t}}},"sink":{{"addr":"2001:db8::2","if_id":2,"if_load":0,"time_ns":{s}}},"dst":"2001:db8::2","segments":[],"hops":[{h}],"e2e_ns":{e2e},"traffic_class":0,"flow_label":0,"hop_limit":64}}"#,
            c = t + e2e,
            s = t + e2e,
            h = hops.join(",")
        )
    }

    #[test]
    fn windows_paths_hops_and_sequences_across_the_wrap() {
        let lines = [
            line(65535, 5, 1000, &[(3, Some(400))]),
            line(1, 7, 2000, &[(3, Some(500))]),
            line(2, 12, 3000, &[(3, None)]),
        ];
        let value = lines.join("\n") + "\n";
        let out = split(value.as_bytes(), "json", "2001:db8::1", 10).unwrap();
        assert_eq!(out.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(), [(0, 7), (10, 12)]);
        let first = &out[0].2;
        let path = &first.paths["2001:db8::2|3"];
        assert_eq!((path.n, path.e2e.exact()), (2, (2, Some(1000), Some(2000), 3000)));
        assert_eq!(path.hops[0].exact(), (2, Some(400), Some(500), 900));
        assert_eq!(path.hops[1].exact(), (2, Some(600), Some(1500), 2100));
        let s = &first.sessions[&7];
        assert_eq!((s.reference, s.lo, s.hi, s.n), (65535, 0, 2, 2)); // 65535 then 1: one lost across the wrap
        assert_eq!(out[1].2.paths["2001:db8::2|3"].hops[0].n, 0); // an unknown hop time: no hop delay
        let again = Aggregate::from_bytes(&first.to_bytes()).unwrap();
        let mut merged = again.clone();
        merged.merge(&out[1].2);
        assert_eq!(merged.probes(), 3);
        assert_eq!(merged.sessions[&7].hi, 3);
        assert_eq!(merged.paths["2001:db8::2|3"].e2e.quantiles(&[0.5]).len(), 1);
    }

    #[test]
    fn sums_beyond_64_bits_survive_the_state() {
        let mut d = Delays::new();
        for _ in 0..20 {
            d.add(-(1i128 << 62));
        }
        let back = load(store(&d)).unwrap();
        assert_eq!(back.exact(), (20, Some(-(1 << 62)), Some(-(1 << 62)), -20 * (1i128 << 62)));
    }

    #[test]
    fn a_record_of_another_source_or_a_bad_value_is_an_error() {
        let value = line(1, 5, 1000, &[]);
        assert!(split(value.as_bytes(), "json", "2001:db8::9", 10).unwrap_err().contains("other than the key"));
        assert!(split(b"{\"v\": 1}", "json", "x", 10).unwrap_err().starts_with("bad json value"));
        assert!(split(b"\x91\x01", "msgpack", "x", 10).unwrap_err().starts_with("bad msgpack value"));
    }
}

#[cfg(feature = "python")]
pub mod python {
    //! `analyze_split`, `analyze_merge`, `analyze_read` (pt_collector/_native.pyi).
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyList, PyTuple};

    use super::{split, Aggregate, Delays};

    /// The records of one message per window: [(latest probe time ms, aggregate bytes, probes)] in window order.
    #[pyfunction]
    fn analyze_split<'py>(
        py: Python<'py>,
        value: &[u8],
        fmt: &str,
        key: &str,
        width_ms: i64,
    ) -> PyResult<Vec<(i64, Bound<'py, PyBytes>, u64)>> {
        let windows = py.detach(|| split(value, fmt, key, width_ms)).map_err(PyValueError::new_err)?;
        Ok(windows.into_iter().map(|(_, latest, a)| (latest, PyBytes::new(py, &a.to_bytes()), a.probes())).collect())
    }

    /// Two aggregates of one source and window in one.
    #[pyfunction]
    fn analyze_merge<'py>(py: Python<'py>, a: &[u8], b: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut a = Aggregate::from_bytes(a).map_err(PyValueError::new_err)?;
        a.merge(&Aggregate::from_bytes(b).map_err(PyValueError::new_err)?);
        Ok(PyBytes::new(py, &a.to_bytes()))
    }

    fn delays<'py>(py: Python<'py>, d: &Delays, levels: &[f64]) -> PyResult<Bound<'py, PyTuple>> {
        let (n, min, max, sum) = d.exact();
        let quantiles = PyTuple::new(py, d.quantiles(levels))?;
        (n, min, max, sum, quantiles).into_pyobject(py)
    }

    /// A closed window: ([(path id, probes, e2e, [hop...])], [(session id, reference, lo, hi, n, {path id: n})]),
    /// each delay as (count, min, max, sum, quantiles at `levels`).
    #[pyfunction]
    fn analyze_read<'py>(py: Python<'py>, data: &[u8], levels: Vec<f64>) -> PyResult<Bound<'py, PyTuple>> {
        let a = Aggregate::from_bytes(data).map_err(PyValueError::new_err)?;
        let paths = PyList::empty(py);
        for (pid, p) in &a.paths {
            let hops = p.hops.iter().map(|h| delays(py, h, &levels)).collect::<PyResult<Vec<_>>>()?;
            paths.append((pid, p.n, delays(py, &p.e2e, &levels)?, hops))?;
        }
        let sessions = PyList::empty(py);
        for (sid, s) in &a.sessions {
            sessions.append((sid, s.reference, s.lo, s.hi, s.n, s.paths.clone()))?;
        }
        (paths, sessions).into_pyobject(py)
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(analyze_split, m)?)?;
        m.add_function(wrap_pyfunction!(analyze_merge, m)?)?;
        m.add_function(wrap_pyfunction!(analyze_read, m)?)?;
        Ok(())
    }
}
