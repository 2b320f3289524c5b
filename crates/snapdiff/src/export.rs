//! Writing diffs and whole images in Ceph's exchange formats: `export-diff` (a diff stream,
//! version 1) and export format 2 (the image's layout and metadata, then one version 2 diff
//! per snapshot and one for the head).
//!
//! Only what changed is written, and only data: the changed extents come from [`crate::diff`],
//! their bytes are read sparsely (`Image::read_data`), and whatever reads as zeros inside them
//! becomes a zero record instead of data. Several reads are in flight; records leave in
//! offset order.

use rbdx_image::{Error, Image, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::DiffOptions;
use crate::image_wire::{self, Metadata};
use crate::stream::{ExportStats, diff_records, write_records};
use crate::wire::Version;

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::invalid(format!("cannot write the {what}: {e}"))
}

/// Writes the diff of `image` (open at the newer point) since `from_snap` as a diff stream of
/// `version` to `out`. `progress` gets the offset reached and the image size.
pub async fn export_diff<W: AsyncWrite + Unpin>(
    image: &Image,
    options: &DiffOptions,
    version: Version,
    out: &mut W,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportStats> {
    write_records(diff_records(image, options), version, true, out, progress).await
}

/// Writes `image` (open at its head) in export format 2: layout, features and image
/// metadata, then every snapshot (oldest first, with its protection) and the head as diffs.
pub async fn export_image<W: AsyncWrite + Unpin>(
    image: &Image,
    out: &mut W,
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
    let mut head = Vec::new();
    image_wire::write_header(&mut head, &meta, header.snapshots.len() as u64 + 1)
        .map_err(io_error("export"))?;
    out.write_all(&head).await.map_err(io_error("export"))?;
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
        let result = export_diff(target, &options, Version::V2, out, &scaled).await;
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
