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
    fn zero_detection_sees_the_last_byte() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        v[4098] = 1;
        assert!(!is_zero(&v));
    }
}
