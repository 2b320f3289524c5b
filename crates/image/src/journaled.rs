//! Journaled data changes, applied in the background.
//!
//! A write, discard, write-zeroes or write-same to an image that journals returns as soon as
//! its journal entry is durable; the change is then applied by a task of its own, as librbd
//! does, so a journaled write costs about one store operation of latency instead of two.
//! What keeps this safe:
//!
//! - **Order:** the change holds the journal-order locks of its objects from before it is
//!   journaled until it is applied, so changes to one object are applied in journal order,
//!   and readers of those objects in this process wait for it (they see their own writes).
//! - **Crashes:** an acknowledged change is in the journal; if the process dies before it is
//!   applied, the next holder of the lock replays it.
//! - **Callers that stop waiting:** one task journals and applies each change, so a change
//!   whose caller drops its future once it is queued to the journal is still applied, as a
//!   mirror replaying the journal will apply it.
//! - **Quiescing:** the task holds the image's gate (shared), so a snapshot, a resize or
//!   handing the lock over waits until every acknowledged change is applied.
//! - **Memory:** at most [`APPLY_BUDGET`] bytes of changes wait to be applied; more writers
//!   wait for room.
//!
//! Compare-and-write is journaled and applied before it returns: its caller needs the outcome.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedRwLockReadGuard, Semaphore};

use crate::error::Result;
use crate::image::Inner;
use crate::journaling::{ChangeLog, Event};

/// Bytes of acknowledged changes that may wait to be applied.
pub(crate) const APPLY_BUDGET: usize = 64 << 20;
/// Budget units: one per 4 KiB.
const UNIT: u64 = 4096;
/// Attempts at applying a change before leaving it to replay.
const ATTEMPTS: usize = 3;

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
        let inner = self.clone();
        let log = log.clone();
        let gate = gate.clone();
        let (journaled, acknowledged) = tokio::sync::oneshot::channel();
        // One task journals and applies, so a caller that stops waiting cannot leave a
        // journaled change unapplied (the image would lack what a mirror replays).
        tokio::spawn(async move {
            let tid = match log.append(change.event()).await {
                Ok(tid) => {
                    let _ = journaled.send(Ok(()));
                    tid
                }
                Err(e) => {
                    let _ = journaled.send(Err(e));
                    return;
                }
            };
            let mut result = change.apply(&inner).await;
            for _ in 1..ATTEMPTS {
                if result.is_ok() {
                    break;
                }
                result = change.apply(&inner).await;
            }
            match result {
                Ok(()) => {
                    if let Err(e) = log.applied(tid).await {
                        tracing::warn!("image {}: journal entry {tid}: {e}", inner.name);
                    }
                }
                // The entry stays past the commit position: the next holder of the lock
                // replays it.
                Err(e) => tracing::error!(
                    "image {}: applying journal entry {tid} failed ({e}); it will be replayed",
                    inner.name
                ),
            }
            drop(order);
            drop(budget);
            drop(gate);
        });
        acknowledged
            .await
            .map_err(|_| crate::Error::corrupt("the task journaling a change ended unanswered"))?
    }
}
