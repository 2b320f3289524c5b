//! Deep copy: fills a migration destination from its source, object by object, each object
//! with its whole snapshot history (see `rbdx_image::Image::migrate_object`).
//!
//! Objects that hold no data in any view (head or snapshot) are skipped without being read:
//! holes come from the source's allocation (the object map of an rbdx image, or the
//! allocated and zero extents of an external format). Objects are copied many at a time, in
//! windows of object sets so that memory stays bounded whatever the image size; progress is
//! reported in bytes after every object, with a checkpoint (every object below
//! [`CopyProgress::next_object`] is copied) that a restarted copy can start from. An optional
//! bandwidth limit paces the copy.
//!
//! ```no_run
//! # async fn demo(image: rbdx_image::Image) -> rbdx_image::Result<()> {
//! let options = rbdx_deepcopy::CopyOptions::default();
//! let done = rbdx_deepcopy::copy_migration(&image, &options, &|p| {
//!     eprintln!("{} of {} bytes", p.copied_bytes, p.total_bytes);
//! })
//! .await?;
//! assert_eq!(done.copied_bytes, done.total_bytes);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::migration::MigrationSource;
use rbdx_image::{Image, Layout, Result};

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Objects copied at once.
    pub concurrency: usize,
    /// At most this many bytes per second, if set.
    pub bandwidth_limit: Option<u64>,
    /// Objects below this number are already copied (a checkpoint).
    pub start_object: u64,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: 8,
            bandwidth_limit: None,
            start_object: 0,
        }
    }
}

/// Where a copy stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyProgress {
    /// Bytes of data copied so far (holes do not count).
    pub copied_bytes: u64,
    /// Bytes of data to copy in all.
    pub total_bytes: u64,
    /// Every object below this number is copied.
    pub next_object: u64,
    /// Objects in the image.
    pub objects: u64,
}

/// Object sets looked at per window.
const WINDOW_SETS: u64 = 256;

/// What a destination shows of its source: the source, and for each destination view
/// (snapshots oldest first, then the head) the source view and how many bytes show through.
struct SourceViews {
    source: Arc<dyn MigrationSource>,
    views: Vec<(Option<u64>, u64)>,
}

impl SourceViews {
    /// Returns the data bytes of every destination object that holds data in any view of
    /// image range `[start, end)`, from the source's allocation (the destination's objects
    /// that the source has no data for need no copy).
    async fn data_objects(
        &self,
        layout: &Layout,
        start: u64,
        end: u64,
    ) -> Result<BTreeMap<u64, u64>> {
        let mut out: BTreeMap<u64, u64> = BTreeMap::new();
        let head = self.views.len().saturating_sub(1);
        for (n, (view, overlap)) in self.views.iter().enumerate() {
            let stop = end.min(*overlap);
            if start >= stop {
                continue;
            }
            for run in self.source.allocation(*view, start, stop - start).await? {
                if !run.data {
                    continue;
                }
                for e in layout.map(run.offset, run.length) {
                    let bytes = out.entry(e.objectno).or_default();
                    // The head's bytes count for progress; other views only add objects.
                    if n == head {
                        *bytes += e.length;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Returns the bytes of the largest view.
    fn span(&self) -> u64 {
        self.views.iter().map(|(_, o)| *o).max().unwrap_or(0)
    }
}

/// Copies every object of migration destination `dst` from its source. `on_progress` is
/// called after each object.
pub async fn copy_migration(
    dst: &Image,
    options: &CopyOptions,
    on_progress: &(dyn Fn(&CopyProgress) + Sync),
) -> Result<CopyProgress> {
    let Some((source, views)) = dst.migration_source_views().await? else {
        return Err(rbdx_image::Error::invalid(format!(
            "image {} is not the destination of a migration",
            dst.name()
        )));
    };
    copy_views(dst, &SourceViews { source, views }, options, on_progress).await
}

async fn copy_views(
    dst: &Image,
    views: &SourceViews,
    options: &CopyOptions,
    on_progress: &(dyn Fn(&CopyProgress) + Sync),
) -> Result<CopyProgress> {
    let layout = dst.layout();
    let set_bytes = layout.object_size() * layout.stripe_count();
    let span = views.span();
    let window = set_bytes * WINDOW_SETS;
    let objects = layout.num_objects(span);
    let mut progress = CopyProgress {
        objects,
        next_object: options.start_object.min(objects),
        ..CopyProgress::default()
    };
    let first_window = options.start_object / layout.stripe_count() / WINDOW_SETS;
    let mut start = first_window * window;
    let mut total = 0;
    let mut offset = 0;
    while offset < span {
        let found = views
            .data_objects(&layout, offset, (offset + window).min(span))
            .await?;
        total += found.values().sum::<u64>();
        offset += window;
    }
    progress.total_bytes = total;
    let began = Instant::now();
    let mut paced_bytes = 0u64;
    while start < span {
        let end = (start + window).min(span);
        let found = views.data_objects(&layout, start, end).await?;
        let skipped: u64 = found.range(..options.start_object).map(|(_, b)| *b).sum();
        progress.copied_bytes += skipped;
        let todo: Vec<(u64, u64)> = found
            .range(options.start_object..)
            .map(|(k, b)| (*k, *b))
            .collect();
        // One object-map write for the window rather than one per object.
        let objectnos: Vec<u64> = todo.iter().map(|(k, _)| *k).collect();
        dst.prepare_copies(&objectnos).await?;
        let mut copies = futures::stream::iter(todo)
            .map(|(objectno, bytes)| async move {
                dst.migrate_object(objectno)
                    .await
                    .map(|_| (objectno, bytes))
            })
            .buffered(options.concurrency.max(1));
        while let Some((objectno, bytes)) = copies.try_next().await? {
            progress.copied_bytes += bytes;
            progress.next_object = objectno + 1;
            on_progress(&progress);
            paced_bytes += bytes;
            if let Some(limit) = options.bandwidth_limit.filter(|l| *l > 0) {
                let due = Duration::from_secs_f64(paced_bytes as f64 / limit as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        start = end;
        progress.next_object = progress
            .next_object
            .max(layout.num_objects(end).min(objects));
    }
    progress.next_object = objects;
    progress.copied_bytes = progress.total_bytes;
    on_progress(&progress);
    Ok(progress)
}
