//! The rows a writer last committed for the objects it writes, so that the next write to one
//! of them can be planned without querying the database.
//!
//! A remembered row is used only under the object's stripe lock, and only while the shared
//! change counters of its stripe and of the store still read what they read right after the
//! commit that wrote it (see [`crate::changes`]). Any other change to the object, by this
//! process or another, begins a change of its stripe or of the whole store first, so a row
//! that passes that check is the row the database holds.

use std::collections::HashMap;

use crate::changes::{Changes, Seen};
use crate::rows::{CloneRow, HeadRow, ObjKey};

/// Rows remembered at most; past it the memory starts over.
const CAPACITY: usize = 4096;

/// What a commit left in the database for one object.
#[derive(Debug)]
struct Remembered {
    seen: Seen,
    head: HeadRow,
    clones: Vec<CloneRow>,
}

/// The writer's remembered rows.
#[derive(Debug, Default)]
pub(crate) struct Heads {
    rows: HashMap<ObjKey, Remembered>,
}

impl Heads {
    /// Takes the rows of `key` (in `stripe`) if nothing may have changed them since they were remembered.
    /// The caller holds the object's stripe lock.
    pub(crate) fn take(
        &mut self,
        key: &ObjKey,
        stripe: u64,
        changes: &Changes,
    ) -> Option<(HeadRow, Vec<CloneRow>)> {
        let remembered = self.rows.remove(key)?;
        changes
            .unchanged_since(stripe, remembered.seen)
            .then_some((remembered.head, remembered.clones))
    }

    /// Remembers the rows a commit just left for `key`. Call it after the commit's change
    /// marks are gone and before the stripe lock is released.
    pub(crate) fn remember(
        &mut self,
        key: &ObjKey,
        stripe: u64,
        changes: &Changes,
        head: HeadRow,
        clones: Vec<CloneRow>,
    ) {
        let Some(seen) = changes.seen(stripe) else {
            return;
        };
        if self.rows.len() >= CAPACITY {
            self.rows.clear();
        }
        self.rows
            .insert(key.clone(), Remembered { seen, head, clones });
    }
}
