//! The embedded `dir` backend of rbdx: a directory that holds an object store, shared safely
//! by several processes on one machine and crash-safe at any instant.
//!
//! # Layout
//!
//! ```text
//! <dir>/meta.db (+ -wal, -shm)   SQLite: pools, namespaces, config keys, object rows (heads
//!                                 and clones), omap, xattrs, redo intents, sessions, watches,
//!                                 locks, garbage
//! <dir>/object.locks             one byte per stripe; OFD locks serialise writers per object
//! <dir>/clients/<token>.lock     one per open session, flock-ed by its process while it lives
//! <dir>/pools/<pool>/<xx>/<file> object data: sparse files named by never-reused file ids
//! ```
//!
//! # Why these pieces
//!
//! - **Sparse files** keep holes as holes, make 4 MiB object I/O plain `pread`/`pwrite`, and let
//!   `sparse_read` find extents with `SEEK_DATA`/`SEEK_HOLE` instead of reading zeros.
//! - **SQLite (WAL, bundled)** holds all metadata because several processes must use one store
//!   at once; see [`db`](crate) notes in `db.rs`. redb and sled allow one process per file.
//! - **OFD stripe locks** serialise changes to one object across processes and threads and
//!   vanish with a killed process.
//!
//! # Crash atomicity
//!
//! A batch becomes visible in exactly one SQLite commit. Data it writes goes either into a new
//! private file that the commit switches to, or into a redo intent recorded in the same commit
//! and applied after it (see `intent.rs`); readers apply recorded intents themselves and
//! writers replay them, so a process killed at any instant leaves each object as before or as
//! after each batch. Sessions of dead processes are reaped on the next open (and periodically):
//! their intents replayed, their uncommitted files deleted, their watches dropped.
//!
//! # Durability
//!
//! Commits survive a killed process at once. [`ObjectStore::flush`](rbdx_objstore::ObjectStore::flush)
//! syncs the files this handle wrote, their directories and the SQLite WAL, so everything
//! completed before it survives power loss; only then are replaced files deleted. Changes made
//! after the last flush may be lost by a power loss, and data overwritten in place after it
//! may be partly old and partly new, as with a disk's volatile write cache.
//!
//! ```
//! use bytes::Bytes;
//! use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt};
//! use rbdx_objstore_dir::DirStore;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = DirStore::open(dir.path())?;
//! let io = IoCtx::new(store.pool_create("rbd").await?);
//! store.write_full(&io, "hello", Bytes::from_static(b"world")).await?;
//! store.flush().await?;
//! assert_eq!(store.read(&io, "hello", 0, None).await?, "world");
//! # Ok::<(), rbdx_objstore::Error>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod admin;
mod backend;
mod buffers;
mod changes;
mod db;
mod desk;
mod files;
mod heads;
mod intent;
mod locks;
pub mod notify;
mod plan;
mod read;
mod reap;
mod recycle;
mod rows;
mod session;
mod staged;
mod store;
mod sys;
mod watch;
mod writer;

pub use backend::DirBackend;
pub use store::{DirOptions, DirStore};
/// Sparse-file helper shared with the command line's import: the allocated ranges of a file.
pub use sys::data_ranges;

/// Entry points for the fuzz targets in `fuzz/`: each feeds untrusted bytes to one decoder.
/// Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a redo-intent record and, if it decodes, applies it to a buffer.
    pub fn intent(bytes: &[u8]) {
        if let Ok(intent) = crate::intent::Intent::decode(bytes) {
            let mut buf = vec![0u8; 4096];
            intent.overlay(&mut buf, 0);
            let _ = intent.encode();
        }
    }

    /// Decodes a notify frame and re-encodes it, checking the round trip.
    pub fn notify_frame(bytes: &[u8]) {
        if let Ok(frame) = crate::notify::Frame::decode(bytes) {
            let again = crate::notify::Frame::decode(&frame.encode());
            assert_eq!(
                again.ok(),
                Some(frame),
                "a decoded frame re-encodes to itself"
            );
        }
    }
}
