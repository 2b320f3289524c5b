//! The object-store contract of rbdx.
//!
//! rbdx stores images as objects, the way Ceph RBD stores them in RADOS. This crate defines
//! what a store must do ([`ObjectStore`], whose documentation states the contract), the types
//! it speaks in, the in-memory reference backend ([`MemoryStore`]) and, behind the `testkit`
//! feature, the conformance suite every backend runs ([`testkit`]).
//!
//! ```
//! use bytes::Bytes;
//! use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, ObjectStoreExt, SnapContext, WriteOp};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let pool = store.pool_create("rbd").await?;
//! let io = IoCtx::new(pool);
//! let op = WriteOp::new().write(0, Bytes::from_static(b"hello")).omap_set([("k", "v")]);
//! let version = store.operate(&io, "greeting", &op, &SnapContext::empty()).await?;
//! assert_eq!(store.read(&io, "greeting", 0, None).await?, "hello");
//! assert_eq!(store.stat(&io, "greeting").await?.version, version);
//! # Ok::<(), rbdx_objstore::Error>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs, missing_debug_implementations)]

pub mod digest;
mod error;
mod ext;
pub mod extents;
pub mod lock;
pub mod memory;
pub mod op;
pub mod registry;
pub mod snapset;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;
pub mod validate;
pub mod watch;

pub use error::{Error, ErrorKind, Result, Subject};
pub use ext::ObjectStoreExt;
pub use extents::{Extent, ExtentSet};
pub use lock::{LockInfo, LockKind, LockOptions, LockerInfo};
pub use memory::{MemoryCluster, MemoryStore};
pub use op::{CmpOp, ObjectWrite, ReadOp, ReadOutput, ReadResult, ReadStep, WriteOp, WriteStep};
pub use registry::{BackendConfig, BackendFactory, BackendRegistry};
pub use snapset::{CloneInfo, SnapSet};
pub use store::{ObjectStore, not_applied, operate_in_turn};
pub use types::{
    ClientId, ClientInfo, IoCtx, ListOptions, ListPage, ObjectStat, PoolId, PoolInfo, SnapContext,
    SnapId, limits,
};
pub use watch::{Notification, NotifyAck, NotifyResult, Watch, WatchEvent, WatcherInfo};
