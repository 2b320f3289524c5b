//! The `rados` object-store backend of rbdx: images in a real Ceph cluster.
//!
//! [`RadosStore`] implements [`rbdx_objstore::ObjectStore`] on librados: pools, namespaces,
//! atomic write operations, compound reads, self-managed snapshots, watch/notify, advisory
//! locks (`cls_lock`) and the monitors' config-key store. It links Debian's `librados-dev`
//! and, for the few calls the C API lacks, a small C++ shim over `libradospp-dev`.
//!
//! ```no_run
//! use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt};
//! use rbdx_objstore_rados::{RadosConfig, RadosStore};
//!
//! # async fn demo() -> rbdx_objstore::Result<()> {
//! let store = RadosStore::connect(RadosConfig::from_ceph_conf("/etc/ceph/ceph.conf")).await?;
//! let pool = store.pool_lookup("rbd").await?;
//! let data = store.read(&IoCtx::new(pool.id), "rbd_directory", 0, None).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod aio;
mod backend;
mod cls_lock;
mod cluster;
mod config;
mod config_keys;
mod errors;
mod ffi;
mod listing;
mod locks;
mod namespaces;
mod pools;
mod readop;
mod shim_reader;
mod store;
mod watch;
mod writeop;

pub use backend::RadosBackend;
pub use config::RadosConfig;
pub use store::RadosStore;
