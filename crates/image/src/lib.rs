//! Block images on an rbdx object store: the librbd equivalent.
//!
//! An image is a header (`rbd_header.<id>`), data objects (`rbd_data.<id>.<n>`), an optional
//! object map per head and snapshot, and entries in the pool directory, named as RBD's
//! format 2 names them (see [`names`]). [`Images`] creates, lists, renames and removes images
//! of one pool namespace; [`Image`] is an open image: I/O, snapshots, resize.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use rbdx_image::{CreateOptions, Images, OpenOptions};
//! use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
//! let pool = store.pool_create("rbd").await.unwrap();
//! let images = Images::new(store, IoCtx::new(pool));
//! images.create("disk", &CreateOptions::new(16 << 20)).await?;
//! let image = images.open("disk", OpenOptions::default()).await?;
//! image.write(4096, Bytes::from_static(b"hello")).await?;
//! image.snap_create("before").await?;
//! image.write(4096, Bytes::from_static(b"HELLO")).await?;
//! assert_eq!(image.read(4096, 5).await?, "HELLO");
//! let snap = images.open("disk", OpenOptions::default().with_snap(Some("before".into()))).await?;
//! assert_eq!(snap.read(4096, 5).await?, "hello");
//! snap.close().await?;
//! image.close().await?;
//! # Ok::<(), rbdx_image::Error>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod admin;
mod allocation;
mod apply;
pub mod children;
mod clone_v2;
mod cluster;
mod copyup;
mod directory;
mod error;
mod features;
pub mod header;
mod image;
mod io;
mod journaled;
pub mod journaling;
mod layering;
pub mod layout;
mod lock;
mod maintenance;
mod mapview;
mod meta;
pub mod migration;
mod migration_admin;
mod mirror_ops;
pub mod mirroring;
pub mod names;
pub mod objectmap;
mod objlocks;
mod replay;
mod snapshot;
mod trash;
mod write_many;

pub use admin::{CreateOptions, ImageEntry, Images, check_image_name, new_image_id};
pub use allocation::Allocation;
pub use clone_v2::{CloneFormat, new_uuid};
pub use cluster::Cluster;
pub use error::{Error, ErrorKind, Result};
pub use features::{Features, OpFeatures};
pub use header::{Header, ParentSpec, Protection, SnapInfo, SnapNamespace};
pub use image::{Image, OpenOptions};
pub use layering::{ChildInfo, MAX_DEPTH, ParentInfo, nonzero_pieces};
pub use layout::{Layout, ObjectExtent};
pub use maintenance::MapCheck;
pub use mapview::StoredMap;
pub use migration_admin::TargetSnapshot;
pub use objectmap::{ObjectMap, ObjectState};
pub use snapshot::Progress;
pub use trash::{TrashEntry, TrashSource};
