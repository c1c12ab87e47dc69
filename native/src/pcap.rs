//! pcap and pcapng records read in place: the twin of `pt_collector/pcap.py`'s reader, fed in chunks.
//!
//! A `Reader` keeps what the file's headers said (byte order, link type, interfaces and their
//! time resolution) and the absolute offset reached, so a caller can hand it a mapped file whole
//! or piece by piece. Errors carry pcap.py's messages without the file name.

const PCAP_MAGIC_US: u32 = 0xA1B2_C3D4;
const PCAP_MAGIC_NS: u32 = 0xA1B2_3C4D;
const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_BYTE_ORDER: u32 = 0x1A2B_3C4D;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const OPT_IF_TSRESOL: u16 = 9;
pub const MAX_FRAME: u32 = 262_144;

#[derive(Debug, Clone)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    mul: u128,
    /// None: a divisor so large every time is 0
    div: Option<u128>,
}

#[derive(Debug, Clone)]
enum Format {
    Unknown,
    Pcap { big: bool, linktype: u32, frac_ns: u64 },
    Pcapng { big: bool, interfaces: Vec<Interface> },
}

/// One frame found: link type, capture time in ns, and where its bytes are in the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub linktype: u32,
    pub capture_ns: u64,
    pub start: usize,
    pub end: usize,
}

pub struct Reader {
    format: Format,
    /// Absolute offset in the file of the chunk's first byte.
    pub offset: u64,
}

fn u16_at(b: &[u8], at: usize, big: bool) -> u16 {
    let v = [b[at], b[at + 1]];
    if big {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn u32_at(b: &[u8], at: usize, big: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

/// (multiplier, divisor) turning an interface's timestamp units into ns (`_tsresol_ns`).
fn tsresol(options: &[u8], big: bool) -> (u128, Option<u128>) {
    let mut at = 0;
    while at + 4 <= options.len() {
        let code = u16_at(options, at, big);
        let length = u16_at(options, at + 2, big) as usize;
        if code == 0 {
            break;
        }
        if code == OPT_IF_TSRESOL && length >= 1 {
            let Some(&value) = options.get(at + 4) else { break };
            if value & 0x80 != 0 {
                return (1_000_000_000, Some(1u128 << (value & 0x7F)));
            }
            return if value <= 9 {
                (10u128.pow(9 - value as u32), Some(1))
            } else {
                (1, 10u128.checked_pow(value as u32 - 9))
            };
        }
        at += 4 + length + (4 - length % 4) % 4;
    }
    (1000, Some(1))
}

impl Default for Reader {
    fn default() -> Self {
        Reader { format: Format::Unknown, offset: 0 }
    }
}

impl Reader {
    /// The next frame of `buf` (the file from `self.offset` on) at or after `*at`, advancing `*at`
    /// past it. Ok(None): no whole record left in `buf` (with `last`, the file must end exactly there).
    pub fn next(&mut self, buf: &[u8], at: &mut usize, last: bool) -> Result<Option<Frame>, String> {
        loop {
            match &mut self.format {
                Format::Unknown => {
                    if !self.head(buf, at, last)? {
                        return Ok(None);
                    }
                }
                Format::Pcap { big, linktype, frac_ns } => {
                    let (big, linktype, frac_ns) = (*big, *linktype, *frac_ns);
                    return self.pcap_record(buf, at, last, big, linktype, frac_ns);
                }
                Format::Pcapng { .. } => {
                    let found = self.pcapng_block(buf, at)?;
                    match found {
                        Some(Some(frame)) => return Ok(Some(frame)),
                        Some(None) => continue,
                        None => return self.cut_short(buf, *at, last).map(|()| None),
                    }
                }
            }
        }
    }

    fn abs(&self, at: usize) -> u64 {
        self.offset + at as u64
    }

    fn cut_short(&self, buf: &[u8], at: usize, last: bool) -> Result<(), String> {
        if last && at != buf.len() {
            return Err(format!("capture cut short at byte {}", self.abs(at)));
        }
        Ok(())
    }

    /// The file header: false if `buf` does not hold it yet.
    fn head(&mut self, buf: &[u8], at: &mut usize, last: bool) -> Result<bool, String> {
        let b = &buf[*at..];
        if b.len() < 4 {
            if !last {
                return Ok(false);
            }
            return Err(if b.is_empty() { "empty file, not a capture" } else { "too short to be a capture" }.into());
        }
        let magic = [b[0], b[1], b[2], b[3]];
        if u32::from_be_bytes(magic) == PCAPNG_SHB {
            self.format = Format::Pcapng { big: false, interfaces: Vec::new() };
            return Ok(true);
        }
        let (le, be) = (u32::from_le_bytes(magic), u32::from_be_bytes(magic));
        let big = if le == PCAP_MAGIC_US || le == PCAP_MAGIC_NS {
            false
        } else if be == PCAP_MAGIC_US || be == PCAP_MAGIC_NS {
            true
        } else {
            let hex: String = magic.iter().map(|x| format!("{x:02x}")).collect();
            return Err(format!("not a pcap or pcapng file (magic {hex})"));
        };
        if b.len() < 24 {
            if !last {
                return Ok(false);
            }
            return Err("pcap header cut short".into());
        }
        let frac_ns = if u32_at(b, 0, big) == PCAP_MAGIC_NS { 1 } else { 1000 };
        let linktype = u32_at(b, 20, big) & 0x0FFF_FFFF; // upper bits may carry FCS information
        self.format = Format::Pcap { big, linktype, frac_ns };
        *at += 24;
        Ok(true)
    }

    fn pcap_record(
        &self,
        buf: &[u8],
        at: &mut usize,
        last: bool,
        big: bool,
        linktype: u32,
        frac_ns: u64,
    ) -> Result<Option<Frame>, String> {
        let size = buf.len();
        if *at + 16 <= size {
            let sec = u32_at(buf, *at, big) as u64;
            let frac = u32_at(buf, *at + 4, big) as u64;
            let caplen = u32_at(buf, *at + 8, big);
            if caplen > MAX_FRAME {
                return Err(format!("record at byte {} claims {caplen} bytes: corrupt capture", self.abs(*at)));
            }
            let end = *at + 16 + caplen as usize;
            if end <= size {
                let frame = Frame { linktype, capture_ns: sec * 1_000_000_000 + frac * frac_ns, start: *at + 16, end };
                *at = end;
                return Ok(Some(frame));
            }
        }
        self.cut_short(buf, *at, last)?;
        Ok(None)
    }

    /// One pcapng block at `*at`: Some(Some(frame)), Some(None) for a block without a frame,
    /// None when the block is not whole in `buf`.
    fn pcapng_block(&mut self, buf: &[u8], at: &mut usize) -> Result<Option<Option<Frame>>, String> {
        let size = buf.len();
        let a = *at;
        if a + 12 > size {
            return Ok(None);
        }
        let Format::Pcapng { big, interfaces } = &mut self.format else { unreachable!() };
        let block_type = u32_at(buf, a, *big);
        if block_type == PCAPNG_SHB {
            let bom = [buf[a + 8], buf[a + 9], buf[a + 10], buf[a + 11]];
            if u32::from_le_bytes(bom) == PCAPNG_BYTE_ORDER {
                *big = false;
            } else if u32::from_be_bytes(bom) == PCAPNG_BYTE_ORDER {
                *big = true;
            } else {
                return Err(format!("pcapng section at byte {} has no byte-order magic", self.offset + a as u64));
            }
            interfaces.clear();
        }
        let big = *big;
        let length = u32_at(buf, a + 4, big) as usize;
        if length < 12 || !length.is_multiple_of(4) || a + length > size {
            if a + length > size && length >= 12 {
                return Ok(None);
            }
            return Err(format!("pcapng block at byte {} has bad length {length}", self.offset + a as u64));
        }
        let body = a + 8;
        let block_end = a + length;
        let inconsistent = |what: &str| format!("{what} at byte {} is inconsistent", self.offset + a as u64);
        let mut frame = None;
        match block_type {
            PCAPNG_IDB => {
                if body + 8 > size {
                    return Err(inconsistent("interface block"));
                }
                let linktype = u16_at(buf, body, big) as u32;
                let snaplen = u32_at(buf, body + 4, big);
                let options = if body + 8 <= block_end - 4 { &buf[body + 8..block_end - 4] } else { &[][..] };
                let (mul, div) = tsresol(options, big);
                interfaces.push(Interface { linktype, snaplen, mul, div });
            }
            PCAPNG_EPB | PCAPNG_PB => {
                if body + 20 > size {
                    return Err(inconsistent("packet block"));
                }
                let (iface, ts_high, ts_low, caplen) = if block_type == PCAPNG_EPB {
                    let iface = u32_at(buf, body, big) as usize;
                    (iface, u32_at(buf, body + 4, big), u32_at(buf, body + 8, big), u32_at(buf, body + 12, big))
                } else {
                    let iface = u16_at(buf, body, big) as usize;
                    (iface, u32_at(buf, body + 4, big), u32_at(buf, body + 8, big), u32_at(buf, body + 12, big))
                };
                let start = body + 20;
                if iface >= interfaces.len() || start + caplen as usize > block_end - 4 {
                    return Err(inconsistent("packet block"));
                }
                let i = &interfaces[iface];
                let ts = ((ts_high as u128) << 32 | ts_low as u128) * i.mul;
                let ns = i.div.map_or(0, |div| ts / div);
                let capture_ns = u64::try_from(ns)
                    .map_err(|_| format!("packet block at byte {}: time out of range", self.offset + a as u64))?;
                frame = Some(Frame { linktype: i.linktype, capture_ns, start, end: start + caplen as usize });
            }
            PCAPNG_SPB => {
                let Some(first) = interfaces.first() else {
                    return Err(format!("simple packet block at byte {} before any interface", self.offset + a as u64));
                };
                let origlen = u32_at(buf, body, big) as i64;
                let snaplen = if first.snaplen == 0 { origlen } else { first.snaplen as i64 };
                let caplen = origlen.min(snaplen).min(length as i64 - 16).max(0) as usize;
                frame =
                    Some(Frame { linktype: first.linktype, capture_ns: 0, start: body + 4, end: body + 4 + caplen });
            }
            _ => {}
        }
        *at = block_end;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(ns: bool, frames: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let magic = if ns { PCAP_MAGIC_NS } else { PCAP_MAGIC_US };
        let mut f = Vec::new();
        f.extend(magic.to_le_bytes());
        f.extend([2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0]);
        for (sec, frac, data) in frames {
            f.extend(sec.to_le_bytes());
            f.extend(frac.to_le_bytes());
            f.extend((data.len() as u32).to_le_bytes());
            f.extend((data.len() as u32).to_le_bytes());
            f.extend(*data);
        }
        f
    }

    fn all(buf: &[u8], last: bool) -> (Vec<Frame>, usize, Result<(), String>) {
        let mut r = Reader::default();
        let mut at = 0;
        let mut frames = Vec::new();
        loop {
            match r.next(buf, &mut at, last) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, at, Ok(())),
                Err(e) => return (frames, at, Err(e)),
            }
        }
    }

    #[test]
    fn reads_pcap_records_in_place() {
        let file = pcap(false, &[(1, 2, b"abc"), (3, 4, b"de")]);
        let (frames, at, result) = all(&file, true);
        assert_eq!(result, Ok(()));
        assert_eq!(at, file.len());
        assert_eq!(frames[0], Frame { linktype: 101, capture_ns: 1_000_002_000, start: 40, end: 43 });
        assert_eq!(&file[frames[1].start..frames[1].end], b"de");
    }

    #[test]
    fn a_cut_record_waits_for_more_or_is_cut_short() {
        let file = pcap(true, &[(1, 2, b"abc"), (3, 4, b"de")]);
        let cut = &file[..file.len() - 1];
        let (frames, at, result) = all(cut, false);
        assert_eq!((frames.len(), at, result), (1, 43, Ok(())));
        let (_, _, result) = all(cut, true);
        assert_eq!(result, Err("capture cut short at byte 43".to_string()));
    }

    #[test]
    fn not_a_capture() {
        assert_eq!(all(b"", true).2, Err("empty file, not a capture".into()));
        assert_eq!(all(b"ab", true).2, Err("too short to be a capture".into()));
        assert_eq!(all(b"GIF89a", true).2, Err("not a pcap or pcapng file (magic 47494638)".into()));
    }

    #[test]
    fn pcapng_with_a_nanosecond_interface() {
        let mut f = Vec::new();
        f.extend(PCAPNG_SHB.to_le_bytes());
        f.extend(28u32.to_le_bytes());
        f.extend(PCAPNG_BYTE_ORDER.to_le_bytes());
        f.extend([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        f.extend(28u32.to_le_bytes());
        // IDB: linktype 1, snaplen 0, if_tsresol = 9 (ns)
        f.extend(1u32.to_le_bytes());
        f.extend(32u32.to_le_bytes());
        f.extend([1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        f.extend(32u32.to_le_bytes());
        // EPB: iface 0, t = 5 * 2^32 + 7 ns, 3 bytes
        f.extend(6u32.to_le_bytes());
        f.extend(36u32.to_le_bytes());
        f.extend([0, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, b'x', b'y', b'z', 0]);
        f.extend(36u32.to_le_bytes());
        let (frames, _, result) = all(&f, true);
        assert_eq!(result, Ok(()));
        assert_eq!(frames, vec![Frame { linktype: 1, capture_ns: (5 << 32) + 7, start: 88, end: 91 }]);
    }
}
