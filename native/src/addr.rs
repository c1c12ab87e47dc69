//! IPv6 address text exactly as Python's `str(ipaddress.IPv6Address(packed))` writes it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::encode::BLOCK;

/// Python 3.13 writes IPv4-mapped addresses as `::ffff:1.2.3.4`; 3.11 and 3.12 as `::ffff:102:304`.
/// The module sets this at import from what the running interpreter does.
pub static MAPPED_DOTTED: AtomicBool = AtomicBool::new(false);

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hextet(out: &mut Vec<u8>, v: u16) {
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let d = (v >> shift) & 0xF;
        if d != 0 || started || shift == 0 {
            out.push(HEX[d as usize]);
            started = true;
        }
    }
}

/// Append the compressed text of `a` (the longest run of two or more zero hextets, the first if tied, becomes `::`).
pub fn write(out: &mut Vec<u8>, a: &[u8; 16]) {
    let h: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([a[2 * i], a[2 * i + 1]]));
    if MAPPED_DOTTED.load(Ordering::Relaxed) && h[..5] == [0; 5] && h[5] == 0xFFFF {
        out.extend_from_slice(b"::ffff:");
        for (i, b) in a[12..].iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            let mut buf = itoa::Buffer::new();
            out.extend_from_slice(buf.format(*b).as_bytes());
        }
        return;
    }
    let (mut best, mut best_len, mut run, mut run_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, v) in h.iter().enumerate() {
        if *v == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                best = run;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    if best_len < 2 {
        for (i, v) in h.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            hextet(out, *v);
        }
        return;
    }
    for (i, v) in h[..best].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        hextet(out, *v);
    }
    out.extend_from_slice(b"::");
    for (i, v) in h[best + best_len..].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        hextet(out, *v);
    }
}

/// A bounded cache of address texts: probes repeat a few addresses again and again.
///
/// Open addressing: an address lives in one of the `WAYS` slots from its hash on, so a few thousand
/// addresses fit without evicting each other, and more than fit replace the slot at their hash (work
/// stays bounded, the cache only misses more). A slot is one cache line: the address and its text in a
/// block of `BLOCK` bytes, the text's length in the block's last byte (0: a free slot), so the writer
/// copies the block whole and keeps the text's length.
pub struct Cache {
    slots: Vec<Slot>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    addr: [u8; 16],
    text: [u8; BLOCK],
}

const SLOTS: usize = 8192;
const WAYS: usize = 8;
const LEN: usize = BLOCK - 1;

impl Default for Cache {
    fn default() -> Self {
        Cache { slots: vec![Slot { addr: [0; 16], text: [0; BLOCK] }; SLOTS + WAYS] }
    }
}

impl Cache {
    /// The text of the address `a`: the first `len` bytes of the block.
    #[inline]
    pub fn text(&mut self, a: &[u8; 16]) -> (&[u8; BLOCK], usize) {
        let x = u128::from_le_bytes(*a);
        // both halves mixed into every bit, the slot from the top bits
        let h = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((x >> 64) as u64);
        let h = (h ^ h >> 32).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let home = (h >> 51) as usize; // 0..8192
        let mut i = home;
        loop {
            let slot = &self.slots[i];
            if slot.text[LEN] == 0 {
                break; // a free slot: the address is not here
            }
            if slot.addr == *a {
                return (&self.slots[i].text, self.slots[i].text[LEN] as usize);
            }
            i += 1;
            if i == home + WAYS {
                i = home; // every way taken: the address replaces the one at its home
                break;
            }
        }
        self.fill(i, a)
    }

    #[inline(never)]
    fn fill(&mut self, i: usize, a: &[u8; 16]) -> (&[u8; BLOCK], usize) {
        let mut text = Vec::with_capacity(BLOCK);
        write(&mut text, a);
        let slot = &mut self.slots[i];
        slot.addr = *a;
        slot.text[..text.len()].copy_from_slice(&text);
        slot.text[LEN] = text.len() as u8; // at most 39: the last byte is free
        (&slot.text, text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: [u8; 16]) -> String {
        let mut out = Vec::new();
        write(&mut out, &a);
        String::from_utf8(out).unwrap()
    }

    fn parse(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn compresses_as_python_does() {
        for (given, expected) in [
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), // the first of two equal runs
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),   // the longer run, a lone zero stays
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6"),
            ("fc00:0:0:1::", "fc00:0:0:1::"),
            ("::ffff:1.2.3.4", "::ffff:102:304"),
        ] {
            assert_eq!(text(parse(given)), expected, "{given}");
        }
    }

    #[test]
    fn the_cache_holds_thousands_and_stays_right_past_that() {
        let mut cache = Cache::default();
        for round in 0..3 {
            for n in 0..20_000u32 {
                let mut a = parse("2001:db8::");
                a[8..12].copy_from_slice(&n.to_be_bytes());
                let expected = text(a);
                let (block, len) = cache.text(&a);
                assert_eq!(&block[..len], expected.as_bytes(), "{round} {n}");
            }
        }
    }

    #[test]
    fn the_cache_gives_the_same_text() {
        let mut cache = Cache::default();
        for _ in 0..2 {
            for s in ["2001:db8::1", "fc00::a:b", "2001:db8::1"] {
                let (block, len) = cache.text(&parse(s));
                assert_eq!(&block[..len], s.as_bytes());
            }
        }
    }
}
