//! The byte ranges of one object that differ between two points of its history, from the
//! store's record of its clones (`list_snaps`).
//!
//! An object's versions are its clones (oldest first) and its head. Each clone records its
//! *overlap*: the ranges identical in the next newer version. The ranges identical between two
//! versions are therefore the intersection of the overlaps of every clone from the older one
//! up to (not including) the newer one; everything else inside both versions changed. Bytes
//! past the older version's end that the newer one has are data; bytes past the newer
//! version's end that the older one had now read as zeros.

use rbdx_objstore::{ExtentSet, SnapSet};

/// How one object differs between two points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    /// Object ranges to read from the newer point.
    pub data: ExtentSet,
    /// Object ranges that read as zeros at the newer point.
    pub zero: ExtentSet,
    /// True if the object exists at the newer point.
    pub exists_at_to: bool,
}

/// One version of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    /// The clone at this index.
    Clone(usize),
    /// The head.
    Head,
}

/// Returns the version a read at snapshot `snap` (`None`: the head) sees, if any.
fn version_at(set: &SnapSet, snap: Option<u64>) -> Option<Version> {
    let head = set.head_size.map(|_| Version::Head);
    let Some(snap) = snap else {
        return head;
    };
    if snap > set.seq {
        // No write since the snapshot was taken: the head is what it saw.
        return head;
    }
    let index = set.clones.iter().position(|c| c.id.0 >= snap)?;
    let serves = set.clones[index]
        .snaps
        .first()
        .is_some_and(|first| first.0 <= snap);
    serves.then_some(Version::Clone(index))
}

fn size_of(set: &SnapSet, v: Version) -> u64 {
    match v {
        Version::Clone(i) => set.clones[i].size,
        Version::Head => set.head_size.unwrap_or(0),
    }
}

/// Returns how an object with history `set` (`None`: it does not exist at all) differs between
/// snapshot `from` (`None`: before it existed) and `to` (`None`: the head), or `None` if it
/// does not differ.
pub fn changed(set: Option<&SnapSet>, from: Option<u64>, to: Option<u64>) -> Option<Ranges> {
    let set = set?;
    let older = match from {
        Some(_) => version_at(set, from),
        None => None,
    };
    let newer = version_at(set, to);
    match (older, newer) {
        (None, None) => None,
        (Some(a), Some(b)) if a == b => None,
        (None, Some(v)) => Some(Ranges {
            data: ExtentSet::from_range(0, size_of(set, v)),
            zero: ExtentSet::new(),
            exists_at_to: true,
        }),
        (Some(v), None) => Some(Ranges {
            data: ExtentSet::new(),
            zero: ExtentSet::from_range(0, size_of(set, v)),
            exists_at_to: false,
        }),
        (Some(a), Some(b)) => {
            let (old_size, new_size) = (size_of(set, a), size_of(set, b));
            let common = old_size.min(new_size);
            let first = match a {
                Version::Clone(i) => i,
                Version::Head => set.clones.len(),
            };
            let last = match b {
                Version::Clone(j) => j,
                Version::Head => set.clones.len(),
            };
            let mut same = ExtentSet::from_range(0, common);
            for clone in &set.clones[first.min(last)..last] {
                same = same.intersection(&ExtentSet::from_extents(clone.overlap.iter().copied()));
            }
            let mut data = ExtentSet::from_range(0, new_size);
            for e in same.extents() {
                data.subtract(e.offset, e.length);
            }
            let zero = if old_size > new_size {
                ExtentSet::from_range(new_size, old_size - new_size)
            } else {
                ExtentSet::new()
            };
            Some(Ranges {
                data,
                zero,
                exists_at_to: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use rbdx_objstore::{CloneInfo, Extent, SnapId};

    use super::*;

    fn set(clones: Vec<CloneInfo>, seq: u64, head: Option<u64>) -> SnapSet {
        SnapSet {
            seq,
            clones,
            head_size: head,
        }
    }

    fn clone(id: u64, snaps: &[u64], size: u64, overlap: &[(u64, u64)]) -> CloneInfo {
        CloneInfo {
            id: SnapId(id),
            snaps: snaps.iter().map(|&s| SnapId(s)).collect(),
            overlap: overlap.iter().map(|&(o, l)| Extent::new(o, l)).collect(),
            size,
        }
    }

    #[test]
    fn head_written_after_snapshot_differs_outside_the_overlap() {
        let s = set(
            vec![clone(3, &[3], 100, &[(0, 40), (60, 40)])],
            3,
            Some(100),
        );
        let r = changed(Some(&s), Some(3), None).unwrap();
        assert_eq!(r.data, ExtentSet::from_range(40, 20));
        assert!(r.zero.is_empty());
    }

    #[test]
    fn object_untouched_since_the_snapshot_does_not_differ() {
        let s = set(vec![], 2, Some(100));
        assert_eq!(changed(Some(&s), Some(5), None), None);
        assert_eq!(changed(None, Some(5), None), None);
    }

    #[test]
    fn from_creation_the_whole_version_is_data() {
        let s = set(vec![clone(3, &[3], 80, &[])], 3, Some(100));
        let r = changed(Some(&s), None, Some(3)).unwrap();
        assert_eq!(r.data, ExtentSet::from_range(0, 80));
    }

    #[test]
    fn shrunk_object_reports_its_lost_tail_as_zero() {
        let s = set(vec![clone(3, &[3], 100, &[(0, 30)])], 3, Some(30));
        let r = changed(Some(&s), Some(3), None).unwrap();
        assert!(r.data.is_empty());
        assert_eq!(r.zero, ExtentSet::from_range(30, 70));
    }

    #[test]
    fn removed_object_is_zero_and_new_object_is_data() {
        let gone = set(vec![clone(3, &[3], 50, &[])], 3, None);
        let r = changed(Some(&gone), Some(3), None).unwrap();
        assert_eq!(r.zero, ExtentSet::from_range(0, 50));
        assert!(!r.exists_at_to);
        let born = set(vec![], 3, Some(64));
        let r = changed(Some(&born), Some(1), None).unwrap();
        assert_eq!(r.data, ExtentSet::from_range(0, 64));
    }

    #[test]
    fn changes_across_several_clones_accumulate() {
        let s = set(
            vec![
                clone(2, &[2], 100, &[(0, 50)]),
                clone(4, &[3, 4], 100, &[(20, 80)]),
            ],
            4,
            Some(100),
        );
        let r = changed(Some(&s), Some(2), None).unwrap();
        let mut expected = ExtentSet::from_range(0, 20);
        expected.insert(50, 50);
        assert_eq!(r.data, expected);
        let r = changed(Some(&s), Some(3), Some(4)).unwrap_or_default();
        assert!(r.data.is_empty(), "snapshots 3 and 4 share a clone");
    }
}
