//! Gathering background applies of small journaled changes into one store batch.
//!
//! A journaled write costs a journal append and, later, an apply. Applied at once, the apply
//! of one write reaches the store just before the next write's append and delays it. Held for
//! up to [`HOLD`], the applies of several small writes are released together, so the store
//! commits them as one batch between appends. Anyone who must wait for a held apply (a writer
//! or reader of the same object, a writer out of budget) releases them at once with
//! [`ApplyBatch::release`]; a snapshot, resize or lock hand-over waits at most [`HOLD`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long the first held apply waits for others to join it.
pub(crate) const HOLD: Duration = Duration::from_millis(1);

/// The applies being held and the signal that releases them.
#[derive(Debug, Default)]
pub(crate) struct ApplyBatch {
    /// True while one held apply keeps time for the others.
    armed: AtomicBool,
    /// Counts releases; a ticket taken before a release is not held after it.
    releases: AtomicU64,
    release: Notify,
    /// Changes being journaled right now.
    journaling: AtomicUsize,
}

/// Counts a change as being journaled while it lives.
#[derive(Debug)]
pub(crate) struct Journaling<'a>(&'a ApplyBatch);

impl Drop for Journaling<'_> {
    fn drop(&mut self) {
        self.0.journaling.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Taken when a change is journaled; lets [`ApplyBatch::wait_turn`] see releases made before
/// the apply began to wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl ApplyBatch {
    /// Counts a change as being journaled until the returned value is dropped; returns with it
    /// the change's ticket if its apply should be held: only when no other change is being
    /// journaled, since with several in flight the store batches their work anyway and holding
    /// applies only adds waiting.
    pub(crate) fn begin(&self) -> (Journaling<'_>, Option<Ticket>) {
        let others = self.journaling.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket(self.releases.load(Ordering::Acquire));
        (Journaling(self), (others == 0).then_some(ticket))
    }

    /// Waits until this apply may run: until [`HOLD`] after the first held apply, or until
    /// someone calls [`ApplyBatch::release`] (after `ticket` was taken).
    pub(crate) async fn wait_turn(&self, ticket: Ticket) {
        // Registered before looking at the counters, so a release in between is not missed.
        let released = self.release.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if self.releases.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if self.armed.swap(true, Ordering::AcqRel) {
            released.await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(HOLD) => {}
            () = &mut released => {}
        }
        self.armed.store(false, Ordering::Release);
        self.release();
    }

    /// Lets every held apply, and every apply of a change journaled so far, run now.
    pub(crate) fn release(&self) {
        self.releases.fetch_add(1, Ordering::AcqRel);
        self.release.notify_waiters();
    }
}
