//! Helpers shared by the backend's integration tests.

/// A small deterministic generator (xorshift), so a failing run repeats.
pub struct Rng(pub u64);

impl Rng {
    /// Returns the next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Returns a value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
