//! Sparse object content: 4 KiB blocks in a map, absent blocks are holes.

use std::collections::BTreeMap;

use bytes::Bytes;

const BLOCK: u64 = 4096;

/// Sparse bytes. Blocks are shared between versions (clones) by reference counting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Blocks {
    map: BTreeMap<u64, Bytes>,
}

impl Blocks {
    fn block(&self, index: u64) -> Vec<u8> {
        match self.map.get(&index) {
            Some(b) => b.to_vec(),
            None => vec![0; BLOCK as usize],
        }
    }

    /// Writes `data` at `offset`.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let n = rest.len().min(BLOCK as usize - within);
            let mut block = self.block(index);
            block[within..within + n].copy_from_slice(&rest[..n]);
            self.map.insert(index, Bytes::from(block));
            pos += n as u64;
            rest = &rest[n..];
        }
    }

    /// Makes `[offset, offset + length)` zero: whole blocks become holes.
    pub(crate) fn zero(&mut self, offset: u64, length: u64) {
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let index = pos / BLOCK;
            let within = pos % BLOCK;
            let n = (end - pos).min(BLOCK - within);
            if within == 0 && n == BLOCK {
                self.map.remove(&index);
            } else if self.map.contains_key(&index) {
                let mut block = self.block(index);
                block[within as usize..(within + n) as usize].fill(0);
                self.map.insert(index, Bytes::from(block));
            }
            pos += n;
        }
    }

    /// Drops everything at or after `size`.
    pub(crate) fn truncate(&mut self, size: u64) {
        let first_gone = size.div_ceil(BLOCK);
        self.map.split_off(&first_gone);
        if !size.is_multiple_of(BLOCK) {
            let index = size / BLOCK;
            if self.map.contains_key(&index) {
                let mut block = self.block(index);
                block[(size % BLOCK) as usize..].fill(0);
                self.map.insert(index, Bytes::from(block));
            }
        }
    }

    /// Reads `[offset, end)`, zeros in holes.
    pub(crate) fn read(&self, offset: u64, end: u64) -> Vec<u8> {
        let mut out = vec![0u8; end.saturating_sub(offset) as usize];
        for (&index, block) in self.map.range(offset / BLOCK..end.div_ceil(BLOCK)) {
            let start = index * BLOCK;
            let lo = start.max(offset);
            let hi = (start + BLOCK).min(end);
            if lo < hi {
                out[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&block[(lo - start) as usize..(hi - start) as usize]);
            }
        }
        out
    }

    /// Returns the allocated runs within `[offset, end)`.
    pub(crate) fn allocated(&self, offset: u64, end: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &index in self
            .map
            .range(offset / BLOCK..end.div_ceil(BLOCK))
            .map(|(i, _)| i)
        {
            let lo = (index * BLOCK).max(offset);
            let hi = (index * BLOCK + BLOCK).min(end);
            if lo >= hi {
                continue;
            }
            match runs.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => runs.push((lo, hi)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_of_whole_block_makes_a_hole() {
        let mut b = Blocks::default();
        b.write(0, &[1u8; 8192]);
        b.zero(0, 4096);
        assert_eq!(b.allocated(0, 8192), vec![(4096, 8192)]);
        assert_eq!(b.read(4090, 4100), [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn truncate_zeroes_partial_tail() {
        let mut b = Blocks::default();
        b.write(0, &[7u8; 5000]);
        b.truncate(10);
        b.write(20, &[1]);
        assert_eq!(
            &b.read(0, 21)[8..],
            &[7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }
}
