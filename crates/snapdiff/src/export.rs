//! Writing diffs and whole images in Ceph's exchange formats: `export-diff` (a diff stream,
//! version 1) and export format 2 (the image's layout and metadata, then one version 2 diff
//! per snapshot and one for the head).
//!
//! Only what changed is written, and only data: the changed extents come from [`crate::diff`],
//! their bytes are read sparsely (`Image::read_data`), and whatever reads as zeros inside them
//! becomes a zero record instead of data. Several reads are in flight; records leave in
//! offset order.

use std::io::Write;

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Error, Image, Protection, Result};

use crate::image_wire::{self, Metadata};
use crate::wire::{DiffWriter, Version};
use crate::{DiffOptions, Extent};

/// Bytes read from the image at once.
const CHUNK: u64 = 4 << 20;
/// Chunk reads in flight.
const READ_AHEAD: usize = 8;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Bytes of data records.
    pub data_bytes: u64,
    /// Bytes covered by zero records.
    pub zero_bytes: u64,
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::invalid(format!("cannot write the {what}: {e}"))
}

/// Writes the diff of `image` (open at the newer point) since `from_snap` as a diff stream of
/// `version` to `out`. `progress` gets bytes done and the total of the changed extents.
pub async fn export_diff(
    image: &Image,
    options: &DiffOptions,
    version: Version,
    out: impl Write,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportStats> {
    let diff = crate::diff(image, options).await?;
    let to = image.snapshot().map(|s| s.name.clone());
    let protected = image
        .snapshot()
        .map(|s| s.protection != Protection::Unprotected);
    let mut w = DiffWriter::new(out, version).map_err(io_error("diff"))?;
    w.header(
        options.from_snap.as_deref(),
        to.as_deref(),
        protected,
        diff.size,
    )
    .map_err(io_error("diff"))?;
    let stats = write_extents(image, &diff.extents, &mut w, progress).await?;
    w.end().map_err(io_error("diff"))?;
    Ok(stats)
}

/// Splits extents into chunks of at most [`CHUNK`] bytes, aligned to chunk boundaries.
fn chunks(extents: &[Extent]) -> Vec<Extent> {
    let mut out = Vec::new();
    for e in extents {
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
    }
    out
}

/// Writes the records of `extents`, reading data extents from `image`.
async fn write_extents<W: Write>(
    image: &Image,
    extents: &[Extent],
    w: &mut DiffWriter<W>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportStats> {
    let total: u64 = extents.iter().map(|e| e.length).sum();
    let mut stats = ExportStats::default();
    let mut done = 0;
    let mut pieces = futures::stream::iter(chunks(extents))
        .map(|e| async move {
            if e.data {
                image
                    .read_data(e.offset, e.length)
                    .await
                    .map(|runs| (e, runs))
            } else {
                Ok((e, Vec::new()))
            }
        })
        .buffered(READ_AHEAD);
    while let Some((e, runs)) = pieces.try_next().await? {
        let mut at = e.offset;
        for (offset, data) in runs {
            if offset > at {
                w.zero(at, offset - at).map_err(io_error("diff"))?;
                stats.zero_bytes += offset - at;
            }
            w.write(offset, &data).map_err(io_error("diff"))?;
            stats.data_bytes += data.len() as u64;
            at = offset + data.len() as u64;
        }
        if at < e.end() {
            w.zero(at, e.end() - at).map_err(io_error("diff"))?;
            stats.zero_bytes += e.end() - at;
        }
        done += e.length;
        progress(done, total);
    }
    Ok(stats)
}

/// Writes `image` (open at its head) in export format 2: layout, features and image
/// metadata, then every snapshot (oldest first, with its protection) and the head as diffs.
pub async fn export_image(
    image: &Image,
    mut out: impl Write,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportStats> {
    image.refresh().await?;
    let header = image.header();
    if image.snapshot().is_some() {
        return Err(Error::invalid(
            "export format 2 exports an image with all its snapshots; name the image, not a \
             snapshot",
        ));
    }
    let meta = Metadata {
        order: Some(u64::from(header.layout.order())),
        features: Some(header.features.0),
        stripe_unit: Some(header.layout.stripe_unit()),
        stripe_count: Some(header.layout.stripe_count()),
        image_meta: header
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
    };
    image_wire::write_header(&mut out, &meta, header.snapshots.len() as u64 + 1)
        .map_err(io_error("export"))?;
    let total: u64 = header.views().iter().map(|(_, size)| size).sum();
    let mut base = 0;
    let mut stats = ExportStats::default();
    let mut previous: Option<String> = None;
    for (snap, size) in header.views() {
        let options = DiffOptions::default().with_from_snap(previous.clone());
        let view = match &snap {
            Some(s) => Some(crate::open_snapshot(image, s.id).await?),
            None => None,
        };
        let target = view.as_ref().unwrap_or(image);
        let scaled = |done: u64, all: u64| {
            let share = (u128::from(done) * u128::from(size))
                .checked_div(u128::from(all))
                .map_or(size, |s| s as u64);
            progress(base + share, total);
        };
        let result = export_diff(target, &options, Version::V2, &mut out, &scaled).await;
        if let Some(view) = view {
            view.close().await?;
        }
        let s = result?;
        stats.data_bytes += s.data_bytes;
        stats.zero_bytes += s.zero_bytes;
        base += size;
        previous = snap.map(|s| s.name);
    }
    progress(total, total);
    Ok(stats)
}
