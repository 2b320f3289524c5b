//! Self-managed snapshot semantics shared by every backend: when a write keeps a clone, which
//! version a read at a snapshot sees, and how removing a snapshot trims clones.
//!
//! An object has a head (its current content, possibly absent) and zero or more clones. Each
//! clone is identified by the snapshot sequence of the write that created it and covers the
//! snapshots (its `snaps`) taken since the previous clone. Each clone also records its
//! *overlap*: the byte ranges that are identical in the next newer version (the next clone, or
//! the head for the newest clone). Writes to the head subtract what they change from the newest
//! clone's overlap, exactly as RADOS does, which is what makes cheap snapshot diffs possible.

use crate::extents::{Extent, ExtentSet};
use crate::types::{SnapContext, SnapId};

/// One clone of an object, as reported by [`crate::ObjectStore::list_snaps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneInfo {
    /// The clone id: the snapshot sequence of the write that kept it.
    pub id: SnapId,
    /// The snapshots this clone serves, in increasing order.
    pub snaps: Vec<SnapId>,
    /// Byte ranges identical in the next newer version (the next clone, or the head).
    pub overlap: Vec<Extent>,
    /// Size of the object in this clone.
    pub size: u64,
}

/// The snapshot history of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapSet {
    /// The newest snapshot sequence any write to this object carried.
    pub seq: u64,
    /// Clones in increasing id order.
    pub clones: Vec<CloneInfo>,
    /// Size of the head, or `None` if the head does not exist.
    pub head_size: Option<u64>,
}

/// Clone metadata as backends keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneMeta {
    /// The clone id.
    pub id: SnapId,
    /// The snapshots served, increasing.
    pub snaps: Vec<SnapId>,
    /// Ranges identical in the next newer version.
    pub overlap: ExtentSet,
    /// Size of the object in this clone.
    pub size: u64,
}

impl CloneMeta {
    /// Returns the public description of this clone.
    pub fn info(&self) -> CloneInfo {
        CloneInfo {
            id: self.id,
            snaps: self.snaps.clone(),
            overlap: self.overlap.extents(),
            size: self.size,
        }
    }
}

/// Returns the snapshots a write with `snapc` must preserve in a new clone of an object whose
/// snapshot sequence is `seq`: those newer than `seq` that are not removed, in increasing order.
/// An empty result means no clone is kept.
pub fn snaps_for_new_clone(
    seq: u64,
    snapc: &SnapContext,
    is_removed: impl Fn(SnapId) -> bool,
) -> Vec<SnapId> {
    let mut snaps: Vec<SnapId> = snapc
        .snaps
        .iter()
        .copied()
        .filter(|s| s.0 > seq && !is_removed(*s))
        .collect();
    snaps.reverse();
    snaps
}

/// Which version of an object a read at a snapshot sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadTarget {
    /// The head.
    Head,
    /// The clone at this index of the clone list.
    Clone(usize),
    /// The object did not exist at that snapshot.
    Absent,
}

/// Resolves a read at `snap` of an object with snapshot sequence `seq`, clones `clones`
/// (increasing ids) and a head that exists or not.
pub fn resolve_read(seq: u64, clones: &[CloneMeta], head_exists: bool, snap: SnapId) -> ReadTarget {
    if snap.0 > seq {
        return if head_exists {
            ReadTarget::Head
        } else {
            ReadTarget::Absent
        };
    }
    match clones.iter().position(|c| c.id >= snap) {
        Some(index)
            if clones[index]
                .snaps
                .first()
                .is_some_and(|first| *first <= snap) =>
        {
            ReadTarget::Clone(index)
        }
        _ => ReadTarget::Absent,
    }
}

/// Records that the head changed in `changed` (and, with `truncated_to`, lost everything from
/// that offset on): the newest clone no longer overlaps there.
pub fn note_head_change(clones: &mut [CloneMeta], changed: &ExtentSet, truncated_to: Option<u64>) {
    if let Some(newest) = clones.last_mut() {
        for e in changed.extents() {
            newest.overlap.subtract(e.offset, e.length);
        }
        if let Some(size) = truncated_to {
            newest.overlap.truncate(size);
        }
    }
}

/// Removes `snap` from every clone; clones left serving no snapshot are dropped and their
/// overlap folded into the next older clone. Returns the ids of the dropped clones.
pub fn trim_snap(clones: &mut Vec<CloneMeta>, snap: SnapId) -> Vec<SnapId> {
    let mut dropped = Vec::new();
    let mut index = 0;
    while index < clones.len() {
        clones[index].snaps.retain(|s| *s != snap);
        if clones[index].snaps.is_empty() {
            let gone = clones.remove(index);
            if index > 0 {
                let older = &mut clones[index - 1];
                older.overlap = older.overlap.intersection(&gone.overlap);
            }
            dropped.push(gone.id);
        } else {
            index += 1;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone(id: u64, snaps: &[u64], size: u64) -> CloneMeta {
        CloneMeta {
            id: SnapId(id),
            snaps: snaps.iter().map(|s| SnapId(*s)).collect(),
            overlap: ExtentSet::from_range(0, size),
            size,
        }
    }

    #[test]
    fn new_clone_covers_only_snaps_newer_than_seq_and_not_removed() {
        let snapc = SnapContext::from_snaps([SnapId(2), SnapId(5), SnapId(7)]);
        let snaps = snaps_for_new_clone(2, &snapc, |s| s == SnapId(5));
        assert_eq!(snaps, vec![SnapId(7)]);
        assert!(snaps_for_new_clone(7, &snapc, |_| false).is_empty());
    }

    #[test]
    fn read_resolves_to_the_oldest_clone_covering_the_snap() {
        let clones = vec![clone(3, &[2, 3], 10), clone(6, &[5, 6], 10)];
        assert_eq!(resolve_read(8, &clones, true, SnapId(9)), ReadTarget::Head);
        assert_eq!(
            resolve_read(8, &clones, true, SnapId(2)),
            ReadTarget::Clone(0)
        );
        assert_eq!(
            resolve_read(8, &clones, true, SnapId(5)),
            ReadTarget::Clone(1)
        );
        assert_eq!(
            resolve_read(8, &clones, true, SnapId(4)),
            ReadTarget::Absent
        );
        assert_eq!(
            resolve_read(8, &clones, true, SnapId(7)),
            ReadTarget::Absent
        );
        assert_eq!(
            resolve_read(8, &clones, false, SnapId(9)),
            ReadTarget::Absent
        );
    }

    #[test]
    fn trimming_folds_overlap_into_older_clone() {
        let mut clones = vec![clone(3, &[3], 10), clone(6, &[6], 10)];
        clones[0].overlap = ExtentSet::from_range(0, 6);
        clones[1].overlap = ExtentSet::from_range(4, 6);
        let dropped = trim_snap(&mut clones, SnapId(6));
        assert_eq!(dropped, vec![SnapId(6)]);
        assert_eq!(clones[0].overlap.extents(), vec![Extent::new(4, 2)]);
    }

    #[test]
    fn head_change_cuts_newest_overlap() {
        let mut clones = vec![clone(3, &[3], 100)];
        note_head_change(&mut clones, &ExtentSet::from_range(10, 10), Some(50));
        assert_eq!(
            clones[0].overlap.extents(),
            vec![Extent::new(0, 10), Extent::new(20, 30)]
        );
    }
}
