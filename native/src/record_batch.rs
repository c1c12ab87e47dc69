//! Kafka record batches (message format v2), built whole: one ptc message (key, value, headers) as the one
//! record of a batch, compressed and checksummed here, so the Kafka client only writes the producer's state in.
//!
//! The bytes are those aiokafka's DefaultRecordBatchBuilder writes for `append(0, timestamp, key, value,
//! headers)` then `build()` (tests/test_record_batch.py holds them equal): the 61-byte header, then the record,
//! compressed with the batch's codec (snappy in xerial's framing, 32 KiB blocks, as aiokafka and the Java client
//! write it), whether or not that makes it smaller, as aiokafka's compiled builder and the Java client do.

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

/// The one record around its value: before it, its length, attributes, timestamp and offset deltas (0), the key
/// and the value's length; after it, the headers.
fn record_around(key: &[u8], value_len: usize, headers: &[(&[u8], &[u8])]) -> (Vec<u8>, Vec<u8>) {
    let mut after = Vec::new();
    varint(&mut after, headers.len() as i64);
    for (name, data) in headers {
        bytes_field(&mut after, name);
        bytes_field(&mut after, data);
    }
    let len = 3 + field_len(key) + varint_len(value_len as i64) + value_len + after.len();
    let mut before = Vec::with_capacity(key.len() + 20);
    varint(&mut before, len as i64);
    before.extend_from_slice(&[0, 0, 0]); // attributes, timestamp delta 0, offset delta 0
    bytes_field(&mut before, key);
    varint(&mut before, value_len as i64);
    (before, after)
}

#[cfg(test)]
fn record(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let (before, after) = record_around(key, value.len(), headers);
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

/// Appends the pieces, laid end to end, compressed in xerial's framing: its header, then each 32 KiB block's
/// length and snappy bytes; the blocks are read where they lie (copied only when one spans two pieces).
fn snappy_xerial(out: &mut Vec<u8>, pieces: &[&[u8]]) {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut encoder = snap::raw::Encoder::new();
    let mut scratch = Vec::with_capacity(XERIAL_BLOCK);
    out.reserve(XERIAL_HEADER.len() + total / 4);
    out.extend_from_slice(&XERIAL_HEADER);
    let mut compressed = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK)];
    for start in (0..total).step_by(XERIAL_BLOCK) {
        let block = window(pieces, start, total.min(start + XERIAL_BLOCK), &mut scratch);
        let n = encoder.compress(block, &mut compressed).expect("a 32 KiB block always compresses");
        out.extend_from_slice(&(n as i32).to_be_bytes());
        out.extend_from_slice(&compressed[..n]);
    }
}

/// A built batch of one record, the producer's state unset (-1, -1, 0), as aiokafka's builder leaves it; the
/// value comes in parts laid end to end (never joined: the snappy blocks are read where they lie).
pub fn build(key: &[u8], value: &[&[u8]], headers: &[(&[u8], &[u8])], codec: Codec, timestamp_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
    out.extend_from_slice(&[0; 4]); // length, below
    out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    out.push(2); // magic
    out.extend_from_slice(&[0; 4]); // CRC, below
    out.extend_from_slice(&(codec as i16).to_be_bytes()); // attributes
    out.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    out.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
    out.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&0i32.to_be_bytes()); // base sequence
    out.extend_from_slice(&1i32.to_be_bytes()); // records
    let (before, after) = record_around(key, value.iter().map(|p| p.len()).sum(), headers);
    let mut pieces = Vec::with_capacity(value.len() + 2);
    pieces.push(before.as_slice());
    pieces.extend_from_slice(value);
    pieces.push(&after);
    match codec {
        Codec::None => pieces.iter().for_each(|piece| out.extend_from_slice(piece)),
        Codec::Snappy => snappy_xerial(&mut out, &pieces),
    }
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    checksum(&mut out);
    out
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
        let mut batch = build(b"k", &[b"val", b"ue"], &[(b"h", b"1")], Codec::None, 1_700_000_000_000);
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
        let batch = build(b"k", &[a, b], &[], Codec::Snappy, 0);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 2);
        let mut body = &batch[HEADER + 16..];
        let mut plain = Vec::new();
        while !body.is_empty() {
            let n = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
            plain.extend(snap::raw::Decoder::new().decompress_vec(&body[4..4 + n]).unwrap());
            body = &body[4 + n..];
        }
        assert_eq!(plain, record(b"k", &value, &[]));
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
        let batch = build(b"", &[&value], &[], Codec::Snappy, 0);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 2);
        assert!(batch.len() > HEADER + record(b"", &value, &[]).len());
    }
}

#[cfg(feature = "python")]
pub mod python {
    //! `record_batch` and `set_producer_state` (pt_collector/_native.pyi), for kafka/recordbatch.py.
    use pyo3::buffer::PyBuffer;
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::PyByteArray;

    use super::Codec;

    /// A built record batch of one record (key, the value in parts laid end to end, headers); the GIL is released
    /// while it is built.
    #[pyfunction]
    fn record_batch<'py>(
        py: Python<'py>,
        key: &[u8],
        value: Vec<PyBuffer<u8>>,
        headers: Vec<(String, Vec<u8>)>,
        codec: &str,
        timestamp_ms: i64,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let codec = Codec::from_name(codec).ok_or_else(|| PyValueError::new_err(format!("no native {codec}")))?;
        let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())).collect();
        if !value.iter().all(|part| part.is_c_contiguous()) {
            return Err(PyValueError::new_err("the value's parts must be contiguous buffers"));
        }
        // SAFETY: each buffer is held in `value` until the batch is built, and only read.
        let parts: Vec<&[u8]> = value
            .iter()
            .map(|b| unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
            .collect();
        let batch = py.detach(|| super::build(key, &parts, &headers, codec, timestamp_ms));
        Ok(PyByteArray::new(py, &batch))
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
