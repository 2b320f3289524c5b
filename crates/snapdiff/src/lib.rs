//! Snapshot diffs: the extents of an image that changed between two points of its history
//! (a snapshot and a later snapshot or the head, or the image's creation and one of them),
//! each marked as data (read it from the newer point) or zero (it reads as zeros there).
//!
//! # How
//!
//! 1. **Objects** ([`objects`]): with valid fast-diff object maps, an object changed between
//!    `from` and `to` if it exists at one and not the other, or if any map after `from` up to
//!    `to` marks it *exists* (written since the snapshot before) rather than *exists-clean*.
//!    Without fast-diff, the maps still rule out objects absent at both points. Without a
//!    valid map, every object is a candidate and the store decides ([`Method::Store`]).
//! 2. **Inside objects** ([`within`]): unless only whole objects are wanted, the store's
//!    snapshot history of each candidate (`list_snaps`: clones, their snapshots and their
//!    overlap with the next newer version) gives the exact byte ranges that differ.
//! 3. **Image extents** ([`extents`]): object ranges map back to image offsets through the
//!    layout (fancy striping included), clipped to the size at `to`, sorted and merged.
//!
//! A clone diffed from its creation includes what its parent shows through
//! ([`DiffOptions::include_parent`]), as `rbd diff` and `rbd export-diff` do.
//!
//! Applying a diff — copying its data extents from `to` and zeroing its zero extents over an
//! image that holds `from`, resized to the size at `to` — gives exactly `to`.
//!
//! ```no_run
//! # async fn demo(image: rbdx_image::Image) -> rbdx_image::Result<()> {
//! let options = rbdx_snapdiff::DiffOptions::default().with_from_snap(Some("monday".into()));
//! let diff = rbdx_snapdiff::diff(&image, &options).await?;
//! for e in &diff.extents {
//!     println!("{} {} {}", e.offset, e.length, if e.data { "data" } else { "zero" });
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

pub mod export;
pub mod extents;
pub mod image_wire;
pub mod import;
pub mod merge;
pub mod objects;
pub mod parse;
pub mod stream;
mod usage;
pub mod wire;
pub mod within;

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Error, Image, Result};
use rbdx_objstore::ErrorKind as StoreKind;

pub use extents::Extent;
pub use stream::{
    DiffRecord, ExportStats, diff_extents, diff_records, extent_records, write_records,
};
pub use usage::{Usage, usage};

use crate::objects::{Change, Views};

/// Objects whose snapshot history is asked of the store at once.
const CONCURRENCY: usize = 32;

/// What to compare.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The older point: a snapshot name, or `None` for the image's creation.
    pub from_snap: Option<String>,
    /// Report whole objects instead of the exact ranges inside them.
    pub whole_object: bool,
    /// From creation, include what a clone's parent shows through.
    pub include_parent: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            from_snap: None,
            whole_object: false,
            include_parent: true,
        }
    }
}

impl DiffOptions {
    /// Diffs from snapshot `snap` (or from creation with `None`).
    pub fn with_from_snap(mut self, snap: Option<String>) -> Self {
        self.from_snap = snap;
        self
    }

    /// Reports whole objects only.
    pub fn with_whole_object(mut self, whole: bool) -> Self {
        self.whole_object = whole;
        self
    }

    /// Includes (or not) what a clone's parent shows through, when diffing from creation.
    pub fn with_include_parent(mut self, include: bool) -> Self {
        self.include_parent = include;
        self
    }
}

/// Where the object-level answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Fast-diff object maps: only changed objects were looked at.
    FastDiff,
    /// Object maps without fast-diff states: objects absent at both points were skipped, the
    /// store compared the others.
    ObjectMap,
    /// No valid object map: the store was asked about every object (exact, slower).
    Store,
}

/// A computed diff.
#[derive(Debug, Clone)]
pub struct Diff {
    /// Changed extents in image offsets, sorted, merged, within [`Diff::size`].
    pub extents: Vec<Extent>,
    /// The image size at the newer point.
    pub size: u64,
    /// The image size at the older point (0 from creation).
    pub from_size: u64,
    /// How the changed objects were found.
    pub method: Method,
}

/// Computes the diff between `options.from_snap` and the view `image` is open at (the head,
/// or a snapshot): what [`stream::diff_extents`] streams, collected.
pub async fn diff(image: &Image, options: &DiffOptions) -> Result<Diff> {
    let extents = stream::diff_extents(image, options).try_collect().await?;
    let views = Views::load(image, options.from_snap.as_deref()).await?;
    Ok(Diff {
        extents,
        size: views.to_size,
        from_size: views.from_size,
        method: views.method(),
    })
}

pub(crate) fn refuse_migration(image: &Image) -> Result<()> {
    let header = image.header();
    if let Some(m) = &header.migration
        && m.role == rbdx_image::migration::MigrationRole::Destination
    {
        return Err(Error::invalid(format!(
            "image {} is the destination of a migration in progress; diff it once the \
             migration is committed",
            image.name()
        )));
    }
    Ok(())
}

/// Asks the store about the candidate objects and replaces each change with its exact ranges
/// (or, for whole objects, with whether it really changed).
pub(crate) async fn refine(
    image: &Image,
    views: &Views,
    changes: Vec<(u64, Change)>,
    whole_object: bool,
) -> Result<Vec<(u64, Change)>> {
    let store = image.store().clone();
    let io = image.data_io_ctx().clone();
    let prefix = image.header().object_prefix;
    let from = views.from.as_ref().map(|s| s.id);
    let to = views.to.as_ref().map(|s| s.id);
    let refined: Vec<Option<(u64, Change)>> = futures::stream::iter(changes)
        .map(|(objectno, _)| {
            let store = store.clone();
            let io = io.clone();
            let oid = rbdx_image::names::data_object(&prefix, objectno);
            async move {
                let set = match store.list_snaps(&io, &oid).await {
                    Ok(set) => Some(set),
                    Err(e) if e.kind() == StoreKind::NotFound => None,
                    Err(e) => {
                        return Err(Error::store(format!("cannot list the clones of {oid}"), e));
                    }
                };
                let ranges = within::changed(set.as_ref(), from, to);
                Ok(ranges.map(|r| {
                    if whole_object {
                        (
                            objectno,
                            Change::Whole {
                                exists_at_to: r.exists_at_to,
                            },
                        )
                    } else {
                        (objectno, Change::Ranges(r))
                    }
                }))
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(refined.into_iter().flatten().collect())
}

/// Opens another handle on `image` at snapshot `snap_id`, read-only (the caller closes it).
pub(crate) async fn open_snapshot(image: &Image, snap_id: u64) -> Result<Image> {
    Image::open_by_id(
        image.cluster().clone(),
        image.io_ctx().clone(),
        image.name(),
        image.id(),
        rbdx_image::OpenOptions::default()
            .with_read_only(true)
            .with_snap_id(Some(snap_id)),
    )
    .await
}
