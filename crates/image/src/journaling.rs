//! The hook through which an image with the `journaling` feature logs every change before
//! applying it, and replays what a crash left unapplied.
//!
//! The image layer only knows this trait and the events; the journal itself (objects, entry
//! framing, clients, trimming) lives above it in `rbdx-journal`, whose opener is given with the
//! store ([`crate::Cluster::with_journals`]), as the migration source opener is.
//!
//! # Order of a journaled change
//!
//! 1. `append(event)` returns once the event is durable in the journal;
//! 2. the change is applied to the image;
//! 3. `applied(tid)` records that it no longer needs replaying.
//!
//! A crash between 1 and 3 leaves the event in the journal past the image's commit position;
//! the next holder of the exclusive lock replays it ([`ChangeLog::unapplied`]) before it writes
//! anything itself. Every event replays idempotently: data events are absolute, snapshot
//! events check whether they already happened.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectWrite};

use crate::error::Result;

/// One change to an image, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `[offset, offset + length)` discarded.
    Discard {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// `data` written at `offset`.
    Write {
        /// Image offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// A flush.
    Flush,
    /// `pattern` repeated over `[offset, offset + length)`.
    WriteSame {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
        /// The pattern.
        pattern: Bytes,
    },
    /// `data` written at `offset` if the image held `compare` there.
    CompareAndWrite {
        /// Image offset.
        offset: u64,
        /// The expected bytes.
        compare: Bytes,
        /// The new bytes.
        data: Bytes,
    },
    /// `[offset, offset + length)` made to read as zeros.
    WriteZeroes {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// A snapshot created.
    SnapCreate {
        /// Its name.
        name: String,
    },
    /// A snapshot removed.
    SnapRemove {
        /// Its name.
        name: String,
    },
    /// A snapshot renamed.
    SnapRename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// A snapshot protected.
    SnapProtect {
        /// Its name.
        name: String,
    },
    /// A snapshot unprotected.
    SnapUnprotect {
        /// Its name.
        name: String,
    },
    /// The image rolled back to a snapshot.
    SnapRollback {
        /// Its name.
        name: String,
    },
    /// The snapshot limit set (`None`: removed).
    SnapLimit {
        /// The limit.
        limit: Option<u64>,
    },
    /// The image resized.
    Resize {
        /// The new size.
        size: u64,
    },
    /// The image flattened.
    Flatten,
    /// Features enabled or disabled.
    UpdateFeatures {
        /// The features.
        features: u64,
        /// True for enable.
        enabled: bool,
    },
    /// Image metadata set.
    MetadataSet {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Image metadata removed.
    MetadataRemove {
        /// The key.
        key: String,
    },
    /// Ownership of the image moved between sites (a demote or promote marker).
    DemotePromote,
    /// The operation journaled as entry `op_tid` finished with `result` (0 or a negative
    /// errno). Maintenance operations are journaled as their event, then this.
    OpFinish {
        /// The entry id of the operation's event.
        op_tid: u64,
        /// 0, or the negative errno it failed with.
        result: i32,
    },
}

impl Event {
    /// Returns true for events that change data (replayed by applying them again), false for
    /// maintenance operations and markers.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Event::Discard { .. }
                | Event::Write { .. }
                | Event::WriteSame { .. }
                | Event::CompareAndWrite { .. }
                | Event::WriteZeroes { .. }
                | Event::Flush
        )
    }
}

/// A journal as the image sees it.
#[async_trait]
pub trait ChangeLog: Send + Sync + std::fmt::Debug {
    /// Appends `event`; returns its entry id once it is durable.
    async fn append(&self, event: Event) -> Result<u64>;

    /// Queues `event` now, before returning, with writes to apply once it is written; the
    /// future returns its entry id once it is durable, and whether the writes were applied
    /// (they never are without the entry; the store may commit them with it). The entry is
    /// written even if the future is dropped, and entries get their ids in the order they
    /// are queued.
    fn submit(
        &self,
        event: Event,
        with: Vec<ObjectWrite>,
    ) -> Result<BoxFuture<'static, Result<(u64, bool)>>>;

    /// Records that the event with entry id `tid` is applied to the image.
    async fn applied(&self, tid: u64) -> Result<()>;

    /// Returns the events appended but not recorded as applied, oldest first.
    async fn unapplied(&self) -> Result<Vec<(u64, Event)>>;

    /// Saves the commit position and lets go of the journal.
    async fn close(&self) -> Result<()>;
}

/// Opens, creates and removes the journals of images.
#[async_trait]
pub trait JournalOpener: Send + Sync + std::fmt::Debug {
    /// Opens the journal of image `id` (header in `io`).
    async fn open(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<Arc<dyn ChangeLog>>;

    /// Creates an empty journal for image `id`, laid out as `layout` asks (the opener's
    /// defaults for what it leaves unset).
    async fn create(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
        layout: &JournalLayout,
    ) -> Result<()>;

    /// Removes the journal of image `id` and all its entries.
    async fn remove(&self, store: Arc<dyn ObjectStore>, io: IoCtx, id: &str) -> Result<()>;

    /// Returns how the journal of image `id` is laid out, every field set.
    async fn layout(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<JournalLayout>;
}

/// How a new journal is laid out, as `rbd create --journal-*` asks; what is unset takes the
/// journal implementation's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalLayout {
    /// Data objects hold up to 2^order bytes.
    pub order: Option<u8>,
    /// Data objects written round-robin per object set.
    pub splay_width: Option<u64>,
    /// Pool of the data objects, by id (default: the image's pool).
    pub pool: Option<u64>,
}

/// The largest write journaled as one event; larger writes are journaled (and applied) in
/// pieces of this size.
pub(crate) const MAX_EVENT_WRITE: usize = 8 << 20;

impl crate::image::Inner {
    /// Returns the open journal, if this handle holds the lock of a journaling image.
    pub(crate) async fn change_log(&self) -> Option<Arc<dyn ChangeLog>> {
        // Most images do not journal: answer them without taking the lock.
        if !self.journal_open.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.journal.lock().await.clone()
    }

    /// Appends the event `make` builds, if the image journals; returns its entry id.
    pub(crate) async fn log(&self, make: impl FnOnce() -> Event) -> Result<Option<u64>> {
        match self.change_log().await {
            Some(log) => Ok(Some(log.append(make()).await?)),
            None => Ok(None),
        }
    }

    /// Records that the event with entry id `tid` (if any) is applied.
    pub(crate) async fn log_applied(&self, tid: Option<u64>) -> Result<()> {
        if let (Some(tid), Some(log)) = (tid, self.change_log().await) {
            log.applied(tid).await?;
        }
        Ok(())
    }

    /// Runs maintenance operation `op` journaled as `event` followed by its outcome (an
    /// op-finish event), when the image journals. Takes the exclusive lock first, so that the
    /// journal is open when the event is appended.
    pub(crate) async fn log_op<T>(
        &self,
        event: Event,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if !self.header().features.contains(crate::Features::JOURNALING)
            || self.read_only
            || self.replica
        {
            return op.await;
        }
        crate::lock::ensure_lock(self).await?;
        // Operations that see the data quiesce before they are journaled: every write
        // journaled before the event is applied before the operation, and none journaled
        // after it is. (Flatten and the header-only operations run beside writes.)
        let quiesces = matches!(
            event,
            Event::SnapCreate { .. }
                | Event::SnapRemove { .. }
                | Event::SnapRollback { .. }
                | Event::Resize { .. }
                | Event::UpdateFeatures { .. }
        );
        let gate = if quiesces { self.quiesce().await } else { None };
        let tid = self.log(|| event).await?;
        let result = if gate.is_some() {
            Self::inside_quiesce(op).await
        } else {
            op.await
        };
        drop(gate);
        if let Some(tid) = tid {
            let code = match &result {
                Ok(_) => 0,
                Err(e) => -e.errno(),
            };
            let finish = self
                .log(|| Event::OpFinish {
                    op_tid: tid,
                    result: code,
                })
                .await?;
            self.log_applied(Some(tid)).await?;
            self.log_applied(finish).await?;
        }
        result
    }
}
