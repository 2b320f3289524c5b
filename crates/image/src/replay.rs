//! Journal replay: when a handle takes the exclusive lock of a journaling image, it opens the
//! journal and brings the image up to date with what the journal holds past the image's
//! commit position, before it writes anything itself.
//!
//! Data events are applied again (they are absolute, so applying one twice changes nothing;
//! extents past the current size are clipped, a failed compare-and-write is skipped).
//! Maintenance operations are atomic header changes of their own, so replay does not run them
//! again: an operation whose outcome the journal lacks gets one, found by looking at the
//! header (a snapshot that exists was created, a size that matches was set), so that readers
//! of the journal (mirroring) learn whether it happened.

use std::collections::HashSet;

use crate::apply::{Change, change_of};
use crate::error::{ErrorKind, Result};
use crate::features::Features;
use crate::header::Protection;
use crate::image::Inner;
use crate::journaling::Event;

/// The result recorded for an operation the journal shows as started but not finished, and
/// the image shows was not done.
const CANCELED: i32 = -125;
/// The result recorded for an interrupted rollback (it may have been partly done).
const INTERRUPTED: i32 = -4;

impl Inner {
    /// Opens the journal of a journaling image and replays it; called on taking the lock.
    pub(crate) async fn open_journal(&self) -> Result<()> {
        if !self.header().features.contains(Features::JOURNALING) || self.replica {
            return Ok(());
        }
        let opener = self.cluster.require_journals()?;
        let log = opener
            .open(self.store.clone(), self.io.clone(), &self.id)
            .await?;
        let pending = log.unapplied().await?;
        let finished: HashSet<u64> = pending
            .iter()
            .filter_map(|(_, e)| match e {
                Event::OpFinish { op_tid, .. } => Some(*op_tid),
                _ => None,
            })
            .collect();
        if !pending.is_empty() {
            tracing::info!(
                "image {}: replaying {} journal entries",
                self.name,
                pending.len()
            );
        }
        for (tid, event) in pending {
            if event.is_data() {
                self.replay_data(&event).await?;
            } else if !matches!(event, Event::OpFinish { .. } | Event::DemotePromote)
                && !finished.contains(&tid)
            {
                let result = self.outcome_of(&event);
                let finish = log
                    .append(Event::OpFinish {
                        op_tid: tid,
                        result,
                    })
                    .await?;
                log.applied(finish).await?;
            }
            log.applied(tid).await?;
        }
        *self.journal.lock().await = Some(log);
        self.journal_open
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Lets go of the journal (saving the commit position); called on releasing the lock.
    pub(crate) async fn close_journal(&self) {
        self.journal_open
            .store(false, std::sync::atomic::Ordering::Release);
        let log = self.journal.lock().await.take();
        if let Some(log) = log
            && let Err(e) = log.close().await
        {
            tracing::warn!("closing the journal of image {}: {e}", self.name);
        }
    }

    /// Applies a data event again, within the current size, without journaling it again
    /// (the change is [`crate::apply::change_of`]'s, as for any replay).
    async fn replay_data(&self, event: &Event) -> Result<()> {
        match change_of(event, None, self.head_size()) {
            Change::Write { offset, data } => self.write_unlogged(offset, data).await?,
            Change::Discard { offset, length } | Change::WriteZeroes { offset, length } => {
                self.discard_unlogged(offset, length).await?;
            }
            Change::WriteSame {
                offset,
                length,
                pattern,
            } => self.write_same_unlogged(offset, length, &pattern).await?,
            Change::CompareAndWrite {
                offset,
                compare,
                data,
            } => match self.compare_and_write_unlogged(offset, compare, data).await {
                Err(e) if e.kind() == ErrorKind::Mismatch => {}
                other => other?,
            },
            Change::Flush => self.flush_store().await?,
            Change::Operation(_) | Change::Nothing => {}
        }
        Ok(())
    }

    /// Returns 0 if the header shows `event` happened, else a negative errno.
    fn outcome_of(&self, event: &Event) -> i32 {
        let h = self.header();
        let snap = |name: &str| h.snapshot_by_name(name);
        let done = match event {
            Event::SnapCreate { name } => snap(name).is_some(),
            Event::SnapRemove { name } => snap(name).is_none(),
            Event::SnapRename { from, to } => snap(to).is_some() && snap(from).is_none(),
            Event::SnapProtect { name } => {
                snap(name).is_some_and(|s| s.protection == Protection::Protected)
            }
            Event::SnapUnprotect { name } => {
                snap(name).is_some_and(|s| s.protection == Protection::Unprotected)
            }
            Event::SnapLimit { limit } => h.snap_limit == *limit,
            Event::Resize { size } => h.size == *size,
            Event::Flatten => h.parent.is_none(),
            Event::UpdateFeatures { features, enabled } => {
                h.features.contains(Features(*features)) == *enabled
            }
            Event::MetadataSet { key, value } => h.metadata.get(key) == Some(value),
            Event::MetadataRemove { key } => !h.metadata.contains_key(key),
            Event::SnapRollback { .. } => return INTERRUPTED,
            _ => true,
        };
        if done { 0 } else { CANCELED }
    }
}
