//! The image's commit position: the last entry such that it and every entry before it are
//! applied (writes finish out of order).
//!
//! An append's id is known only when its answer comes, and ids follow the order appends are
//! queued in. So the position never passes an append queued earlier whose answer has not come
//! yet: that append's id is lower.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::header::Position;

/// The appends and applications of an open image journal, and the commit position they allow.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    /// Appends submitted whose ids are not known yet, by submission number.
    submitted: BTreeSet<u64>,
    /// The last submission number given (numbers start at 1; 0 marks the entries found
    /// unapplied when the journal was opened, older than any submission).
    last_seq: u64,
    /// Appended, not yet applied: position and submission number, by id.
    pub(crate) outstanding: BTreeMap<u64, (Position, u64)>,
    /// Applied, waiting for an earlier one: position and submission number, by id.
    done: BTreeMap<u64, (Position, u64)>,
    /// Every entry up to this one is applied.
    pub(crate) committed: Option<Position>,
    /// Entries applied since the last save.
    pub(crate) since_save: u64,
    /// When the position was last saved.
    pub(crate) last_save: Option<Instant>,
    /// The object set of the position last saved.
    pub(crate) saved_set: Option<u64>,
}

impl Commits {
    /// Numbers an append about to be submitted; ids follow these numbers.
    pub(crate) fn submit(&mut self) -> u64 {
        self.last_seq += 1;
        self.submitted.insert(self.last_seq);
        self.last_seq
    }

    /// Records the outcome of submission `seq`: its position, or none if it failed.
    pub(crate) fn appended(&mut self, seq: u64, position: Option<Position>) {
        self.submitted.remove(&seq);
        if let Some(p) = position {
            self.outstanding.insert(p.entry_tid, (p, seq));
        }
        self.advance();
    }

    /// Marks entry `tid` applied.
    pub(crate) fn applied(&mut self, tid: u64) {
        if let Some(entry) = self.outstanding.remove(&tid) {
            self.done.insert(tid, entry);
        }
        self.advance();
    }

    fn advance(&mut self) {
        while let Some((&tid, &(pos, seq))) = self.done.first_key_value() {
            if self.outstanding.keys().next().is_some_and(|&o| o < tid) {
                break;
            }
            // An append submitted earlier whose id is not known yet gets a lower id: the
            // commit position must not pass it.
            if self.submitted.first().is_some_and(|&s| s < seq) {
                break;
            }
            self.committed = Some(pos);
            self.done.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tid: u64) -> Position {
        Position {
            object_number: tid % 4,
            tag_tid: 0,
            entry_tid: tid,
        }
    }

    #[test]
    fn the_commit_position_waits_for_an_earlier_append_whose_id_is_not_known_yet() {
        let mut c = Commits::default();
        let first = c.submit();
        let second = c.submit();
        // The second append's answer and its write finish before the first's answer is seen.
        c.appended(second, Some(at(1)));
        c.applied(1);
        assert_eq!(c.committed, None, "entry 0 is appended but not applied");
        c.appended(first, Some(at(0)));
        assert_eq!(c.committed, None);
        c.applied(0);
        assert_eq!(c.committed, Some(at(1)));
    }

    #[test]
    fn a_failed_append_does_not_hold_the_commit_position() {
        let mut c = Commits::default();
        let first = c.submit();
        let second = c.submit();
        c.appended(second, Some(at(1)));
        c.applied(1);
        c.appended(first, None);
        assert_eq!(c.committed, Some(at(1)));
    }

    #[test]
    fn entries_found_at_open_commit_whatever_is_submitted_since() {
        let mut c = Commits::default();
        c.outstanding.insert(5, (at(5), 0));
        let later = c.submit();
        c.applied(5);
        assert_eq!(c.committed, Some(at(5)));
        c.appended(later, Some(at(6)));
        c.applied(6);
        assert_eq!(c.committed, Some(at(6)));
    }
}
