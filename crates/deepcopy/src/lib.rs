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
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Image, OpenOptions, Result};

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

/// Returns the data bytes of every object of `[start, end)` that holds data in any view.
async fn data_objects(views: &[Image], start: u64, end: u64) -> Result<BTreeMap<u64, u64>> {
    let mut out: BTreeMap<u64, u64> = BTreeMap::new();
    for view in views {
        let size = view.size();
        if start >= size {
            continue;
        }
        let layout = view.layout();
        let stop = end.min(size);
        for run in view.allocation(start, stop - start).await? {
            if !run.data {
                continue;
            }
            for e in layout.map(run.offset, run.length) {
                let bytes = out.entry(e.objectno).or_default();
                // The head's bytes count for progress; other views only add objects.
                if view.snapshot().is_none() {
                    *bytes += e.length;
                }
            }
        }
    }
    Ok(out)
}

/// Opens the destination at each of its snapshots, for their allocation.
async fn snapshot_views(dst: &Image) -> Result<Vec<Image>> {
    let mut views = vec![dst.clone()];
    for id in dst.header().snapshots.keys() {
        let opts = OpenOptions::default()
            .with_read_only(true)
            .with_snap_id(Some(*id));
        views.push(
            Image::open_by_id(
                dst.cluster().clone(),
                dst.io_ctx().clone(),
                dst.name(),
                dst.id(),
                opts,
            )
            .await?,
        );
    }
    Ok(views)
}

/// Copies every object of migration destination `dst` from its source. `on_progress` is
/// called after each object.
pub async fn copy_migration(
    dst: &Image,
    options: &CopyOptions,
    on_progress: &(dyn Fn(&CopyProgress) + Sync),
) -> Result<CopyProgress> {
    let views = snapshot_views(dst).await?;
    let copied = copy_views(dst, &views, options, on_progress).await;
    // The snapshot views (not the caller's handle) watch the image and their sources.
    for view in views.into_iter().skip(1) {
        view.close().await?;
    }
    copied
}

async fn copy_views(
    dst: &Image,
    views: &[Image],
    options: &CopyOptions,
    on_progress: &(dyn Fn(&CopyProgress) + Sync),
) -> Result<CopyProgress> {
    let layout = dst.layout();
    let set_bytes = layout.object_size() * layout.stripe_count();
    let span = views.iter().map(Image::size).max().unwrap_or(0);
    let window = set_bytes * WINDOW_SETS;
    let objects = views
        .iter()
        .map(|v| layout.num_objects(v.size()))
        .max()
        .unwrap_or(0);
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
        let found = data_objects(views, offset, (offset + window).min(span)).await?;
        total += found.values().sum::<u64>();
        offset += window;
    }
    progress.total_bytes = total;
    let began = Instant::now();
    let mut paced_bytes = 0u64;
    while start < span {
        let end = (start + window).min(span);
        let found = data_objects(views, start, end).await?;
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
