//! The walk of one frame: the exact twin of `pt_collector/decode.py`.
//!
//! Every function mirrors the Python function of the same name, check for
//! check and in the same order, so a frame gets the same verdict (probe,
//! not PT, or malformed with the same `layer: reason`) from both engines.
//! Nothing here allocates: a walk yields a `Shape`, offsets into the frame.

pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_VLAN: [u16; 3] = [0x8100, 0x88A8, 0x9100];
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPES_RAW: [u32; 4] = [101, 12, 14, 229];

const NH_HOP_BY_HOP: u8 = 0;
const NH_IPV6: u8 = 41;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;
const OPT_PAD1: u8 = 0;
const OPT_PT: u8 = 0x32;
pub const MCD_SIZE: usize = 3;
const ROUTING_TYPE_SRH: u8 = 4;
const SRH_FIXED: usize = 8;
const SRH_NO_SEGMENTS: u8 = 255;
const TLV_PAD1: u8 = 0;
const TLV_PT: u8 = 128;
const PT_TLV_LEN: u8 = 14;
const IPV6_HEADER: usize = 40;
/// Options of one length checked at once (see hbh_pt_option).
const RUN: usize = 8;

/// Why a walk stopped without a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    NotPt,
    /// A frame claiming to be PT but inconsistent: (layer, reason), counted as `layer: reason`.
    Malformed(&'static str, &'static str),
}

type Step<T> = Result<T, Stop>;

/// Where the values of a probe are: offsets into the frame (what a Python layout compiles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Offset of the IPv6 header of the probe (version/class/flow at +0, hop limit at +7, src at +8, dst at +24).
    pub probe: usize,
    /// (offset, length) of the MCD stack.
    pub stack: (usize, usize),
    /// Offset of the source's PT TLV, if the probe has its SRH.
    pub src_tlv: Option<usize>,
    /// Segment offsets in list order (Segment List[0] first); the record lists them reversed.
    pub segments: (usize, usize), // first segment offset, count
    /// The sink: (offset of its PT TLV, offset of the outer IPv6 header) in an encapsulation.
    pub sink: Option<(usize, usize)>,
}

fn ext_header(nh: u8) -> bool {
    matches!(nh, NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT | NH_AH)
}

/// Whether 16 bytes are 8 zero-length options, none of them Pad1 or PT (two words tested at once, the
/// type bytes in the low half of each 16-bit lane: a lane of 0 after `- 1` sets its bit 7).
fn zero_length_plain(run: &[u8]) -> bool {
    const LENGTHS: u64 = 0xFF00_FF00_FF00_FF00;
    const ONES: u64 = 0x0001_0001_0001_0001;
    const HIGH: u64 = 0x0080_0080_0080_0080;
    const PT: u64 = OPT_PT as u64 * ONES;
    let zero_lane = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    run.chunks_exact(8).all(|word| {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        w & LENGTHS == 0 && !zero_lane(w) && !zero_lane(w ^ PT)
    })
}

/// The size of the extension header `nh` whose second byte is `len`.
fn ext_len(nh: u8, len: u8) -> usize {
    match nh {
        NH_FRAGMENT => 8,
        NH_AH => (len as usize + 2) * 4,
        _ => (len as usize + 1) * 8,
    }
}

struct Walk<'a> {
    f: &'a [u8],
    size: usize,
    claimed: bool,
}

impl Walk<'_> {
    fn fail<T>(&self, layer: &'static str, reason: &'static str) -> Step<T> {
        if self.claimed {
            Err(Stop::Malformed(layer, reason))
        } else {
            Err(Stop::NotPt)
        }
    }

    fn need(&self, offset: usize, size: usize, limit: usize, layer: &'static str, reason: &'static str) -> Step<()> {
        if offset + size > limit.min(self.size) {
            return self.fail(layer, if limit <= self.size { reason } else { "truncated frame" });
        }
        Ok(())
    }

    fn u8(&self, offset: usize) -> u8 {
        self.f[offset]
    }

    fn u16(&self, offset: usize) -> u16 {
        u16::from_be_bytes([self.f[offset], self.f[offset + 1]])
    }

    fn ipv6_offset(&self, linktype: u32) -> Step<usize> {
        let (off, ethertype) = if linktype == LINKTYPE_ETHERNET {
            let mut off = 14;
            self.need(0, off, self.size, "ethernet", "truncated frame")?;
            let mut ethertype = self.u16(12);
            while ETH_P_VLAN.contains(&ethertype) {
                self.need(off, 4, self.size, "vlan", "truncated frame")?;
                ethertype = self.u16(off + 2);
                off += 4;
            }
            (off, ethertype)
        } else if linktype == LINKTYPE_LINUX_SLL {
            self.need(0, 16, self.size, "sll", "truncated frame")?;
            (16, self.u16(14))
        } else if linktype == LINKTYPE_LINUX_SLL2 {
            self.need(0, 20, self.size, "sll2", "truncated frame")?;
            (20, self.u16(0))
        } else if LINKTYPES_RAW.contains(&linktype) {
            (0, ETH_P_IPV6)
        } else {
            return Err(Stop::NotPt);
        };
        if ethertype != ETH_P_IPV6 {
            return Err(Stop::NotPt);
        }
        Ok(off)
    }

    fn ipv6_header(&self, off: usize, limit: usize, layer: &'static str) -> Step<(u8, usize)> {
        self.need(off, IPV6_HEADER, limit, layer, "header runs past the enclosing packet")?;
        if self.u8(off) >> 4 != 6 {
            return self.fail(layer, "not IPv6");
        }
        Ok((self.u8(off + 6), off + IPV6_HEADER + self.u16(off + 4) as usize))
    }

    fn check_end(&self, end: usize, limit: usize, layer: &'static str, reason: &'static str) -> Step<()> {
        if end > limit {
            return self.fail(layer, reason);
        }
        Ok(())
    }

    fn is_srh(&self, nh: u8, pos: usize, end: usize, layer: &'static str) -> Step<bool> {
        if nh != NH_ROUTING {
            return Ok(false);
        }
        self.need(pos, 3, end, layer, "header runs past the packet")?;
        Ok(self.u8(pos + 2) == ROUTING_TYPE_SRH)
    }

    fn ext_size(&self, nh: u8, pos: usize, end: usize, layer: &'static str) -> Step<usize> {
        self.need(pos, 2, end, layer, "header runs past the packet")?;
        let size = ext_len(nh, self.u8(pos + 1));
        self.need(pos, size, end, layer, "header runs past the packet")?;
        Ok(size)
    }

    /// The header after the extension header `nh` at `pos`, when it is not an SRH (`srh_too`: nor an SRH) and
    /// every check of the walk would pass on it: the fast way past long chains (a hostile frame's, say).
    fn plain_ext(&self, nh: u8, pos: usize, avail: usize, srh_too: bool) -> Option<(u8, usize)> {
        if pos + 8 > avail || (!srh_too && nh == NH_ROUTING && self.u8(pos + 2) == ROUTING_TYPE_SRH) {
            return None;
        }
        let size = ext_len(nh, self.u8(pos + 1));
        (pos + size <= avail).then(|| (self.u8(pos), pos + size))
    }

    fn hbh_pt_option(&mut self, pos: usize, end: usize) -> Step<Option<(usize, usize)>> {
        self.need(pos, 2, end, "hbh", "header runs past the packet")?;
        let hbh_end = pos + (self.u8(pos + 1) as usize + 1) * 8;
        let mut stack: Option<(usize, usize)> = None;
        let mut p = pos + 2;
        let avail = end.min(self.size);
        let f = self.f;
        let readable = &f[..avail.min(hbh_end)];
        while p < hbh_end {
            // the fast way past options every check passes on (a hostile frame's hundreds): all but the PT option
            while let Some(&[opt_type, opt_len]) = readable.get(p..p + 2) {
                if opt_type == OPT_PAD1 {
                    p += 1;
                    continue;
                }
                let step = 2 + opt_len as usize;
                if opt_type == OPT_PT || p + step > hbh_end {
                    break;
                }
                // A run of options of one length (a flood's shape) is checked RUN at a time: each option's place
                // follows from the first one's, so the reads do not wait on each other as a walk's do.
                if step == 2 && readable.get(p..p + 16).is_some_and(zero_length_plain) {
                    p += 16; // the densest run, 8 zero-length options: two words checked at once
                    continue;
                }
                if let Some(run) = readable.get(p..p + RUN * step) {
                    let alike = |j: usize| {
                        let t = run[j * step];
                        t != OPT_PAD1 && t != OPT_PT && run[j * step + 1] == opt_len
                    };
                    if (1..RUN).all(alike) {
                        p += RUN * step;
                        continue;
                    }
                }
                p += step;
            }
            if p >= hbh_end {
                break;
            }
            if p + 2 > avail {
                // near the end of what can be read: the checks in decode.py's order (one fails, or a last Pad1)
                self.need(pos, p + 1 - pos, end, "hbh", "header runs past the packet")?;
                if f[p] != OPT_PAD1 {
                    self.need(pos, p + 2 - pos, end, "hbh", "header runs past the packet")?;
                }
            }
            let opt_type = f[p];
            if opt_type == OPT_PAD1 {
                p += 1;
                continue;
            }
            let opt_len = f[p + 1] as usize;
            if opt_type == OPT_PT && stack.is_none() {
                self.claimed = true;
                if !opt_len.is_multiple_of(MCD_SIZE) {
                    return self.fail("hbh-pt", "opt data len not a multiple of 3");
                }
                stack = Some((p + 2, opt_len));
            }
            if p + 2 + opt_len > hbh_end {
                let layer = if matches!(stack, Some((at, _)) if at == p + 2) { "hbh-pt" } else { "hbh" };
                return self.fail(layer, "option runs past the header");
            }
            p += 2 + opt_len;
        }
        self.need(pos, hbh_end - pos, end, "hbh", "header runs past the packet")?;
        Ok(stack)
    }

    /// (first segment offset, segment count, PT TLV offset, size) of the SRH at `pos`.
    fn srh(&mut self, pos: usize, end: usize, layer: &'static str) -> Step<(usize, usize, Option<usize>, usize)> {
        let size = self.ext_size(NH_ROUTING, pos, end, layer)?;
        self.need(pos, SRH_FIXED, pos + size, layer, "header runs past the packet")?;
        let last_entry = self.u8(pos + 4);
        let count = if last_entry == SRH_NO_SEGMENTS { 0 } else { last_entry as usize + 1 };
        let tlv_at = pos + SRH_FIXED + 16 * count;
        if tlv_at > pos + size {
            return self.fail(layer, "segment list runs past the header");
        }
        let mut pt_tlv = None;
        let mut p = tlv_at;
        while p < pos + size {
            let tlv_type = self.u8(p);
            if tlv_type == TLV_PAD1 {
                p += 1;
                continue;
            }
            if tlv_type == TLV_PT {
                self.claimed = true;
            }
            self.need(p, 2, pos + size, layer, "TLV runs past the header")?;
            let tlv_len = self.u8(p + 1);
            self.need(p, 2 + tlv_len as usize, pos + size, layer, "TLV runs past the header")?;
            if tlv_type == TLV_PT && pt_tlv.is_none() {
                if tlv_len != PT_TLV_LEN {
                    return self.fail("pt-tlv", "length is not 14");
                }
                pt_tlv = Some(p);
            }
            p += 2 + tlv_len as usize;
        }
        Ok((pos + SRH_FIXED, count, pt_tlv, size))
    }

    fn probe(&mut self, shape: &mut Shape, off: usize, nh: u8, end: usize) -> Step<bool> {
        let mut pos = off + IPV6_HEADER;
        if nh != NH_HOP_BY_HOP {
            return Ok(false);
        }
        let Some(stack) = self.hbh_pt_option(pos, end)? else {
            return Ok(false);
        };
        shape.probe = off;
        shape.stack = stack;
        let mut nh = self.u8(pos);
        pos += self.ext_size(NH_HOP_BY_HOP, pos, end, "hbh")?;
        let avail = end.min(self.size);
        while ext_header(nh) {
            if let Some(next) = self.plain_ext(nh, pos, avail, false) {
                (nh, pos) = next;
                continue;
            }
            if self.is_srh(nh, pos, end, "srh")? {
                let (first, count, tlv, _) = self.srh(pos, end, "srh")?;
                let Some(tlv) = tlv else {
                    return self.fail("srh", "no PT TLV");
                };
                shape.segments = (first, count);
                shape.src_tlv = Some(tlv);
                break;
            }
            let size = self.ext_size(nh, pos, end, "ipv6-ext")?;
            nh = self.u8(pos);
            pos += size;
        }
        Ok(true)
    }

    fn tlv_over_last_sid(&self, sid: usize) -> Option<usize> {
        (self.u8(sid) == TLV_PT && self.u8(sid + 1) == PT_TLV_LEN).then_some(sid)
    }

    fn walk(&mut self, linktype: u32) -> Step<Shape> {
        let off = self.ipv6_offset(linktype)?;
        let mut shape = Shape::default();
        let (mut nh, end) = self.ipv6_header(off, self.size, "ipv6")?;
        if self.probe(&mut shape, off, nh, end)? {
            self.check_end(end, self.size, "ipv6", "truncated frame")?;
            return Ok(shape);
        }
        let mut sink_tlv: Option<usize> = None;
        let mut pos = off + IPV6_HEADER;
        let avail = end.min(self.size);
        while ext_header(nh) {
            if let Some(next) = self.plain_ext(nh, pos, avail, sink_tlv.is_some()) {
                (nh, pos) = next;
                continue;
            }
            let size;
            if sink_tlv.is_none() && self.is_srh(nh, pos, end, "outer-srh")? {
                let (first, count, tlv, srh_size) = self.srh(pos, end, "outer-srh")?;
                sink_tlv = tlv;
                if sink_tlv.is_none() && count > 1 {
                    sink_tlv = self.tlv_over_last_sid(first + 16 * (count - 1));
                }
                self.claimed = sink_tlv.is_some();
                size = srh_size;
            } else {
                size = self.ext_size(nh, pos, end, "outer-ext")?;
            }
            nh = self.u8(pos);
            pos += size;
        }
        if nh == NH_IPV6 {
            shape.sink = sink_tlv.map(|tlv| (tlv, off));
            let (inner_nh, inner_end) = self.ipv6_header(pos, end, "inner-ipv6")?;
            self.check_end(inner_end, end, "inner-ipv6", "payload length runs past the enclosing packet")?;
            if self.probe(&mut shape, pos, inner_nh, inner_end)? {
                self.check_end(end, self.size, "ipv6", "truncated frame")?;
                return Ok(shape);
            }
        }
        self.fail("encapsulation", "PT TLV without an inner probe")?;
        Err(Stop::NotPt)
    }
}

/// Walk one frame: where its probe's values are, or why it is none.
pub fn walk(frame: &[u8], linktype: u32) -> Result<Shape, Stop> {
    let mut w = Walk { f: frame, size: frame.len(), claimed: false };
    w.walk(linktype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare probe as the wire format's section 1 draws it: IPv6, HbH-PT with 12 MCDs, SRH with one SID and the PT TLV.
    pub fn bare_probe(mcds: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend([0x20, 0x01, 0x0d, 0xb8].iter().chain(&[0u8; 11]).chain(&[1u8])); // src 2001:db8::1
        p.extend([0x20, 0x01, 0x0d, 0xb8].iter().chain(&[0u8; 11]).chain(&[2u8])); // dst 2001:db8::2
        p.extend([43, 4, OPT_PT, 36]);
        let mut stack = [0u8; 36];
        stack[..mcds.len()].copy_from_slice(mcds);
        p.extend(stack);
        p.extend([59, 4, 4, 0, 0, 0, 0, 0]); // SRH: 1 SID + 16-byte TLV = 40 bytes
        p.extend([0x20, 0x01, 0x0d, 0xb8].iter().chain(&[0u8; 11]).chain(&[2u8]));
        p.extend([TLV_PT, 14, 0x00, 0x15, 1, 2, 3, 4, 0, 0, 0, 5, 0, 7, 0, 9]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    #[test]
    fn walks_a_bare_probe() {
        let frame = bare_probe(&[0x03, 0xe0, 0x29]);
        let shape = walk(&frame, 101).unwrap();
        assert_eq!(shape.stack, (44, 36));
        assert_eq!(shape.src_tlv, Some(104));
        assert_eq!(shape.segments, (88, 1));
        assert_eq!(shape.sink, None);
    }

    #[test]
    fn a_bad_opt_data_len_is_malformed() {
        let mut frame = bare_probe(&[]);
        frame[43] = 35;
        assert_eq!(walk(&frame, 101), Err(Stop::Malformed("hbh-pt", "opt data len not a multiple of 3")));
    }

    #[test]
    fn a_cut_probe_is_a_truncated_frame() {
        let frame = bare_probe(&[]);
        assert_eq!(walk(&frame[..frame.len() - 1], 101), Err(Stop::Malformed("srh", "truncated frame")));
        let mut padded = frame.clone();
        padded[5] += 1; // the payload length claims one byte more than the frame holds
        assert_eq!(walk(&padded, 101), Err(Stop::Malformed("ipv6", "truncated frame")));
        assert_eq!(walk(&frame[..30], 101), Err(Stop::NotPt));
    }

    #[test]
    fn other_ethertypes_and_linktypes_are_not_pt() {
        let mut eth = vec![0u8; 12];
        eth.extend([0x08, 0x00]);
        eth.extend(bare_probe(&[]));
        assert_eq!(walk(&eth, LINKTYPE_ETHERNET), Err(Stop::NotPt));
        assert_eq!(walk(&bare_probe(&[]), 7), Err(Stop::NotPt));
        eth[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        assert_eq!(walk(&eth, LINKTYPE_ETHERNET).unwrap().probe, 14);
    }

    #[test]
    fn zero_length_runs_are_told_apart_from_pad1_pt_and_lengths() {
        let plain: Vec<u8> = (0..8).flat_map(|i| [0x1E + (i % 2), 0]).collect();
        assert!(zero_length_plain(&plain));
        for at in 0..16 {
            for value in [0u8, 1, OPT_PT, 0x80, 0xFF] {
                let mut run = plain.clone();
                run[at] = value;
                let expected = if at % 2 == 1 { value == 0 } else { value != 0 && value != OPT_PT };
                assert_eq!(zero_length_plain(&run), expected, "byte {at} = {value}");
            }
        }
    }

    #[test]
    fn a_wrong_pt_tlv_length_is_malformed() {
        let mut frame = bare_probe(&[]);
        frame[105] = 12;
        assert_eq!(walk(&frame, 101), Err(Stop::Malformed("pt-tlv", "length is not 14")));
    }
}
