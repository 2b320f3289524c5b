//! The conformance suite: what every object-store backend must do.
//!
//! Each case is a `pub async fn case(harness: &dyn Harness)` in [`cases`]; a backend runs the
//! whole list from its `tests/conformance.rs` with [`conformance_tests!`](crate::conformance_tests),
//! giving a [`Harness`] that opens sessions on the store under test. Differences between
//! backends are [`Capabilities`], not skipped cases: a backend whose store cannot be shared
//! with other processes runs the multi-process cases with in-process sessions and task
//! cancellation instead of processes and SIGKILL.
//!
//! ```ignore
//! // tests/conformance.rs of a backend
//! rbdx_objstore::conformance_tests!(MyHarness::new());
//!
//! #[test]
//! fn testkit_child() {
//!     rbdx_objstore::testkit::child::child_main(async || MyHarness::open_from_env());
//! }
//! ```

pub mod batches;
pub mod cases;
pub mod child;
pub mod model;
pub mod rng;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, ErrorKind, IoCtx, ObjectStore, PoolId};

pub use child::{SelfExec, Spawner};

/// What differs between backends.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// How long after a process dies its watches and lock holds may still look alive.
    pub dead_session_grace: Duration,
    /// Rounds of the crash case.
    pub crash_rounds: u64,
    /// Increments per process in the contention case.
    pub counter_increments: u64,
    /// How long after a snapshot removal its clones may still be listed (trimming runs in the
    /// background on RADOS).
    pub snap_trim_grace: Duration,
    /// Whether sparse reads leave out the holes inside an object. RADOS promises only that the
    /// extents cover every non-zero byte (an OSD on BlueStore reports holes, one on memstore
    /// answers with one extent that includes the zeros); a backend that reports holes is held
    /// to it.
    pub reports_holes: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            dead_session_grace: Duration::from_secs(2),
            crash_rounds: 50,
            counter_increments: 1000,
            snap_trim_grace: Duration::ZERO,
            reports_holes: true,
        }
    }
}

/// How the suite reaches the store under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens a new client session on the store under test, as a new process would.
    async fn connect(&self) -> Arc<dyn ObjectStore>;

    /// Returns the child-process spawner, if the store can be shared with other processes.
    fn spawner(&self) -> Option<&dyn Spawner>;

    /// Returns the backend's capabilities.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// A pool made for one case, with a name no other case or run uses.
#[derive(Debug)]
pub struct Fixture {
    /// The session that created the pool.
    pub store: Arc<dyn ObjectStore>,
    /// The pool's name.
    pub pool_name: String,
    /// The pool's id.
    pub pool: PoolId,
    /// The default namespace of the pool.
    pub io: IoCtx,
}

/// Returns a pool name unique to this process and call.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tk-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Fixture {
    /// Creates a fresh pool for the case `tag`.
    pub async fn new(harness: &dyn Harness, tag: &str) -> Fixture {
        let store = harness.connect().await;
        let pool_name = unique_name(tag);
        let pool = ok(store.pool_create(&pool_name).await);
        Fixture {
            store,
            pool_name,
            pool,
            io: IoCtx::new(pool),
        }
    }

    /// Removes the pool.
    pub async fn cleanup(self) {
        ok(self.store.pool_remove(&self.pool_name).await);
    }
}

/// Waits until `check` returns true, polling every 100 ms; fails the case with `what` if it is
/// still false after `within`.
pub async fn eventually<F: AsyncFnMut() -> bool>(within: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (waited {within:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns the value of environment variable `var`, which points tests at something outside
/// the repository (a Ceph cluster, say). When it is unset the caller skips its test after this
/// says why and how to set it (`hint`), except under `CI=true`, where it fails instead: a CI
/// run must not pass by testing nothing.
pub fn external(var: &str, hint: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            let why = format!("{var} is not set; {hint}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Unwraps a result, panicking with the error's message.
#[track_caller]
pub fn ok<T>(result: crate::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Checks that a result failed with `kind` and returns the error.
#[track_caller]
pub fn fails<T: std::fmt::Debug>(result: crate::Result<T>, kind: ErrorKind) -> Error {
    match result {
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
        Err(e) if e.kind() == kind => e,
        Err(e) => panic!("expected {kind:?}, got {:?}: {e}", e.kind()),
    }
}

/// Declares one `#[tokio::test]` per conformance case, each with a harness made by `$harness`.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            pools_create_list_lookup_remove,
            pools_reject_bad_names,
            namespaces_create_list_remove,
            config_keys_set_get_list_remove,
            objects_write_read_stat_remove,
            objects_write_full_truncate_zero,
            objects_sparse_read_reports_allocated_extents,
            objects_checksum_digests_chunks,
            objects_extents_match_sparse_read,
            objects_assertions_guard_batches,
            objects_reject_bad_input,
            objects_large_and_unaligned_writes,
            omap_set_get_range_remove_clear,
            xattrs_set_get_remove,
            listing_pages_prefixes_and_namespaces,
            snapshots_preserve_content_at_each_snap,
            snapshots_overlaps_are_exact,
            snapshots_removal_trims_clones,
            snapshots_reject_bad_ids_and_contexts,
            watch_notify_ack_and_timeout,
            watch_of_gone_session_is_dropped,
            locks_exclusive_shared_renew_unlock,
            locks_lease_expires_and_dead_holder_is_broken,
            concurrent_sessions_increment_with_version_retries,
            processes_increment_one_counter,
            processes_killed_mid_batch_leave_whole_batches,
            processes_notify_each_other,
            processes_break_dead_holders_lock
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::testkit::cases::$case(&harness).await;
            }
        )*
    };
}
