//! IPv6 address text exactly as Python's `str(ipaddress.IPv6Address(packed))` writes it.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// A bounded direct-mapped cache of address texts: probes repeat a few addresses again and again.
pub struct Cache {
    slots: Vec<([u8; 16], u8, [u8; 39])>,
    used: Vec<bool>,
    recent: Vec<bool>, // per set: the first way was used last
}

const SLOTS: usize = 4096;

impl Default for Cache {
    fn default() -> Self {
        Cache { slots: vec![([0; 16], 0, [0; 39]); SLOTS], used: vec![false; SLOTS], recent: vec![false; SLOTS / 2] }
    }
}

impl Cache {
    /// The text of the address `a` (two ways per set: a probe's 4 to 8 addresses rarely evict each other).
    pub fn text(&mut self, a: &[u8; 16]) -> &[u8] {
        let x = u128::from_ne_bytes(*a);
        let mixed = (x as u64 ^ (x >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let set = (mixed >> 51) as usize & (SLOTS - 2);
        let i = if self.used[set] && self.slots[set].0 == *a {
            set
        } else if self.used[set + 1] && self.slots[set + 1].0 == *a {
            set + 1
        } else {
            // the way not used last time is replaced
            let i = if self.recent[set / 2] { set + 1 } else { set };
            let mut text = Vec::with_capacity(39);
            write(&mut text, a);
            let slot = &mut self.slots[i];
            slot.0 = *a;
            slot.1 = text.len() as u8;
            slot.2[..text.len()].copy_from_slice(&text);
            self.used[i] = true;
            i
        };
        self.recent[set / 2] = i == set;
        let slot = &self.slots[i];
        &slot.2[..slot.1 as usize]
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
    fn the_cache_gives_the_same_text() {
        let mut cache = Cache::default();
        for _ in 0..2 {
            for s in ["2001:db8::1", "fc00::a:b", "2001:db8::1"] {
                assert_eq!(cache.text(&parse(s)), s.as_bytes());
            }
        }
    }
}
