//! A small deterministic generator (SplitMix64), so a child process and its parent can produce
//! the same random batches from a seed.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Returns true with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// Returns `len` bytes that are mostly a repeated tag, so mismatches are easy to spot.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let tag = (self.range(1, 255)) as u8;
        let mut out = vec![tag; len];
        for b in out.iter_mut().step_by(509) {
            *b = self.next_u64() as u8;
        }
        out
    }
}
