//! The record's bytes: JSON or msgpack written straight into room reserved once per record.
//!
//! A record is written through a `Cursor` into the spare capacity of the batch's one `Vec<u8>`: no
//! intermediate buffer, no capacity check per write. `reserve` makes room for `bound(segments, hops)`
//! bytes first, an upper limit on any record with that many segments and hops (tests check it against
//! the widest values), which leaves `SLACK` bytes for the fixed-size copies below. Integers become text
//! from digit tables; a nanosecond time is its seconds (the same for most times of a batch, so kept
//! from the last time written) and nine digits of nanoseconds in three table lookups.

use std::ptr;

/// Room for any record's fields but its segments and hops (under 500 bytes), and the slack.
const FIXED: usize = 1024;
/// Room per segment (an address, its quotes and a comma: 42 bytes) and per hop (at most 72 bytes).
const PER_SEGMENT: usize = 48;
const PER_HOP: usize = 96;
/// Bytes past a write's end that a fixed-size copy may touch (an address is copied as 48 bytes).
pub const SLACK: usize = 64;
/// The fixed size of an address text block (`addr::Cache` keeps texts of at most 39 bytes in such blocks).
pub const BLOCK: usize = 48;

/// An upper limit on a record's bytes (JSON, the larger encoding) with `segments` and `hops`, slack included.
pub fn bound(segments: usize, hops: usize) -> usize {
    FIXED + PER_SEGMENT * segments + PER_HOP * hops
}

/// The text of the last seconds written (most times of a batch fall in the same second).
pub struct Secs {
    sec: u64,
    len: usize,
    text: [u8; 16],
}

impl Default for Secs {
    fn default() -> Self {
        Secs { sec: u64::MAX, len: 0, text: [0; 16] }
    }
}

/// A write position in reserved room. Every write is unsafe: the caller has reserved `bound` bytes.
pub struct Cursor<'a> {
    p: *mut u8,
    #[cfg(debug_assertions)]
    end: *mut u8,
    secs: &'a mut Secs,
}

/// Append one record to `out` with `write`, in room for `room` bytes (`bound` of its segments and hops).
pub fn append(out: &mut Vec<u8>, room: usize, secs: &mut Secs, write: impl FnOnce(&mut Cursor)) {
    out.reserve(room);
    let len = out.len();
    // SAFETY: `room` bytes past `len` are allocated; the writer stays within them (bound's contract),
    // and only the bytes it wrote (start..p) are made part of the vector.
    unsafe {
        let start = out.as_mut_ptr().add(len);
        let mut c = Cursor {
            p: start,
            #[cfg(debug_assertions)]
            end: start.add(room),
            secs,
        };
        write(&mut c);
        let written = c.p.offset_from(start) as usize;
        debug_assert!(written + SLACK <= room, "a record of {written} bytes in room for {room}");
        out.set_len(len + written);
    }
}

const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// "000".."999", each in 4 bytes (written as one 4-byte store, 3 of them kept).
static TRIPLES: [[u8; 4]; 1000] = {
    let mut t = [[0u8; 4]; 1000];
    let mut i = 0;
    while i < 1000 {
        t[i] = [b'0' + (i / 100) as u8, b'0' + (i / 10 % 10) as u8, b'0' + (i % 10) as u8, 0];
        i += 1;
    }
    t
};

const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Decimal digits of `v` (1..=20).
#[inline(always)]
fn digits(v: u64) -> usize {
    // floor(bits * log10 2): floor(log10 v) or one more
    let t = ((64 - (v | 1).leading_zeros()) as usize * 1233) >> 12;
    t + 1 - ((v | 1) < POW10[t]) as usize
}

impl Cursor<'_> {
    #[inline(always)]
    unsafe fn check(&self, n: usize) {
        #[cfg(debug_assertions)]
        debug_assert!(self.p.add(n) <= self.end, "write past the reserved room");
        let _ = n;
    }

    /// `s` (a literal: its length is known where this is inlined).
    #[inline(always)]
    pub unsafe fn lit(&mut self, s: &[u8]) {
        self.check(s.len());
        ptr::copy_nonoverlapping(s.as_ptr(), self.p, s.len());
        self.p = self.p.add(s.len());
    }

    #[inline(always)]
    pub unsafe fn byte(&mut self, b: u8) {
        self.check(1);
        *self.p = b;
        self.p = self.p.add(1);
    }

    /// The first `len` bytes of `block`, copied whole (a fixed-size copy, no call).
    #[inline(always)]
    pub unsafe fn block(&mut self, block: &[u8; BLOCK], len: usize) {
        self.check(BLOCK);
        debug_assert!(len <= BLOCK);
        ptr::copy_nonoverlapping(block.as_ptr(), self.p, BLOCK);
        self.p = self.p.add(len);
    }

    #[inline(always)]
    unsafe fn pair(&mut self, at: *mut u8, v: usize) {
        ptr::copy_nonoverlapping(PAIRS.as_ptr().add(2 * v), at, 2);
    }

    /// `v` in decimal.
    #[inline(always)]
    pub unsafe fn uint(&mut self, v: u64) {
        if v < 10 {
            self.byte(b'0' + v as u8);
        } else if v < 100 {
            self.check(2);
            self.pair(self.p, v as usize);
            self.p = self.p.add(2);
        } else if v < 1000 {
            self.check(4);
            ptr::copy_nonoverlapping(TRIPLES[v as usize].as_ptr(), self.p, 4);
            self.p = self.p.add(3);
        } else if v < 10000 {
            self.check(4);
            self.pair(self.p, v as usize / 100);
            self.pair(self.p.add(2), v as usize % 100);
            self.p = self.p.add(4);
        } else {
            self.long(v);
        }
    }

    /// `v` (at least 10000) in decimal, two digits at a time from the end.
    #[inline(never)]
    unsafe fn long(&mut self, mut v: u64) {
        let n = digits(v);
        self.check(n);
        let mut q = self.p.add(n);
        while v >= 100 {
            q = q.sub(2);
            self.pair(q, (v % 100) as usize);
            v /= 100;
        }
        if v >= 10 {
            self.pair(q.sub(2), v as usize);
        } else {
            *q.sub(1) = b'0' + v as u8;
        }
        self.p = self.p.add(n);
    }

    /// `v` in decimal: a negative sign, then the magnitude.
    #[inline(always)]
    pub unsafe fn int(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        self.uint(v.unsigned_abs());
    }

    /// A time in ns: as `uint`, with the seconds from the last time written when they are the same.
    #[inline(always)]
    pub unsafe fn time_u(&mut self, v: u64) {
        if v < 1_000_000_000 {
            return self.uint(v);
        }
        let (sec, ns) = (v / 1_000_000_000, (v % 1_000_000_000) as usize);
        if sec != self.secs.sec {
            self.new_secs(sec);
        }
        self.check(16 + 12);
        ptr::copy_nonoverlapping(self.secs.text.as_ptr(), self.p, 16);
        self.p = self.p.add(self.secs.len);
        for part in [ns / 1_000_000, ns / 1000 % 1000, ns % 1000] {
            ptr::copy_nonoverlapping(TRIPLES[part].as_ptr(), self.p, 4);
            self.p = self.p.add(3);
        }
    }

    #[inline(never)]
    fn new_secs(&mut self, sec: u64) {
        let mut text = itoa::Buffer::new();
        let digits = text.format(sec).as_bytes();
        self.secs.text[..digits.len()].copy_from_slice(digits);
        self.secs.len = digits.len();
        self.secs.sec = sec;
    }

    /// A signed time in ns (`time_u` for its magnitude).
    #[inline(always)]
    pub unsafe fn time(&mut self, v: i64) {
        if v < 0 {
            self.byte(b'-');
        }
        self.time_u(v.unsigned_abs());
    }
}

/// One encoding's syntax. The record writer calls the same sequence for both; each writes what it needs.
/// Every method writes through the cursor: the caller has reserved `bound` room (see `append`).
pub trait Writer {
    unsafe fn map(c: &mut Cursor, n: usize);
    unsafe fn end_map(c: &mut Cursor);
    /// A map's field name: `json` is its JSON text with the comma before it (if any), `msgpack` its key.
    unsafe fn field(c: &mut Cursor, json: &'static [u8], msgpack: &'static [u8]);
    unsafe fn sep(c: &mut Cursor);
    unsafe fn array(c: &mut Cursor, n: usize);
    unsafe fn end_array(c: &mut Cursor);
    unsafe fn uint(c: &mut Cursor, v: u64);
    unsafe fn int(c: &mut Cursor, v: i64);
    /// A time in ns (`int`, faster for times close together).
    unsafe fn time(c: &mut Cursor, v: i64);
    unsafe fn time_u(c: &mut Cursor, v: u64);
    unsafe fn null(c: &mut Cursor);
    /// A string that needs no escaping (an address): the first `len` bytes of `block`.
    unsafe fn str(c: &mut Cursor, block: &[u8; BLOCK], len: usize);
    unsafe fn end_record(c: &mut Cursor);
}

/// msgpack's key for a field name: its fixstr header and the name (`const K: [u8; N + 1] = key(name)`).
pub const fn key<const N: usize>(name: &str) -> [u8; N] {
    let b = name.as_bytes();
    assert!(b.len() + 1 == N && b.len() < 32);
    let mut k = [0u8; N];
    k[0] = 0xa0 | b.len() as u8;
    let mut i = 0;
    while i < b.len() {
        k[i + 1] = b[i];
        i += 1;
    }
    k
}

pub struct Json;

impl Writer for Json {
    unsafe fn map(c: &mut Cursor, _: usize) {
        c.byte(b'{');
    }
    unsafe fn end_map(c: &mut Cursor) {
        c.byte(b'}');
    }
    unsafe fn field(c: &mut Cursor, json: &'static [u8], _: &'static [u8]) {
        c.lit(json);
    }
    unsafe fn sep(c: &mut Cursor) {
        c.byte(b',');
    }
    unsafe fn array(c: &mut Cursor, _: usize) {
        c.byte(b'[');
    }
    unsafe fn end_array(c: &mut Cursor) {
        c.byte(b']');
    }
    unsafe fn uint(c: &mut Cursor, v: u64) {
        c.uint(v);
    }
    unsafe fn int(c: &mut Cursor, v: i64) {
        c.int(v);
    }
    unsafe fn time(c: &mut Cursor, v: i64) {
        c.time(v);
    }
    unsafe fn time_u(c: &mut Cursor, v: u64) {
        c.time_u(v);
    }
    unsafe fn null(c: &mut Cursor) {
        c.lit(b"null");
    }
    unsafe fn str(c: &mut Cursor, block: &[u8; BLOCK], len: usize) {
        c.byte(b'"');
        c.block(block, len);
        c.byte(b'"');
    }
    unsafe fn end_record(c: &mut Cursor) {
        c.byte(b'\n');
    }
}

/// msgpack as msgspec writes it: a Struct as a map of its fields, integers in their shortest form.
pub struct Msgpack;

impl Writer for Msgpack {
    unsafe fn map(c: &mut Cursor, n: usize) {
        debug_assert!(n < 16);
        c.byte(0x80 | n as u8);
    }
    unsafe fn end_map(_: &mut Cursor) {}
    unsafe fn field(c: &mut Cursor, _: &'static [u8], msgpack: &'static [u8]) {
        c.lit(msgpack);
    }
    unsafe fn sep(_: &mut Cursor) {}
    unsafe fn array(c: &mut Cursor, n: usize) {
        if n < 16 {
            c.byte(0x90 | n as u8);
        } else if n <= 0xFFFF {
            c.byte(0xdc);
            c.lit(&(n as u16).to_be_bytes());
        } else {
            c.byte(0xdd);
            c.lit(&(n as u32).to_be_bytes());
        }
    }
    unsafe fn end_array(_: &mut Cursor) {}
    unsafe fn uint(c: &mut Cursor, v: u64) {
        if v < 128 {
            c.byte(v as u8);
        } else if v <= 0xFF {
            c.lit(&[0xcc, v as u8]);
        } else if v <= 0xFFFF {
            c.byte(0xcd);
            c.lit(&(v as u16).to_be_bytes());
        } else if v <= 0xFFFF_FFFF {
            c.byte(0xce);
            c.lit(&(v as u32).to_be_bytes());
        } else {
            c.byte(0xcf);
            c.lit(&v.to_be_bytes());
        }
    }
    unsafe fn int(c: &mut Cursor, v: i64) {
        if v >= 0 {
            Self::uint(c, v as u64);
        } else if v >= -32 {
            c.byte(v as i8 as u8);
        } else if v >= -128 {
            c.lit(&[0xd0, v as i8 as u8]);
        } else if v >= -32768 {
            c.byte(0xd1);
            c.lit(&(v as i16).to_be_bytes());
        } else if v >= -(1 << 31) {
            c.byte(0xd2);
            c.lit(&(v as i32).to_be_bytes());
        } else {
            c.byte(0xd3);
            c.lit(&v.to_be_bytes());
        }
    }
    unsafe fn time(c: &mut Cursor, v: i64) {
        Self::int(c, v);
    }
    unsafe fn time_u(c: &mut Cursor, v: u64) {
        Self::uint(c, v);
    }
    unsafe fn null(c: &mut Cursor) {
        c.byte(0xc0);
    }
    unsafe fn str(c: &mut Cursor, block: &[u8; BLOCK], len: usize) {
        if len < 32 {
            c.byte(0xa0 | len as u8);
        } else {
            c.lit(&[0xd9, len as u8]); // addresses are at most 39 bytes
        }
        c.block(block, len);
    }
    unsafe fn end_record(_: &mut Cursor) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Cursor)) -> String {
        let (mut out, mut secs) = (Vec::new(), Secs::default());
        append(&mut out, bound(0, 0), &mut secs, write);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn digits_counts_every_power_of_ten() {
        for (n, &p) in POW10.iter().enumerate() {
            assert_eq!(digits(p), n + 1, "{p}");
            if p > 1 {
                assert_eq!(digits(p - 1), n, "{}", p - 1);
            }
        }
        assert_eq!(digits(u64::MAX), 20);
        assert_eq!(digits(0), 1);
    }

    #[test]
    fn integers_as_std_writes_them() {
        let mut values: Vec<u64> = vec![0, 9, 10, 99, 100, 999, 1000, 4095, 9999, 10000, 65535, u64::MAX];
        values.extend(POW10.iter().flat_map(|p| [p - 1, *p, p + 1]));
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for v in values {
            assert_eq!(text(|c| unsafe { c.uint(v) }), v.to_string());
            assert_eq!(text(|c| unsafe { c.time_u(v) }), v.to_string());
            let s = v as i64;
            assert_eq!(text(|c| unsafe { c.int(s) }), s.to_string());
            assert_eq!(text(|c| unsafe { c.time(s) }), s.to_string());
        }
        assert_eq!(text(|c| unsafe { c.time(i64::MIN) }), i64::MIN.to_string());
    }

    #[test]
    fn the_seconds_kept_are_the_seconds_of_the_time() {
        let (mut out, mut secs) = (Vec::new(), Secs::default());
        for v in [1_643_211_475_999_000_000u64, 1_643_211_475_000_000_001, 1_643_211_476_000_000_000, 1_000_000_000] {
            append(&mut out, bound(0, 0), &mut secs, |c| unsafe {
                c.time_u(v);
                c.byte(b' ');
            });
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1643211475999000000 1643211475000000001 1643211476000000000 1000000000 "
        );
    }

    #[test]
    fn msgpack_keys() {
        const K: [u8; 6] = key("if_id");
        assert_eq!(&K, b"\xa5if_id");
    }
}
