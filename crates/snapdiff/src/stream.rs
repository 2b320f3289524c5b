//! Diffs as async streams, in bounded memory whatever the image size: the changed extents,
//! computed a window of object sets at a time, and the diff records (the header fields, then
//! data and zero ranges in offset order, then the end), whose data is read as it is sent, a
//! few chunks ahead. Ceph's diff files are written from the record stream
//! ([`write_records`]); a network peer consumes the same stream.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Error, Image, Protection, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::objects::{self, Views};
use crate::wire::{DiffWriter, Version};
use crate::{DiffOptions, Extent, Method, extents};

/// Object sets looked at per window.
const WINDOW_SETS: u64 = 256;
/// Bytes read from the image at once.
pub(crate) const CHUNK: u64 = 4 << 20;
/// Chunk reads in flight.
const READ_AHEAD: usize = 8;
/// Data of at least this many bytes is written from its own buffer, not copied.
const DIRECT: usize = 64 << 10;

/// One record of a diff, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffRecord {
    /// The snapshot the diff starts from.
    FromSnap(String),
    /// The snapshot the diff leads to.
    ToSnap(String),
    /// Whether the to-snapshot is protected.
    Protection(bool),
    /// The image size at the newer point.
    Size(u64),
    /// Data at an offset.
    Data {
        /// Image offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// A range that reads as zeros at the newer point.
    Zero {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// The end of the diff.
    End,
}

/// The changed extents of the object sets `sets` of `image` (open at the newer point), in
/// image offsets, sorted; with a clone's parent from creation, what the parent shows through.
pub(crate) async fn window(
    image: &Image,
    views: &Views,
    options: &DiffOptions,
    sets: Range<u64>,
) -> Result<Vec<Extent>> {
    let layout = image.layout();
    let per_set = layout.stripe_count();
    let set_bytes = layout.object_size() * per_set;
    let count = layout.num_objects(views.to_size.max(views.from_size));
    let objects = (sets.start * per_set).min(count)..(sets.end * per_set).min(count);
    let mut changes = objects::classify_range(views, objects.clone());
    let method = views.method();
    if !options.whole_object || method != Method::FastDiff {
        changes = crate::refine(image, views, changes, options.whole_object).await?;
    }
    let mut out = extents::from_objects(&layout, &changes, views.to_size);
    if options.include_parent
        && views.from.is_none()
        && let Some((parent, overlap)) = image.parent().await?
    {
        let start = sets.start * set_bytes;
        let end = (sets.end * set_bytes).min(overlap).min(views.to_size);
        if start < end {
            let parent_options = options.clone().with_from_snap(None);
            let shown = Box::pin(range(&parent, &parent_options, start, end)).await?;
            let own = objects::existing_range(image, views, objects.clone()).await?;
            let from_parent =
                extents::outside_objects_from(&layout, shown, end, &own, objects.start);
            out = extents::merge(out.into_iter().chain(from_parent).collect());
        }
    }
    Ok(out)
}

/// The changed extents of `image` within image range `[start, end)`, clipped to it.
pub(crate) async fn range(
    image: &Image,
    options: &DiffOptions,
    start: u64,
    end: u64,
) -> Result<Vec<Extent>> {
    let views = Views::load(image, options.from_snap.as_deref()).await?;
    let layout = image.layout();
    let set_bytes = layout.object_size() * layout.stripe_count();
    let mut out = Vec::new();
    let mut set = start / set_bytes;
    while set * set_bytes < end {
        let last = (set + WINDOW_SETS).min(end.div_ceil(set_bytes));
        for e in window(image, &views, options, set..last).await? {
            let from = e.offset.max(start);
            let to = e.end().min(end);
            if from < to {
                out.push(Extent {
                    offset: from,
                    length: to - from,
                    data: e.data,
                });
            }
        }
        set = last;
    }
    Ok(extents::merge(out))
}

/// Streams the changed extents of `image` (open at the newer point) since
/// `options.from_snap`, sorted and merged, a window of object sets at a time.
pub fn diff_extents<'a>(
    image: &'a Image,
    options: &'a DiffOptions,
) -> BoxStream<'a, Result<Extent>> {
    let windows = stream::once(async move {
        if image.header().migration.is_some() && options.include_parent {
            crate::refuse_migration(image)?;
        }
        let views = Views::load(image, options.from_snap.as_deref()).await?;
        let layout = image.layout();
        let set_bytes = layout.object_size() * layout.stripe_count();
        let sets = views.to_size.max(views.from_size).div_ceil(set_bytes);
        Ok::<_, Error>((views, sets))
    })
    .map_ok(move |(views, sets)| {
        let views = std::sync::Arc::new(views);
        stream::iter((0..sets).step_by(WINDOW_SETS as usize))
            .then(move |first| {
                let views = views.clone();
                async move {
                    window(
                        image,
                        &views,
                        options,
                        first..(first + WINDOW_SETS).min(sets),
                    )
                    .await
                }
            })
            .map_ok(|v| stream::iter(v.into_iter().map(Ok)))
            .try_flatten()
    })
    .try_flatten();
    merged(windows.boxed())
}

/// Joins extents that touch and agree, across windows.
fn merged(extents: BoxStream<'_, Result<Extent>>) -> BoxStream<'_, Result<Extent>> {
    stream::unfold(
        (extents, None::<Extent>, false),
        |(mut inner, mut held, done)| async move {
            if done {
                return None;
            }
            loop {
                match inner.next().await {
                    Some(Ok(e)) => match held {
                        Some(h) if h.end() == e.offset && h.data == e.data => {
                            held = Some(Extent {
                                length: h.length + e.length,
                                ..h
                            });
                        }
                        Some(h) => return Some((Ok(h), (inner, Some(e), false))),
                        None => held = Some(e),
                    },
                    Some(Err(e)) => return Some((Err(e), (inner, None, true))),
                    None => return held.map(|h| (Ok(h), (inner, None, true))),
                }
            }
        },
    )
    .boxed()
}

/// Splits an extent into pieces of at most [`CHUNK`] bytes, aligned to chunk boundaries.
pub(crate) fn chunks(e: Extent) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut at = e.offset;
    while at < e.end() {
        let next = ((at / CHUNK) + 1) * CHUNK;
        let len = next.min(e.end()) - at;
        out.push(Extent {
            offset: at,
            length: len,
            data: e.data,
        });
        at += len;
    }
    out
}

/// Returns the records of one chunk: its data as read, zeros where it reads as zeros.
async fn chunk_records(image: &Image, e: Extent) -> Result<Vec<DiffRecord>> {
    let mut out = Vec::new();
    let runs = if e.data {
        image.read_data(e.offset, e.length).await?
    } else {
        Vec::new()
    };
    let mut at = e.offset;
    for (offset, data) in runs {
        if offset > at {
            out.push(DiffRecord::Zero {
                offset: at,
                length: offset - at,
            });
        }
        at = offset + data.len() as u64;
        out.push(DiffRecord::Data { offset, data });
    }
    if at < e.end() {
        out.push(DiffRecord::Zero {
            offset: at,
            length: e.end() - at,
        });
    }
    Ok(out)
}

/// Streams the data and zero records of `extents` of `image`, reading a few chunks ahead.
pub fn extent_records<'a>(
    image: &'a Image,
    extents: BoxStream<'a, Result<Extent>>,
) -> BoxStream<'a, Result<DiffRecord>> {
    extents
        .map_ok(|e| stream::iter(chunks(e).into_iter().map(Ok)))
        .try_flatten()
        .map_ok(move |piece| chunk_records(image, piece))
        .try_buffered(READ_AHEAD)
        .map_ok(|records| stream::iter(records.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

/// Streams the whole diff of `image` (open at the newer point) since `options.from_snap`:
/// the header records (from, to, its protection, size), data and zeros, the end.
pub fn diff_records<'a>(
    image: &'a Image,
    options: &'a DiffOptions,
) -> BoxStream<'a, Result<DiffRecord>> {
    let mut head = Vec::new();
    if let Some(from) = &options.from_snap {
        head.push(DiffRecord::FromSnap(from.clone()));
    }
    if let Some(to) = image.snapshot() {
        head.push(DiffRecord::ToSnap(to.name.clone()));
        head.push(DiffRecord::Protection(
            to.protection != Protection::Unprotected,
        ));
    }
    head.push(DiffRecord::Size(image.size()));
    stream::iter(head.into_iter().map(Ok))
        .chain(extent_records(image, diff_extents(image, options)))
        .chain(stream::once(async { Ok(DiffRecord::End) }))
        .boxed()
}

/// What a diff writer wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Bytes of data records.
    pub data_bytes: u64,
    /// Bytes covered by zero records.
    pub zero_bytes: u64,
}

fn io_error(e: std::io::Error) -> Error {
    Error::invalid(format!("cannot write the diff: {e}"))
}

/// Writes `records` as a diff stream of `version` (banner first, Ceph's byte layout) to
/// `out`, without its banner if `banner` is false (the diffs inside export format 2 have
/// their own). `progress` gets the offset reached and the size.
pub async fn write_records<W: AsyncWrite + Unpin>(
    mut records: BoxStream<'_, Result<DiffRecord>>,
    version: Version,
    banner: bool,
    out: &mut W,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportStats> {
    let mut stats = ExportStats::default();
    let mut buf = Vec::new();
    if banner {
        DiffWriter::new(&mut buf, version).map_err(io_error)?;
    }
    let mut size = 0;
    // Header fields are collected so that they go out in Ceph's order.
    let (mut from, mut to, mut protected) = (None, None, None);
    while let Some(record) = records.try_next().await? {
        let end = record == DiffRecord::End;
        let mut w = DiffWriter::continuing(&mut buf, version);
        match record {
            DiffRecord::FromSnap(name) => from = Some(name),
            DiffRecord::ToSnap(name) => to = Some(name),
            DiffRecord::Protection(p) => protected = Some(p),
            DiffRecord::Size(s) => {
                size = s;
                w.header(from.as_deref(), to.as_deref(), protected, s)
                    .map_err(io_error)?;
            }
            DiffRecord::Data { offset, data } if data.len() >= DIRECT => {
                // Large data goes out as it is, after its record header: no copy.
                w.begin_write(offset, data.len() as u64).map_err(io_error)?;
                out.write_all(&buf).await.map_err(io_error)?;
                buf.clear();
                out.write_all(&data).await.map_err(io_error)?;
                stats.data_bytes += data.len() as u64;
                progress(offset + data.len() as u64, size);
            }
            DiffRecord::Data { offset, data } => {
                w.write(offset, &data).map_err(io_error)?;
                stats.data_bytes += data.len() as u64;
                progress(offset + data.len() as u64, size);
            }
            DiffRecord::Zero { offset, length } => {
                w.zero(offset, length).map_err(io_error)?;
                stats.zero_bytes += length;
                progress(offset + length, size);
            }
            DiffRecord::End => {
                w.end().map_err(io_error)?;
            }
        }
        if buf.len() >= 1 << 20 || end {
            out.write_all(&buf).await.map_err(io_error)?;
            buf.clear();
        }
    }
    out.write_all(&buf).await.map_err(io_error)?;
    out.flush().await.map_err(io_error)?;
    Ok(stats)
}
