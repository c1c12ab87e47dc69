//! TTS shifts set per source address on a live decoder (`--tts-shift auto` learns them one source at a
//! time): an exact-address map looked up before the prefixes, in one hash lookup however many were set.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A multiply-fold of the 16 address bytes from a per-map random seed: several times cheaper per probe than the
/// default SipHash, and the seed keeps crafted source addresses from being chosen to collide.
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        Seeded(RandomState::new().build_hasher().finish() | 1)
    }
}

impl BuildHasher for Seeded {
    type Hasher = AddrHasher;

    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(self.0)
    }
}

#[derive(Default)]
pub struct SourceShifts {
    by_addr: HashMap<[u8; 16], Option<u32>, Seeded>,
}

impl SourceShifts {
    /// `src` decodes with `shift` from now on (None: no hop times).
    pub fn set(&mut self, src: [u8; 16], shift: Option<u32>) {
        self.by_addr.insert(src, shift);
    }

    /// The shift set for exactly `src`, if one was.
    #[inline]
    pub fn get(&self, src: &[u8; 16]) -> Option<Option<u32>> {
        if self.by_addr.is_empty() {
            return None;
        }
        self.by_addr.get(src).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_source_is_found_and_others_are_not() {
        let mut shifts = SourceShifts::default();
        assert_eq!(shifts.get(&[1; 16]), None);
        shifts.set([1; 16], Some(18));
        shifts.set([2; 16], None);
        assert_eq!(shifts.get(&[1; 16]), Some(Some(18)));
        assert_eq!(shifts.get(&[2; 16]), Some(None));
        assert_eq!(shifts.get(&[3; 16]), None);
    }
}
