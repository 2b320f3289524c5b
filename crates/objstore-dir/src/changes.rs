//! Change counters shared by every process that opens the store, so that a read can trust
//! a head row it remembers without asking the database.
//!
//! The file `changes` holds one 64-bit counter per stripe (the same hash as the stripe
//! locks) and one for the whole store, mapped into every process. A counter packs how many
//! writers are changing objects of its stripe right now (high bits) and how many changes
//! ever began there (low bits). A writer marks the stripes of a batch before its commit and
//! unmarks them after; changes that are not per object (pools, snapshots, locks, garbage)
//! mark the store's counter. A reader remembers a row with the counters it saw before
//! querying it, if no writer was busy then; the row stays good for as long as both counters
//! read the same. A writer killed between marking and unmarking leaves its stripes busy for
//! good: reads of those objects go to the database, which is always right.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::sys;

/// Counters per stripe (as many as stripe locks).
const STRIPES: usize = 1 << 16;
/// Index of the store-wide counter.
const WHOLE: usize = STRIPES;
/// One busy writer, in a counter (the bits below count changes that began).
const BUSY: u64 = 1 << 40;

/// What a reader saw: the store's counter and its stripe's, both with no writer busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    whole: u64,
    stripe: u64,
}

/// The shared counters of one store, mapped into this process.
#[derive(Debug)]
pub(crate) struct Changes {
    map: sys::SharedMap,
}

impl Changes {
    /// Maps the counter file of the store at `root`, creating it if needed.
    pub(crate) fn open(root: &Path) -> io::Result<Changes> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("changes"))?;
        let len = ((STRIPES + 1) * 8) as u64;
        if file.metadata()?.len() < len {
            file.set_len(len)?;
        }
        Ok(Changes {
            map: sys::SharedMap::new(&file, len as usize)?,
        })
    }

    fn counter(&self, index: usize) -> &AtomicU64 {
        &self.map.words()[index]
    }

    /// Returns the counters of `stripe` now, or `None` while a writer is busy there.
    pub(crate) fn seen(&self, stripe: u64) -> Option<Seen> {
        let whole = self.counter(WHOLE).load(Ordering::SeqCst);
        let stripe = self
            .counter(stripe as usize % STRIPES)
            .load(Ordering::SeqCst);
        (whole < BUSY && stripe < BUSY).then_some(Seen { whole, stripe })
    }

    /// Returns true if nothing began to change in `stripe` (or the store) since `seen`.
    /// Call it after reading: it orders the reads before it.
    pub(crate) fn unchanged_since(&self, stripe: u64, seen: Seen) -> bool {
        fence(Ordering::SeqCst);
        self.seen(stripe) == Some(seen)
    }

    /// Marks the given stripes (and, with `whole`, the store) busy until the guard drops.
    pub(crate) fn begin(
        self: &Arc<Self>,
        stripes: impl IntoIterator<Item = u64>,
        whole: bool,
    ) -> Changing {
        let mut indexes: Vec<usize> = stripes.into_iter().map(|s| s as usize % STRIPES).collect();
        if whole {
            indexes.push(WHOLE);
        }
        indexes.sort_unstable();
        indexes.dedup();
        for &i in &indexes {
            self.counter(i).fetch_add(BUSY + 1, Ordering::SeqCst);
        }
        Changing {
            changes: self.clone(),
            indexes,
        }
    }
}

/// Stripes marked busy by a writer; unmarked when dropped.
#[derive(Debug)]
pub(crate) struct Changing {
    changes: Arc<Changes>,
    indexes: Vec<usize>,
}

impl Drop for Changing {
    fn drop(&mut self) {
        for &i in &self.indexes {
            let counter = self.changes.counter(i);
            // One more change counted, one writer fewer (wrapping: the begun count stays
            // below `BUSY` for longer than any store lives).
            counter.fetch_add(1u64.wrapping_sub(BUSY), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_while_busy_and_after() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let changes = Changes::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let other = Arc::new(Changes::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let before = changes.seen(7).unwrap_or_else(|| panic!("idle"));
        {
            let _busy = other.begin([7], false);
            assert_eq!(changes.seen(7), None, "busy elsewhere");
            assert!(!changes.unchanged_since(7, before));
            assert!(changes.seen(8).is_some(), "other stripes stay readable");
        }
        let after = changes.seen(7).unwrap_or_else(|| panic!("idle again"));
        assert_ne!(before, after);
        assert!(changes.unchanged_since(7, after));
        let _whole = other.begin([], true);
        assert_eq!(
            changes.seen(8),
            None,
            "a store-wide change covers every stripe"
        );
    }
}
