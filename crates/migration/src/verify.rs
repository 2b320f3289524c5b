//! `migration verify`: compares the destination with its source at the head and at every
//! snapshot, a piece at a time (CRC-32C of both sides), changing nothing.

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::migration::MigrationSource;
use rbdx_image::{Image, Images, OpenOptions, Result};

use crate::Migration;

/// A range where the destination differs from its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The view: a snapshot name, or `None` for the head.
    pub snapshot: Option<String>,
    /// Image offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Bytes compared per piece.
const PIECE: u64 = 4 << 20;
/// Granularity of reported differences.
const BLOCK: usize = 4096;
/// Pieces compared at once.
const IN_FLIGHT: usize = 8;

async fn compare_view(
    source: &dyn MigrationSource,
    view: Option<u64>,
    image: &Image,
    name: Option<String>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Mismatch>> {
    let size = image.size();
    let source_size = source.view_size(view)?;
    let pieces = (0..size.div_ceil(PIECE)).map(|i| i * PIECE);
    let found: Vec<Vec<Mismatch>> = futures::stream::iter(pieces)
        .map(|offset| {
            let name = name.clone();
            async move {
                let len = PIECE.min(size - offset);
                let ours = image.read(offset, len).await?;
                let inside = source_size.saturating_sub(offset).min(len);
                let mut theirs = if inside > 0 {
                    source.read(view, offset, inside).await?.to_vec()
                } else {
                    Vec::new()
                };
                theirs.resize(len as usize, 0);
                progress(len);
                if crc32c::crc32c(&ours) == crc32c::crc32c(&theirs) {
                    return Ok(Vec::new());
                }
                // Narrow the difference down to blocks.
                let differing = ours
                    .chunks(BLOCK)
                    .zip(theirs.chunks(BLOCK))
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, (a, _))| Mismatch {
                        snapshot: name.clone(),
                        offset: offset + (i * BLOCK) as u64,
                        length: a.len() as u64,
                    })
                    .collect();
                Ok::<_, rbdx_image::Error>(differing)
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut out: Vec<Mismatch> = Vec::new();
    for m in found.into_iter().flatten() {
        match out.last_mut() {
            Some(last) if last.offset + last.length == m.offset && last.snapshot == m.snapshot => {
                last.length += m.length;
            }
            _ => out.push(m),
        }
    }
    Ok(out)
}

impl Migration {
    /// Compares destination `name` with its source at the head and at every snapshot the
    /// source has; returns the ranges that differ (none: they are equal). `progress` gets
    /// bytes compared and the total.
    pub async fn verify(
        &self,
        dst: &Images,
        name: &str,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Vec<Mismatch>> {
        let (id, header, spec) = self.destination(dst, name).await?;
        let source = self.opener_source(&spec).await?;
        let mut views = vec![(None, None, header.size)];
        for (snap_id, key) in &spec.snap_map {
            if let Some(s) = header.snapshots.get(snap_id) {
                views.push((Some(*snap_id), Some(*key), s.size));
            }
        }
        let total: u64 = views.iter().map(|v| v.2).sum();
        let done = std::sync::atomic::AtomicU64::new(0);
        let tick = |n: u64| {
            let now = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            progress(now, total);
        };
        let compared = async {
            let mut out = Vec::new();
            for (snap_id, key, _) in views {
                let image = Image::open_by_id(
                    self.cluster.clone(),
                    dst.io_ctx().clone(),
                    name,
                    &id,
                    OpenOptions::default()
                        .with_read_only(true)
                        .with_snap_id(snap_id),
                )
                .await?;
                let label = image.snapshot().map(|s| s.name.clone());
                let found = compare_view(source.as_ref(), key, &image, label, &tick).await;
                image.close().await?;
                out.extend(found?);
            }
            Ok(out)
        }
        .await;
        source.close().await;
        compared
    }

    async fn opener_source(
        &self,
        spec: &rbdx_image::migration::MigrationSpec,
    ) -> Result<std::sync::Arc<dyn MigrationSource>> {
        use rbdx_image::migration::SourceOpener as _;
        self.opener.open_source(&self.cluster, spec).await
    }
}
