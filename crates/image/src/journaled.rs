//! Journaled data changes, applied in the background.
//!
//! A write, discard, write-zeroes or write-same to an image that journals returns as soon as
//! its journal entry is durable; the change is then applied by a task of its own, as librbd
//! does, so a journaled write costs about one store operation of latency instead of two. A
//! small write into one object that needs no object-map transition and no copy-up goes to the
//! journal with its entry instead, when the store commits groups: the store commits both
//! together, and the task only records it applied. What keeps this safe:
//!
//! - **Order:** the change holds the journal-order locks of its objects from before it is
//!   journaled until it is applied, so changes to one object are applied in journal order,
//!   and readers of those objects in this process wait for it (they see their own writes).
//! - **Crashes:** an acknowledged change is in the journal; if the process dies before it is
//!   applied, the next holder of the lock replays it.
//! - **Callers that stop waiting:** the caller waits for the append itself (its answer then
//!   wakes one task, not two), and a task of its own applies the change. A caller that drops
//!   its future once the change is queued to the journal hands the append and the application
//!   to such a task, so the change is still applied, as a mirror replaying the journal will
//!   apply it.
//! - **Quiescing:** the task holds the image's gate (shared), so a snapshot, a resize or
//!   handing the lock over waits until every acknowledged change is applied.
//! - **Memory:** at most [`APPLY_BUDGET`] bytes of changes wait to be applied; more writers
//!   wait for room.
//!
//! Compare-and-write is journaled and applied before it returns: its caller needs the outcome.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use rbdx_objstore::{ObjectWrite, WriteOp};
use tokio::sync::{OwnedRwLockReadGuard, OwnedSemaphorePermit, Semaphore};

use crate::error::Result;
use crate::image::Inner;
use crate::journaling::{ChangeLog, Event};
use crate::objlocks::ObjectGuard;

/// Bytes of acknowledged changes that may wait to be applied.
pub(crate) const APPLY_BUDGET: usize = 64 << 20;
/// Budget units: one per 4 KiB.
const UNIT: u64 = 4096;
/// Attempts at applying a change before leaving it to replay.
const ATTEMPTS: usize = 3;
/// Largest write given to the journal to commit together with its entry. Larger ones are
/// applied after their entry, as before: the commit's share of their cost is small.
const WITH_ENTRY_MAX: usize = 64 << 10;

/// The semaphore of [`APPLY_BUDGET`].
pub(crate) fn budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(APPLY_BUDGET / UNIT as usize))
}

/// A data change to journal and apply.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Write bytes.
    Write { offset: u64, data: Bytes },
    /// Discard, or make read as zeros (`zeroes`).
    Zero {
        offset: u64,
        length: u64,
        zeroes: bool,
    },
    /// Repeat a pattern.
    Same {
        offset: u64,
        length: u64,
        pattern: Bytes,
    },
}

impl Change {
    fn extent(&self) -> (u64, u64) {
        match self {
            Change::Write { offset, data } => (*offset, data.len() as u64),
            Change::Zero { offset, length, .. } | Change::Same { offset, length, .. } => {
                (*offset, *length)
            }
        }
    }

    fn event(&self) -> Event {
        match self.clone() {
            Change::Write { offset, data } => Event::Write { offset, data },
            Change::Zero {
                offset,
                length,
                zeroes: true,
            } => Event::WriteZeroes { offset, length },
            Change::Zero {
                offset,
                length,
                zeroes: false,
            } => Event::Discard { offset, length },
            Change::Same {
                offset,
                length,
                pattern,
            } => Event::WriteSame {
                offset,
                length,
                pattern,
            },
        }
    }

    async fn apply(&self, inner: &Inner) -> Result<()> {
        match self {
            Change::Write { offset, data } => inner.write_unlogged(*offset, data.clone()).await,
            Change::Zero { offset, length, .. } => inner.discard_unlogged(*offset, *length).await,
            Change::Same {
                offset,
                length,
                pattern,
            } => inner.write_same_unlogged(*offset, *length, pattern).await,
        }
    }

    /// Budget units this change holds while it waits.
    fn cost(&self) -> u32 {
        let bytes = match self {
            Change::Write { data, .. } => data.len() as u64,
            _ => UNIT,
        };
        bytes.div_ceil(UNIT).clamp(1, (APPLY_BUDGET as u64) / UNIT) as u32
    }
}

impl Inner {
    /// Journals `change` and applies it in the background; returns once the journal entry is
    /// durable. `gate` is the caller's shared hold of the image's gate.
    pub(crate) async fn journal_change(
        self: &Arc<Self>,
        log: &Arc<dyn ChangeLog>,
        gate: &Arc<OwnedRwLockReadGuard<()>>,
        change: Change,
    ) -> Result<()> {
        let (offset, length) = change.extent();
        let order = self.journal_order_guard(offset, length).await;
        let budget = self
            .apply_budget
            .clone()
            .acquire_many_owned(change.cost())
            .await
            .map_err(|_| crate::Error::invalid("the image is closing"))?;
        let (with, object) = match self.write_with_entry(&change).await {
            Some((write, object)) => (vec![write], Some(object)),
            None => (Vec::new(), None),
        };
        Queued {
            appended: log.submit(change.event(), with)?,
            application: Some(Application {
                inner: self.clone(),
                log: log.clone(),
                change,
                object,
                holds: (order, budget, gate.clone()),
            }),
        }
        .finish()
        .await
    }

    /// For a small write into one object that needs no object-map transition and no copy-up,
    /// on a store that commits groups: the object write to commit with the journal entry, and
    /// the object's lock (shared), held until the write is done.
    async fn write_with_entry(&self, change: &Change) -> Option<(ObjectWrite, ObjectGuard)> {
        let Change::Write { offset, data } = change else {
            return None;
        };
        if data.len() > WITH_ENTRY_MAX || !self.store.commits_groups() {
            return None;
        }
        let mut extents = self.layout().map(*offset, data.len() as u64).into_iter();
        let (Some(extent), None) = (extents.next(), extents.next()) else {
            return None;
        };
        let object = self.objects.lock_shared(extent.objectno).await;
        if !self.settled(extent.objectno).await {
            return None;
        }
        let write = ObjectWrite {
            io: self.data_io.clone(),
            oid: self.data_oid(extent.objectno),
            op: WriteOp::new().write(extent.offset, data.clone()),
            snapc: self.snapc(),
        };
        Some((write, object))
    }
}

/// What applying a journaled change needs, and the holds it keeps until it is applied.
struct Application {
    inner: Arc<Inner>,
    log: Arc<dyn ChangeLog>,
    change: Change,
    /// The object's lock, shared, when the change was given to the journal to commit with
    /// its entry.
    object: Option<ObjectGuard>,
    holds: (
        Vec<ObjectGuard>,
        OwnedSemaphorePermit,
        Arc<OwnedRwLockReadGuard<()>>,
    ),
}

impl Application {
    /// Applies the change journaled as entry `tid` unless it was `applied` with its entry,
    /// then records it applied.
    async fn run(mut self, tid: u64, applied: bool) {
        let inner = &self.inner;
        // Only a change given to the journal with its entry can have been applied with it.
        // The object's lock goes first, in every case: applying takes it again, and a shared
        // hold is never kept while another is asked for.
        let given = self.object.take().is_some();
        let applied = applied && given;
        let mut result = if applied {
            Ok(())
        } else {
            self.change.apply(inner).await
        };
        for _ in 1..ATTEMPTS {
            if result.is_ok() {
                break;
            }
            result = self.change.apply(inner).await;
        }
        match result {
            Ok(()) => {
                if let Err(e) = self.log.applied(tid).await {
                    tracing::warn!("image {}: journal entry {tid}: {e}", inner.name);
                }
            }
            // The entry stays past the commit position: the next holder of the lock replays
            // it.
            Err(e) => tracing::error!(
                "image {}: applying journal entry {tid} failed ({e}); it will be replayed",
                inner.name
            ),
        }
        drop(self.holds);
    }
}

/// A change queued to the journal whose caller waits for the append. Dropped before the
/// answer (its caller stopped waiting), it hands the append and the application to a task of
/// their own, so a journaled change is never left unapplied (the image would lack what a
/// mirror replays).
struct Queued {
    appended: BoxFuture<'static, Result<(u64, bool)>>,
    application: Option<Application>,
}

impl Queued {
    /// Waits for the append, then has the change applied by a task of its own. The caller
    /// waits itself, so the append's answer wakes only the caller.
    async fn finish(mut self) -> Result<()> {
        let appended = (&mut self.appended).await;
        let application = self.application.take();
        let (tid, applied) = appended?;
        if let Some(application) = application {
            tokio::spawn(application.run(tid, applied));
        }
        Ok(())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let Some(application) = self.application.take() else {
            return;
        };
        let appended = std::mem::replace(&mut self.appended, Box::pin(std::future::pending()));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Ok((tid, applied)) = appended.await {
                        application.run(tid, applied).await;
                    }
                });
            }
            // No runtime to apply it on (it is shutting down): like any task a runtime drops
            // at shutdown, the change is left unapplied, and the commit position may pass its
            // entry.
            Err(_) => tracing::warn!(
                "image {}: a journaled change was left to replay",
                application.inner.name
            ),
        }
    }
}
