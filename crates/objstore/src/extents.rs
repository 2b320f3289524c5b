//! Byte extents and sets of them (clone overlaps, allocated ranges).

use std::collections::BTreeMap;

/// A byte range `[offset, offset + length)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

impl Extent {
    /// Creates the extent `[offset, offset + length)`.
    pub fn new(offset: u64, length: u64) -> Self {
        Extent { offset, length }
    }

    /// Returns the first byte after the extent.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// A set of disjoint, non-adjacent byte ranges, kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentSet {
    /// Start -> end (exclusive).
    ranges: BTreeMap<u64, u64>,
}

impl ExtentSet {
    /// Returns the empty set.
    pub fn new() -> Self {
        ExtentSet::default()
    }

    /// Returns the set holding `[offset, offset + length)`.
    pub fn from_range(offset: u64, length: u64) -> Self {
        let mut set = ExtentSet::new();
        set.insert(offset, length);
        set
    }

    /// Builds a set from extents, which may overlap.
    pub fn from_extents(extents: impl IntoIterator<Item = Extent>) -> Self {
        let mut set = ExtentSet::new();
        for e in extents {
            set.insert(e.offset, e.length);
        }
        set
    }

    /// Returns true if the set holds no byte.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Returns the number of bytes in the set.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Returns the extents in increasing order.
    pub fn extents(&self) -> Vec<Extent> {
        self.ranges
            .iter()
            .map(|(&s, &e)| Extent::new(s, e - s))
            .collect()
    }

    /// Adds `[offset, offset + length)`, merging with touching ranges.
    pub fn insert(&mut self, offset: u64, length: u64) {
        if length == 0 {
            return;
        }
        let mut start = offset;
        let mut end = offset.saturating_add(length);
        // Merge a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        // Merge ranges that start inside the new one or right at its end.
        let following: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in following {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `[offset, offset + length)`.
    pub fn subtract(&mut self, offset: u64, length: u64) {
        if length == 0 {
            return;
        }
        let cut_end = offset.saturating_add(length);
        let touched: Vec<(u64, u64)> = self
            .ranges
            .range(..cut_end)
            .filter(|&(_, &e)| e > offset)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touched {
            self.ranges.remove(&s);
            if s < offset {
                self.ranges.insert(s, offset);
            }
            if e > cut_end {
                self.ranges.insert(cut_end, e);
            }
        }
    }

    /// Removes every byte at or after `offset`.
    pub fn truncate(&mut self, offset: u64) {
        self.subtract(offset, u64::MAX - offset);
    }

    /// Returns the bytes present in both sets.
    pub fn intersection(&self, other: &ExtentSet) -> ExtentSet {
        let mut out = ExtentSet::new();
        for (&s, &e) in &self.ranges {
            for (&os, &oe) in other.ranges.range(..e) {
                let lo = s.max(os);
                let hi = e.min(oe);
                if lo < hi {
                    out.insert(lo, hi - lo);
                }
            }
        }
        out
    }

    /// Returns true if every byte of `[offset, offset + length)` is in the set.
    pub fn contains_range(&self, offset: u64, length: u64) -> bool {
        if length == 0 {
            return true;
        }
        match self.ranges.range(..=offset).next_back() {
            Some((_, &e)) => e >= offset.saturating_add(length),
            None => false,
        }
    }
}

impl FromIterator<Extent> for ExtentSet {
    fn from_iter<I: IntoIterator<Item = Extent>>(iter: I) -> Self {
        ExtentSet::from_extents(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(set: &ExtentSet) -> Vec<(u64, u64)> {
        set.extents().iter().map(|e| (e.offset, e.length)).collect()
    }

    #[test]
    fn insert_merges_touching_and_overlapping_ranges() {
        let mut set = ExtentSet::new();
        set.insert(10, 5);
        set.insert(0, 3);
        set.insert(15, 5);
        set.insert(2, 9);
        assert_eq!(ext(&set), vec![(0, 20)]);
    }

    #[test]
    fn subtract_splits_ranges() {
        let mut set = ExtentSet::from_range(0, 100);
        set.subtract(10, 10);
        set.subtract(50, 100);
        assert_eq!(ext(&set), vec![(0, 10), (20, 30)]);
        assert_eq!(set.total(), 40);
    }

    #[test]
    fn intersection_keeps_common_bytes() {
        let a = ExtentSet::from_extents([Extent::new(0, 10), Extent::new(20, 10)]);
        let b = ExtentSet::from_range(5, 20);
        assert_eq!(ext(&a.intersection(&b)), vec![(5, 5), (20, 5)]);
    }

    #[test]
    fn truncate_drops_tail() {
        let mut set = ExtentSet::from_extents([Extent::new(0, 10), Extent::new(20, 10)]);
        set.truncate(25);
        assert_eq!(ext(&set), vec![(0, 10), (20, 5)]);
        assert!(set.contains_range(2, 8));
        assert!(!set.contains_range(8, 4));
    }
}
