//! The Python face of the core: `pt_collector._native` (see pt_collector/_native.pyi).

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::addr::MAPPED_DOTTED;
use crate::block::decode_block;
use crate::core::{array_header, Core, Format, Output};
use crate::pcap::Reader;

/// The records of one call, encoded, and the counters of its frames.
#[pyclass(module = "pt_collector._native", frozen)]
struct Batch {
    out: Output,
    format: Format,
}

#[pymethods]
impl Batch {
    /// Frames seen (decoded + not_pt + every malformed count).
    #[getter]
    fn frames(&self) -> u64 {
        self.out.frames
    }

    /// Probe records made.
    #[getter]
    fn decoded(&self) -> usize {
        self.out.decoded()
    }

    #[getter]
    fn not_pt(&self) -> u64 {
        self.out.not_pt
    }

    /// Malformed frames by `layer: reason`, as DecodeError.key counts them.
    #[getter]
    fn malformed<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = PyDict::new(py);
        for (layer, reason, n) in &self.out.malformed {
            counts.set_item(format!("{layer}: {reason}"), n)?;
        }
        Ok(counts)
    }

    /// "json" or "msgpack".
    #[getter]
    fn format(&self) -> &'static str {
        match self.format {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }

    /// Every record in input order, encoded: JSON lines, or the msgpack array's elements back to back.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.out.data)
    }

    /// The same bytes as `data` without a copy: `memoryview(batch)` (read-only, alive while the view is).
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let data = &slf.get().out.data;
        // SAFETY: the view holds a reference to the batch (frozen: its bytes never change or move while it lives).
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// The records per source node, in first-seen order with each source's records in input order:
    /// [(source address, encoded records, count)], and with `ends` each record's end offset in the bytes (native u64s:
    /// `memoryview(ends).cast("Q")`, no Python int per record).
    /// With `slot`, only the records of that output of the flow rules (sources with none left out).
    #[pyo3(signature = (ends = false, slot = None))]
    fn groups<'py>(&self, py: Python<'py>, ends: bool, slot: Option<u32>) -> PyResult<Bound<'py, PyList>> {
        let out = &self.out;
        let spans = crate::routes::group_spans(out, out.rules.as_deref(), slot);
        let list = PyList::empty(py);
        for (g, spans) in spans.iter().filter(|(_, s)| !s.is_empty()) {
            let (text, count) = (out.source_text(*g), spans.len());
            let size = spans.iter().map(|(s, e)| e - s).sum();
            let data = PyBytes::new_with(py, size, |buf| {
                let mut at = 0;
                for (s, e) in spans {
                    buf[at..at + e - s].copy_from_slice(&out.data[*s..*e]);
                    at += e - s;
                }
                Ok(())
            })?;
            if ends {
                let mut at = 0u64;
                let offsets = PyBytes::new_with(py, 8 * count, |buf| {
                    for ((s, e), end) in spans.iter().zip(buf.chunks_exact_mut(8)) {
                        at += (e - s) as u64;
                        end.copy_from_slice(&at.to_ne_bytes());
                    }
                    Ok(())
                })?;
                list.append((text, data, count, offsets))?;
            } else {
                list.append((text, data, count))?;
            }
        }
        Ok(list)
    }

    /// The id of the flow rules that routed these records (`Rules.id`), 0 when none did.
    #[getter]
    fn rules_id(&self) -> u64 {
        self.out.rules.as_ref().map_or(0, |r| r.id)
    }

    /// The latest capture time of a record (0 with none).
    #[getter]
    fn latest_ns(&self) -> u64 {
        self.out.latest_ns
    }

    /// Routed by flow rules: per rule (the default first, then 1, 2, ...) (probes matched, records kept).
    fn rule_counts(&self) -> Vec<(u64, u64)> {
        self.out.rules.as_ref().map_or_else(Vec::new, |r| crate::routes::counts(&self.out, r))
    }

    /// Routed: the records of output `slot` in input order, and how many.
    fn slot_data<'py>(&self, py: Python<'py>, slot: u32) -> (Bound<'py, PyBytes>, usize) {
        let (data, n) =
            self.out.rules.as_ref().map_or((Vec::new(), 0), |r| crate::routes::slot_data(&self.out, r, slot));
        (PyBytes::new(py, &data), n)
    }

    /// Routed: (position, rule) of each record of a raw rule (its frame is taken in Python).
    fn elsewhere(&self) -> Vec<(u32, u32)> {
        self.out.rules.as_ref().map_or_else(Vec::new, |r| crate::routes::elsewhere(&self.out, r))
    }

    /// Routed: this batch's histogram probes counted into their rules' windows (once): the windows they closed.
    fn aggregate(&self, py: Python<'_>) -> Vec<crate::rules::python::ClosedTuple> {
        let out = &self.out;
        let found = py.detach(|| out.rules.as_ref().map_or_else(Vec::new, |r| crate::routes::aggregate(r, out)));
        crate::rules::python::closed(found)
    }

    /// For each record, the index of its frame in the input (frames of decode_frames, or the capture's frames
    /// counted from 0 in this call).
    fn indices(&self) -> Vec<u32> {
        self.out.records.iter().map(|r| r.2).collect()
    }

    fn __len__(&self) -> usize {
        self.out.decoded()
    }

    fn __repr__(&self) -> String {
        let malformed: u64 = self.out.malformed.iter().map(|m| m.2).sum();
        format!(
            "Batch(format={:?}, frames={}, decoded={}, not_pt={}, malformed={}, sources={}, bytes={})",
            self.format(),
            self.out.frames,
            self.out.decoded(),
            self.out.not_pt,
            malformed,
            self.out.groups.len(),
            self.out.data.len()
        )
    }
}

/// The read position in a pcap or pcapng file (its headers' facts and the absolute offset reached).
#[pyclass(module = "pt_collector._native")]
struct CaptureReader {
    reader: Reader,
}

#[pymethods]
impl CaptureReader {
    #[new]
    fn new() -> Self {
        CaptureReader { reader: Reader::default() }
    }

    /// Bytes of the file consumed so far: the next chunk must start at this offset.
    #[getter]
    fn offset(&self) -> u64 {
        self.reader.offset
    }
}

/// The compiled decoder: frames in, a Batch of encoded records out. Same semantics as pt_collector.decode.Decoder.
#[pyclass(module = "pt_collector._native")]
struct Decoder {
    core: Core,
}

fn parse_prefix(text: &str) -> PyResult<(u128, u8)> {
    let bad = || PyValueError::new_err(format!("{text:?} does not appear to be an IPv6 network"));
    let (address, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad())?),
        None => (text, 128),
    };
    if len > 128 {
        return Err(bad());
    }
    let network = u128::from_be_bytes(address.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?.octets());
    let host_bits = if len == 0 { u128::MAX } else { u128::MAX >> len };
    if len < 128 && network & host_bits != 0 {
        return Err(PyValueError::new_err(format!("{text} has host bits set")));
    }
    Ok((network, len))
}

fn format_of(fmt: &str) -> PyResult<Format> {
    match fmt {
        "json" => Ok(Format::Json),
        "msgpack" => Ok(Format::Msgpack),
        _ => Err(PyValueError::new_err(format!("unknown format {fmt:?} (one of json, msgpack)"))),
    }
}

/// The bytes of a bytes object, or of any C-contiguous buffer (kept alive in `keep`).
fn frame_bytes<'a>(item: &'a Bound<'_, PyAny>, keep: &'a mut Option<PyBuffer<u8>>) -> PyResult<&'a [u8]> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    let buf = keep.insert(PyBuffer::<u8>::get(item)?);
    if !buf.is_c_contiguous() {
        return Err(PyTypeError::new_err("a frame must be bytes or a contiguous buffer"));
    }
    // SAFETY: the buffer is held in `keep` for as long as the slice lives, and read only.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) })
}

#[pymethods]
impl Decoder {
    #[new]
    #[pyo3(signature = (tts_shift = None, shift_by_source = None, fmt = "json"))]
    fn new(tts_shift: Option<i64>, shift_by_source: Option<&Bound<'_, PyAny>>, fmt: &str) -> PyResult<Self> {
        let mut prefixes = Vec::new();
        if let Some(shifts) = shift_by_source {
            let items = if shifts.hasattr("items")? { shifts.call_method0("items")? } else { shifts.clone() };
            for item in items.try_iter()? {
                let (prefix, shift): (Bound<'_, PyAny>, Option<i64>) = item?.extract()?;
                let (network, len) = parse_prefix(&prefix.str()?.to_cow()?)?;
                prefixes.push((network, len, shift));
            }
        }
        let core = Core::new(tts_shift, &prefixes, format_of(fmt)?).map_err(|e| PyValueError::new_err(e.0))?;
        Ok(Decoder { core })
    }

    #[getter]
    fn tts_shift(&self) -> Option<u32> {
        self.core.tts_shift
    }

    #[getter]
    fn format(&self) -> &'static str {
        match self.core.format {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }

    /// The TTS shift for the midpoints on paths from the source `src_addr` (as Decoder.shift_for).
    fn shift_for(&self, src_addr: &str) -> PyResult<Option<u32>> {
        let a = src_addr
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| PyValueError::new_err(format!("{src_addr:?} does not appear to be an IPv6 address")))?;
        Ok(self.core.shift_for(&a.octets()))
    }

    /// The source `src_addr` decodes with `shift` from now on (None: no hop times), before any prefix.
    #[pyo3(signature = (src_addr, shift))]
    fn set_source_shift(&mut self, src_addr: &str, shift: Option<i64>) -> PyResult<()> {
        let a = src_addr
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| PyValueError::new_err(format!("{src_addr:?} does not appear to be an IPv6 address")))?;
        self.core.set_source_shift(a.octets(), shift).map_err(|e| PyValueError::new_err(e.0))
    }

    /// Match flow rules on every record decoded from now on (None: no more).
    #[pyo3(signature = (rules))]
    fn set_rules(&mut self, rules: Option<PyRef<'_, crate::rules::python::Rules>>) {
        self.core.rules = rules.map(|r| r.inner.clone());
    }

    /// Decode frames: each (capture_ns, frame) with `linktype`, or (linktype, capture_ns, frame) as pcap.Frame.
    #[pyo3(signature = (frames, linktype = 1))]
    fn decode_frames(&mut self, frames: &Bound<'_, PyAny>, linktype: u32) -> PyResult<Batch> {
        let mut out = Output::with_capacity(frames.len().unwrap_or(0), self.core.format);
        for (index, item) in frames.try_iter()?.enumerate() {
            let item = item?;
            let tuple = item.cast::<PyTuple>()?;
            let (lt, ns, frame) = match tuple.len() {
                2 => (linktype, tuple.get_item(0)?, tuple.get_item(1)?),
                3 => (tuple.get_item(0)?.extract::<u32>()?, tuple.get_item(1)?, tuple.get_item(2)?),
                n => {
                    return Err(PyTypeError::new_err(format!(
                        "a frame is (capture_ns, bytes) or (linktype, capture_ns, bytes), not {n} items"
                    )))
                }
            };
            let capture_ns: u64 = ns.extract()?;
            let mut keep = None;
            let bytes = frame_bytes(&frame, &mut keep)?;
            self.core.decode(&mut out, bytes, capture_ns, lt, index as u32);
        }
        Ok(Batch { out, format: self.core.format })
    }

    /// Decode the frames of a pcap/pcapng chunk in place: `buf` is the file from `reader.offset` on.
    /// Stops after `max_frames` frames or at the last whole record; with `last`, `buf` ends the file, and
    /// anything left over is an error. Returns (batch, bytes of buf consumed, error message or None); after an
    /// error the batch still holds the frames before the damage.
    #[pyo3(signature = (reader, buf, last = true, max_frames = None))]
    fn decode_capture(
        &mut self,
        py: Python<'_>,
        reader: &mut CaptureReader,
        buf: &Bound<'_, PyAny>,
        last: bool,
        max_frames: Option<usize>,
    ) -> PyResult<(Batch, usize, Option<String>)> {
        let mut keep = None;
        let data = frame_bytes(buf, &mut keep)?;
        let core = &mut self.core;
        let reader = &mut reader.reader;
        let limit = max_frames.unwrap_or(usize::MAX);
        let (out, at, error) = py.detach(|| {
            let mut out = Output::with_capacity(limit.min(data.len() / 200), core.format);
            let mut at = 0;
            let mut error = None;
            let mut index = 0u32;
            while (index as usize) < limit {
                match reader.next(data, &mut at, last) {
                    Ok(Some(frame)) => {
                        core.decode(&mut out, &data[frame.start..frame.end], frame.capture_ns, frame.linktype, index);
                        index += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            reader.offset += at as u64;
            (out, at, error)
        });
        Ok((Batch { out, format: core.format }, at, error))
    }

    /// Decode `count` frames of a TPACKET_V3 block read in place (`block`: the block, e.g. a memoryview of the
    /// mapped ring; the GIL is released), from the frame header at offset `at` in it. Returns (batch, offset of
    /// the next frame header): see block.rs for frames the headers place outside the block.
    #[pyo3(signature = (block, at, count, linktype = 1))]
    fn decode_block(
        &mut self,
        py: Python<'_>,
        block: &Bound<'_, PyAny>,
        at: usize,
        count: usize,
        linktype: u32,
    ) -> PyResult<(Batch, usize)> {
        let mut keep = None;
        let data = frame_bytes(block, &mut keep)?;
        let core = &mut self.core;
        let (out, next) = py.detach(|| {
            let mut out = Output::with_capacity(count.min(data.len() / 64), core.format);
            let next = decode_block(core, &mut out, data, at, count, linktype, 0);
            (out, next)
        });
        Ok((Batch { out, format: core.format }, next))
    }
}

/// The msgpack header of an array of `n` elements: a message value is this + a group's bytes.
#[pyfunction]
fn msgpack_array_header(py: Python<'_>, n: usize) -> Bound<'_, PyBytes> {
    let mut out = Vec::with_capacity(5);
    array_header(&mut out, n);
    PyBytes::new(py, &out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Address text must be what this interpreter's ipaddress writes (3.13 writes IPv4-mapped dotted).
    let mapped = PyBytes::new(py, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]);
    let text: String = py.import("ipaddress")?.getattr("IPv6Address")?.call1((mapped,))?.str()?.extract()?;
    match text.as_str() {
        "::ffff:102:304" => MAPPED_DOTTED.store(false, Ordering::Relaxed),
        "::ffff:1.2.3.4" => MAPPED_DOTTED.store(true, Ordering::Relaxed),
        other => return Err(PyValueError::new_err(format!("unknown IPv6 text form {other:?}: engine unavailable"))),
    }
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Decoder>()?;
    m.add_class::<Batch>()?;
    m.add_class::<CaptureReader>()?;
    m.add_function(wrap_pyfunction!(msgpack_array_header, m)?)?;
    crate::analyze::python::register(m)?;
    crate::rules::python::register(m)?;
    crate::record_batch::python::register(m)?;
    Ok(())
}
