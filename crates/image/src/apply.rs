//! What a journaled event does to an image: the one mapping from an event (and, for a
//! maintenance operation, its journaled outcome) to a change, shared by crash replay (which
//! applies an image's own journal to it, without journaling again) and by replay into another
//! image (mirroring, `journal import`), which applies through the image's operations.
//!
//! - Data events are absolute, so applying one twice changes nothing. They are clipped to the
//!   image's size: a write or discard past the end keeps its part inside; a write-same or
//!   compare-and-write that does not fit whole is dropped (it could not have happened).
//! - A maintenance operation changes the image only with the outcome 0 (it happened). One
//!   whose outcome is unknown (`None`) or an error is not applied.
//! - A flush is a flush; an operation's finish and a demote/promote change nothing here.

use bytes::Bytes;

use crate::error::{ErrorKind, Result};
use crate::features::Features;
use crate::image::Image;
use crate::journaling::Event;

/// A change to an image that an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `data` at `offset`.
    Write { offset: u64, data: Bytes },
    /// `[offset, offset + length)` discarded.
    Discard { offset: u64, length: u64 },
    /// `[offset, offset + length)` made to read as zeros.
    WriteZeroes { offset: u64, length: u64 },
    /// `pattern` repeated over `[offset, offset + length)`.
    WriteSame {
        offset: u64,
        length: u64,
        pattern: Bytes,
    },
    /// `data` at `offset` if the image holds `compare` there.
    CompareAndWrite {
        offset: u64,
        compare: Bytes,
        data: Bytes,
    },
    /// A flush.
    Flush,
    /// A maintenance operation that happened.
    Operation(Event),
    /// Nothing.
    Nothing,
}

/// Returns the change `event` makes to an image of `size` bytes; `outcome` is the journaled
/// result of a maintenance operation (`None` if the journal has none).
pub(crate) fn change_of(event: &Event, outcome: Option<i32>, size: u64) -> Change {
    let clip = |offset: u64, length: u64| (offset < size).then(|| length.min(size - offset));
    let fits = |offset: u64, length: u64| clip(offset, length) == Some(length);
    match event {
        Event::Write { offset, data } => match clip(*offset, data.len() as u64) {
            Some(len) => Change::Write {
                offset: *offset,
                data: data.slice(..len as usize),
            },
            None => Change::Nothing,
        },
        Event::Discard { offset, length } => match clip(*offset, *length) {
            Some(length) => Change::Discard {
                offset: *offset,
                length,
            },
            None => Change::Nothing,
        },
        Event::WriteZeroes { offset, length } => match clip(*offset, *length) {
            Some(length) => Change::WriteZeroes {
                offset: *offset,
                length,
            },
            None => Change::Nothing,
        },
        Event::WriteSame {
            offset,
            length,
            pattern,
        } if fits(*offset, *length) => Change::WriteSame {
            offset: *offset,
            length: *length,
            pattern: pattern.clone(),
        },
        Event::CompareAndWrite {
            offset,
            compare,
            data,
        } if fits(*offset, data.len() as u64) => Change::CompareAndWrite {
            offset: *offset,
            compare: compare.clone(),
            data: data.clone(),
        },
        Event::Flush => Change::Flush,
        Event::WriteSame { .. }
        | Event::CompareAndWrite { .. }
        | Event::OpFinish { .. }
        | Event::DemotePromote => Change::Nothing,
        op if outcome == Some(0) => Change::Operation(op.clone()),
        _ => Change::Nothing,
    }
}

impl Image {
    /// Applies a journaled `event` through this image's own operations (so an image with
    /// journaling journals it again), as replaying another image's journal does. `outcome`
    /// is the journaled result of a maintenance operation; only one with outcome 0 is
    /// applied. What is already so (a snapshot that exists, one already gone, a
    /// compare-and-write whose data moved on) counts as applied. Returns true if the event
    /// asked for a change.
    pub async fn apply_event(&self, event: &Event, outcome: Option<i32>) -> Result<bool> {
        let change = change_of(event, outcome, self.size());
        let result = match &change {
            Change::Write { offset, data } => self.write(*offset, data.clone()).await,
            Change::Discard { offset, length } => self.discard(*offset, *length).await,
            Change::WriteZeroes { offset, length } => self.write_zeroes(*offset, *length).await,
            Change::WriteSame {
                offset,
                length,
                pattern,
            } => self.write_same(*offset, *length, pattern).await,
            Change::CompareAndWrite {
                offset,
                compare,
                data,
            } => {
                self.compare_and_write(*offset, compare.clone(), data.clone())
                    .await
            }
            Change::Flush => self.flush().await,
            Change::Operation(op) => self.apply_operation(op).await,
            Change::Nothing => return Ok(false),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::Mismatch => Ok(true),
            Err(e)
                if matches!(change, Change::Operation(_))
                    && matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) =>
            {
                Ok(true)
            }
            other => other.map(|()| true),
        }
    }

    async fn apply_operation(&self, op: &Event) -> Result<()> {
        match op {
            Event::SnapCreate { name } => self.snap_create(name).await.map(|_| ()),
            Event::SnapRemove { name } => self.snap_remove(name).await,
            Event::SnapRename { from, to } => self.snap_rename(from, to).await,
            Event::SnapProtect { name } => self.snap_set_protection(name, true).await,
            Event::SnapUnprotect { name } => self.snap_set_protection(name, false).await,
            Event::SnapRollback { name } => self.snap_rollback(name, &|_, _| {}).await,
            Event::SnapLimit { limit } => self.snap_set_limit(*limit).await,
            Event::Resize { size } => self.resize(*size, true).await,
            Event::Flatten => self.flatten(&|_, _| {}).await,
            Event::UpdateFeatures { features, enabled } => {
                self.update_features(Features(*features), *enabled, &|_, _| {})
                    .await
            }
            Event::MetadataSet { key, value } => self.metadata_set(key, value.clone()).await,
            Event::MetadataRemove { key } => self.metadata_remove(key).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_clipped_to_the_size_and_operations_need_success() {
        let write = Event::Write {
            offset: 6,
            data: Bytes::from_static(b"abcdef"),
        };
        assert_eq!(
            change_of(&write, None, 8),
            Change::Write {
                offset: 6,
                data: Bytes::from_static(b"ab")
            }
        );
        assert_eq!(change_of(&write, None, 6), Change::Nothing);
        let same = Event::WriteSame {
            offset: 4,
            length: 8,
            pattern: Bytes::from_static(b"x"),
        };
        assert_eq!(change_of(&same, None, 8), Change::Nothing);
        let snap = Event::SnapCreate { name: "s".into() };
        assert_eq!(
            change_of(&snap, Some(0), 8),
            Change::Operation(snap.clone())
        );
        assert_eq!(change_of(&snap, Some(-125), 8), Change::Nothing);
        assert_eq!(change_of(&snap, None, 8), Change::Nothing);
        let finish = Event::OpFinish {
            op_tid: 1,
            result: 0,
        };
        assert_eq!(change_of(&finish, Some(0), 8), Change::Nothing);
    }
}
