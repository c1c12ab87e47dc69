//! A TPACKET_V3 block of a packet socket's receive ring, decoded in place.
//!
//! The kernel writes frames back to back into a block: each starts with a `struct tpacket3_hdr`
//! (tp_next_offset @0, tp_sec @4, tp_nsec @8, tp_snaplen @12, tp_len @16, tp_status @20, tp_mac @24),
//! its frame `tp_mac` bytes after the header's start, `tp_snaplen` bytes long, and the next header
//! `tp_next_offset` bytes on. Nothing in a header is trusted to stay inside the block: a frame whose
//! header or bytes would reach past the block's end is not read but counted as malformed
//! (`ring: frame outside its block`), and so is every frame after a header that cannot be read (there is
//! no telling where they are). ring.py's pure drain does exactly the same, so both engines count alike.

use crate::core::{Core, Output};

/// Bytes of `struct tpacket3_hdr` read: up to and including tp_mac.
pub const FRAME_HEADER: usize = 26;
/// The malformed counter of a frame the ring's headers place (partly) outside its block.
pub const OUTSIDE: (&str, &str) = ("ring", "frame outside its block");

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One frame of a block: its capture time and its bytes' span in the block; `inside` false when its header
/// or bytes are not all in the block (then nothing of it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFrame {
    pub capture_ns: u64,
    pub start: usize,
    pub end: usize,
    pub inside: bool,
}

/// Walks `count` frames of `block` from the frame header at `at` (an offset in the block).
pub struct Frames<'a> {
    block: &'a [u8],
    at: Option<usize>,
    left: usize,
}

impl<'a> Frames<'a> {
    pub fn new(block: &'a [u8], at: usize, count: usize) -> Self {
        Frames { block, at: Some(at), left: count }
    }

    /// Where the next frame header is, as far as the headers say (None: lost after a broken header).
    pub fn position(&self) -> Option<usize> {
        self.at
    }
}

impl Iterator for Frames<'_> {
    type Item = BlockFrame;

    fn next(&mut self) -> Option<BlockFrame> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let lost = BlockFrame { capture_ns: 0, start: 0, end: 0, inside: false };
        let Some(at) = self.at else { return Some(lost) };
        let b = self.block;
        if at.checked_add(FRAME_HEADER).is_none_or(|end| end > b.len()) {
            self.at = None;
            return Some(lost);
        }
        let next = u32_at(b, at) as usize;
        let capture_ns = u64::from(u32_at(b, at + 4)) * 1_000_000_000 + u64::from(u32_at(b, at + 8));
        let snaplen = u32_at(b, at + 12) as usize;
        let mac = u16::from_ne_bytes([b[at + 24], b[at + 25]]) as usize;
        self.at = Some(at + next);
        let start = at + mac;
        if start + snaplen > b.len() {
            return Some(BlockFrame { capture_ns, start: 0, end: 0, inside: false });
        }
        Some(BlockFrame { capture_ns, start, end: start + snaplen, inside: true })
    }
}

/// Decode `count` frames of `block` from the header at `at` into `out` (indices from `first_index`);
/// the offset of the header after the last one (`block.len()` once a header could not be read).
pub fn decode_block(
    core: &mut Core,
    out: &mut Output,
    block: &[u8],
    at: usize,
    count: usize,
    linktype: u32,
    first_index: u32,
) -> usize {
    let mut frames = Frames::new(block, at, count);
    for (index, frame) in (first_index..).zip(frames.by_ref()) {
        if frame.inside {
            core.decode(out, &block[frame.start..frame.end], frame.capture_ns, linktype, index);
        } else {
            out.frames += 1;
            out.count_malformed(OUTSIDE.0, OUTSIDE.1);
        }
    }
    frames.position().unwrap_or(block.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tests::encapsulated_testbed_probe;
    use crate::core::Format;

    const BLOCK: usize = 4096;
    const FIRST: usize = 48; // after struct tpacket_block_desc

    fn ethernet(packet: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend(packet);
        f
    }

    /// A header at `at`: next offset, time, snaplen, mac; the frame's bytes at `at + mac`.
    fn put(block: &mut [u8], at: usize, next: u32, sec: u32, nsec: u32, mac: u16, frame: &[u8]) {
        block[at..at + 4].copy_from_slice(&next.to_ne_bytes());
        block[at + 4..at + 8].copy_from_slice(&sec.to_ne_bytes());
        block[at + 8..at + 12].copy_from_slice(&nsec.to_ne_bytes());
        block[at + 12..at + 16].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        block[at + 16..at + 20].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        block[at + 24..at + 26].copy_from_slice(&mac.to_ne_bytes());
        let start = at + mac as usize;
        let end = (start + frame.len()).min(block.len());
        block[start..end].copy_from_slice(&frame[..end - start]);
    }

    /// Two probes, a not-PT frame, then a probe whose bytes reach past the block's end.
    fn hand_built() -> (Vec<u8>, Vec<u8>) {
        let probe = ethernet(&encapsulated_testbed_probe());
        let mut block = vec![0u8; BLOCK];
        let step = (80 + probe.len()).next_multiple_of(16) as u32;
        let mut at = FIRST;
        put(&mut block, at, step, 1_700_000_000, 5, 80, &probe);
        at += step as usize;
        put(&mut block, at, step, 1_700_000_001, 6, 80, &probe);
        at += step as usize;
        put(&mut block, at, 128, 1_700_000_002, 7, 80, &ethernet(&[0x60, 0, 0, 0, 0, 0, 17, 64]));
        at += 128;
        let last = BLOCK - 80 - probe.len() / 2;
        put(&mut block, at, (last - at) as u32, 1_700_000_003, 8, 80, &[]);
        put(&mut block, last, 0, 1_700_000_004, 9, 80, &probe); // cut by the block's end
        (block, probe)
    }

    #[test]
    fn walks_the_frames_and_empties_the_one_past_the_end() {
        let (block, probe) = hand_built();
        let frames: Vec<BlockFrame> = Frames::new(&block, FIRST, 5).collect();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0].capture_ns, 1_700_000_000_000_000_005);
        assert_eq!(&block[frames[0].start..frames[0].end], &probe[..]);
        assert_eq!(&block[frames[1].start..frames[1].end], &probe[..]);
        assert_eq!(frames[3].end - frames[3].start, 0);
        assert!(frames[3].inside);
        assert_eq!(frames[4], BlockFrame { capture_ns: 1_700_000_004_000_000_009, start: 0, end: 0, inside: false });
    }

    #[test]
    fn decodes_a_hand_built_block_as_the_frames_one_by_one() {
        let (block, probe) = hand_built();
        let mut core = Core::new(Some(18), &[], Format::Json).unwrap();
        let mut out = Output::default();
        let next = decode_block(&mut core, &mut out, &block, FIRST, 5, 1, 0);
        assert_eq!(next, BLOCK - 80 - probe.len() / 2); // the last header's next offset is 0
        assert_eq!((out.frames, out.decoded(), out.not_pt), (5, 2, 2)); // too short to be IPv6, and empty
        assert_eq!(out.malformed, vec![("ring", "frame outside its block", 1)]); // the cut one
        let mut one_by_one = Output::default();
        for (index, frame) in Frames::new(&block, FIRST, 4).enumerate() {
            let bytes = &block[frame.start..frame.end];
            core.decode(&mut one_by_one, bytes, frame.capture_ns, 1, index as u32);
        }
        assert_eq!(out.data, one_by_one.data);
        assert_eq!(out.records, one_by_one.records);
        assert!(String::from_utf8_lossy(&out.data).contains("\"capture_ns\":1700000001000000006,"));
    }

    #[test]
    fn a_header_past_the_end_loses_the_rest_of_the_block() {
        let (mut block, _) = hand_built();
        block[FIRST..FIRST + 4].copy_from_slice(&(BLOCK as u32).to_ne_bytes()); // the second header: outside
        let mut core = Core::new(None, &[], Format::Json).unwrap();
        let mut out = Output::default();
        assert_eq!(decode_block(&mut core, &mut out, &block, FIRST, 5, 1, 0), BLOCK);
        assert_eq!((out.frames, out.decoded()), (5, 1));
        assert_eq!(out.malformed, vec![("ring", "frame outside its block", 4)]);
        let frames: Vec<BlockFrame> = Frames::new(&block, usize::MAX - 4, 2).collect();
        assert_eq!(frames, vec![BlockFrame { capture_ns: 0, start: 0, end: 0, inside: false }; 2]);
    }
}
