//! The write journal of images with the `journaling` feature: every change is appended here,
//! durable, before it is applied to the image; after a crash the next writer replays what
//! was not applied; mirroring reads the same entries to replay them on another site.
//!
//! - [`entry`]: how an entry is framed in a data object (magic, ids, length, CRC-32C; a torn
//!   tail is detected and ignored).
//! - [`event`]: how an image event is encoded in an entry.
//! - [`header`]: the journal header: layout, object sets, clients with commit positions, tags.
//! - [`Journal`]: creating, appending (batched, round-robin over the splay width), reading in
//!   order ([`Journal::replay_from`]), clients, tags and trimming.
//! - [`ImageJournal`] / [`RbdxJournals`]: the journal as the image layer's
//!   [`rbdx_image::journaling::ChangeLog`]; [`opener`] (or [`cluster`]) gives it to a store's
//!   images.
//!
//! Objects: `journal.<image id>` (the header, next to the image header) and
//! `journal_data.<pool id>.<image id>.<object number>`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn rbdx_objstore::ObjectStore>, io: rbdx_objstore::IoCtx) -> rbdx_image::Result<()> {
//! use futures::TryStreamExt as _;
//! let journal = rbdx_journal::Journal::open(store, io, "1234abcd").await?;
//! let mut entries = std::pin::pin!(journal.replay_from(None));
//! while let Some((position, entry)) = entries.try_next().await? {
//!     let (event, _) = rbdx_journal::event::decode(&entry.data)?;
//!     println!("{} {}", position.entry_tid, rbdx_journal::event::name(&event));
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod apply;
mod commits;
pub mod entry;
pub mod event;
mod follow;
pub mod header;
mod hook;
mod journal;

use std::sync::Arc;

pub use apply::{Applier, apply_event, apply_events};
pub use follow::{FollowOptions, FollowStop, Follower};
pub use hook::{ImageJournal, RbdxJournals};
pub use journal::{Appended, IMAGE_CLIENT, Journal, JournalOptions};

/// Returns the journal implementation to give a store's images
/// ([`rbdx_image::Cluster::with_journals`]), laid out by default as [`JournalOptions`] says.
pub fn opener() -> Arc<dyn rbdx_image::journaling::JournalOpener> {
    Arc::new(RbdxJournals::default())
}

/// Returns `store` with rbdx journals and live migration sources: what tools that do not
/// import from external sources need.
pub fn cluster(store: Arc<dyn rbdx_objstore::ObjectStore>) -> rbdx_image::Cluster {
    rbdx_image::Cluster::new(store).with_journals(opener())
}
