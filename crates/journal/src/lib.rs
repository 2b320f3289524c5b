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
//!   [`rbdx_image::journaling::ChangeLog`]; [`install`] makes images of this process use it.
//!
//! Objects: `journal.<image id>` (the header, next to the image header) and
//! `journal_data.<pool id>.<image id>.<object number>`.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn rbdx_objstore::ObjectStore>, io: rbdx_objstore::IoCtx) -> rbdx_image::Result<()> {
//! use futures::TryStreamExt as _;
//! let _journals = rbdx_journal::install();
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
pub mod entry;
pub mod event;
pub mod header;
mod hook;
mod journal;

use std::sync::Arc;

pub use apply::{apply_event, apply_events};
pub use hook::{ImageJournal, RbdxJournals};
pub use journal::{IMAGE_CLIENT, Journal, JournalOptions};

/// Makes images opened by this process use rbdx journals (for the rest of the process; the
/// opener holds no resources). Calling it again changes nothing.
pub fn install() -> Arc<dyn rbdx_image::journaling::JournalOpener> {
    static OPENER: std::sync::OnceLock<Arc<dyn rbdx_image::journaling::JournalOpener>> =
        std::sync::OnceLock::new();
    let opener = OPENER
        .get_or_init(|| Arc::new(RbdxJournals::default()))
        .clone();
    rbdx_image::journaling::set_journal_opener(&opener);
    opener
}
