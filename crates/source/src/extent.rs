//! Extents of a source: which byte ranges hold data and which read as zeros.

/// What a range of a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Allocated: read it.
    Data,
    /// Reads as zeros: a copy can leave a hole.
    Zero,
}

/// A range of a source and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
    /// Data or zeros.
    pub kind: ExtentKind,
}

impl Extent {
    /// A data extent.
    pub fn data(offset: u64, length: u64) -> Extent {
        Extent {
            offset,
            length,
            kind: ExtentKind::Data,
        }
    }

    /// A zero extent.
    pub fn zero(offset: u64, length: u64) -> Extent {
        Extent {
            offset,
            length,
            kind: ExtentKind::Zero,
        }
    }

    /// Returns the end offset.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Returns true if every byte of `data` is zero (64 bytes at a time, vectorised).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    let body = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body && chunks.remainder().iter().all(|&b| b == 0)
}

/// Returns `(offset, length)` of the runs of `data` made of `block`-sized blocks that are not
/// all zeros (the last block may be shorter); everything else is left out.
pub fn nonzero_runs(data: &[u8], block: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (n, chunk) in data.chunks(block.max(1)).enumerate() {
        if is_zero(chunk) {
            continue;
        }
        let at = n * block.max(1);
        match runs.last_mut() {
            Some((start, len)) if *start + *len == at => *len += chunk.len(),
            _ => runs.push((at, chunk.len())),
        }
    }
    runs
}

/// Merges adjacent extents of the same kind and fills the gaps of `[offset, offset + len)`
/// that `extents` leaves uncovered with `gap` extents.
pub fn normalize(mut extents: Vec<Extent>, offset: u64, len: u64, gap: ExtentKind) -> Vec<Extent> {
    extents.sort_by_key(|e| e.offset);
    let end = offset + len;
    let mut out: Vec<Extent> = Vec::new();
    let mut pos = offset;
    let push = |e: Extent, out: &mut Vec<Extent>| {
        if e.length == 0 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.kind == e.kind && last.end() == e.offset => last.length += e.length,
            _ => out.push(e),
        }
    };
    for e in extents {
        let start = e.offset.max(pos);
        let stop = e.end().min(end);
        if stop <= start {
            continue;
        }
        if start > pos {
            push(
                Extent {
                    offset: pos,
                    length: start - pos,
                    kind: gap,
                },
                &mut out,
            );
        }
        push(
            Extent {
                offset: start,
                length: stop - start,
                kind: e.kind,
            },
            &mut out,
        );
        pos = stop;
    }
    if pos < end {
        push(
            Extent {
                offset: pos,
                length: end - pos,
                kind: gap,
            },
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_fills_gaps_clips_and_merges() {
        let got = normalize(
            vec![
                Extent::data(10, 10),
                Extent::data(20, 5),
                Extent::zero(40, 100),
            ],
            0,
            50,
            ExtentKind::Zero,
        );
        assert_eq!(
            got,
            vec![
                Extent::zero(0, 10),
                Extent::data(10, 15),
                Extent::zero(25, 25)
            ]
        );
    }

    #[test]
    fn zero_blocks_are_skipped_and_runs_merged() {
        let mut data = vec![0u8; 5 * 4096];
        data[4096] = 1;
        data[2 * 4096 + 7] = 2;
        data[4 * 4096 + 4095] = 3;
        assert_eq!(
            nonzero_runs(&data, 4096),
            vec![(4096, 8192), (4 * 4096, 4096)]
        );
        assert!(nonzero_runs(&[0u8; 100], 4096).is_empty());
        assert_eq!(nonzero_runs(&[0, 0, 9], 4096), vec![(0, 3)]);
    }

    #[test]
    fn zero_detection_sees_the_last_byte() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        v[4098] = 1;
        assert!(!is_zero(&v));
    }
}
