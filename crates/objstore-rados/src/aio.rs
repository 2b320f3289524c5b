//! librados' asynchronous completions, turned into futures.
//!
//! An operation is handed to librados on the calling thread (submission does not wait for the
//! cluster) and a [`Pending`] travels with it as the completion's argument. librados calls
//! [`complete`] on one of its own threads once the operation is done; that sends the result on
//! a channel the caller awaits and frees everything the operation needed. A caller that stops
//! waiting leaves nothing behind: the completion frees itself when the operation ends.

use std::os::raw::{c_int, c_void};

use rbdx_objstore::{Error, ErrorKind, Result, Subject};
use tokio::sync::oneshot;

use crate::ffi;

/// The result of a finished write operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    /// The operation's return value (negative errno on failure).
    pub(crate) r: i32,
    /// The object's version after the operation.
    pub(crate) version: u64,
    /// The first failing compare-extent step's return value, if any.
    pub(crate) cmpext: Option<i32>,
}

/// What a completion callback owns: the channel to the waiting caller and the per-step return
/// slots librados writes into.
struct Pending {
    done: oneshot::Sender<Done>,
    cmpext_rvals: Box<[c_int]>,
}

/// A completion created but not yet handed to librados with an operation.
pub(crate) struct Completion {
    handle: ffi::rados_completion_t,
    pending: *mut Pending,
}

impl Completion {
    /// Creates a completion; `cmpext_rvals` are the return slots of the operation's
    /// compare-extent steps, kept alive until it ends.
    pub(crate) fn new(cmpext_rvals: Box<[c_int]>) -> (Completion, oneshot::Receiver<Done>) {
        let (done, receiver) = oneshot::channel();
        let pending = Box::into_raw(Box::new(Pending { done, cmpext_rvals }));
        let mut handle: ffi::rados_completion_t = std::ptr::null_mut();
        // SAFETY: `pending` stays valid until `complete` or `Drop` frees it; out-pointer to a
        // local.
        unsafe { ffi::rados_aio_create_completion2(pending.cast(), complete, &mut handle) };
        (Completion { handle, pending }, receiver)
    }

    /// Returns the handle to pass with the operation.
    pub(crate) fn handle(&self) -> ffi::rados_completion_t {
        self.handle
    }

    /// Records that librados accepted the operation: from now on `complete` frees everything.
    pub(crate) fn submitted(self) {
        std::mem::forget(self);
    }
}

impl Drop for Completion {
    /// The operation was never submitted: no callback will come, so free here.
    fn drop(&mut self) {
        // SAFETY: never submitted, so librados holds no other reference and will not call
        // back; both are freed once.
        unsafe {
            ffi::rados_aio_release(self.handle);
            drop(Box::from_raw(self.pending));
        }
    }
}

// SAFETY: the completion and its argument are only touched by the submitting thread before
// submission and by librados' callback after it.
unsafe impl Send for Completion {}

/// The completion callback: reports the result and frees the pending state.
unsafe extern "C" fn complete(handle: ffi::rados_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Pending given at creation, owned by this callback from submission
    // on and freed here once.
    let pending = unsafe { Box::from_raw(arg.cast::<Pending>()) };
    // SAFETY: librados passes the completion it calls back for; it keeps its own reference
    // while the callback runs, so releasing ours here is allowed.
    let (r, version) = unsafe {
        let r = ffi::rados_aio_get_return_value(handle);
        let version = ffi::rados_aio_get_version(handle);
        ffi::rados_aio_release(handle);
        (r, version)
    };
    let cmpext = pending.cmpext_rvals.iter().copied().find(|v| *v < 0);
    // The caller may have stopped waiting; then nobody needs the result.
    let _ = pending.done.send(Done { r, version, cmpext });
}

/// Waits for a submitted operation.
pub(crate) async fn wait(
    receiver: oneshot::Receiver<Done>,
    subject: impl FnOnce() -> Subject,
) -> Result<Done> {
    receiver.await.map_err(|_| {
        Error::new(ErrorKind::Io, subject())
            .with_detail("librados dropped an operation without completing it")
    })
}
