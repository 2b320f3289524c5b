//! Reading diffs and whole images in Ceph's exchange formats: `import-diff` (checks first, then
//! applies a diff and creates its end snapshot) and export format 2 (creates the image, then
//! applies each diff in turn; on any failure the new image is removed again).
//!
//! Applying never buffers a record whole: data arrives in pieces of at most 4 MiB, several
//! writes in flight. Inside data records, all-zero blocks of the sparse size are zeroed
//! (deallocated) instead of written, so holes stay holes.

use std::io::Read;

use bytes::Bytes;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{Stream, StreamExt as _};
use rbdx_image::{CreateOptions, Error, Features, Image, Images, OpenOptions, Result};

use crate::image_wire;
use crate::parse::{WireItem, parse};
use crate::stream::DiffRecord;
use crate::wire::{DiffReader, Record, Version, WireError};

/// Image writes in flight.
const IN_FLIGHT: usize = 8;

fn wire_error(e: WireError) -> Error {
    Error::invalid(e.to_string())
}

/// What a diff stream says about itself, found by reading it whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The snapshot it starts from.
    pub from: Option<String>,
    /// The snapshot it leads to.
    pub to: Option<String>,
    /// Whether the to-snapshot is protected (version 2 only).
    pub protected: Option<bool>,
    /// The image size at the end.
    pub size: Option<u64>,
    /// Bytes of data records.
    pub data_bytes: u64,
    /// Bytes covered by zero records.
    pub zero_bytes: u64,
}

/// Reads a whole diff stream from `r` without applying it, checking every record: the
/// banner, the tags, that the header comes before any data, that no extent ends past the
/// stream's image size, and that it ends with an end record.
pub fn validate(r: impl Read) -> Result<Summary> {
    let mut reader = DiffReader::new(r).map_err(wire_error)?;
    let mut summary = Summary::default();
    let mut data_seen = false;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let at = reader.position();
        match reader.next_record().map_err(wire_error)? {
            Record::End => return Ok(summary),
            Record::FromSnap(_) | Record::ToSnap(_) | Record::Size(_) | Record::Protection(_)
                if data_seen =>
            {
                return Err(Error::invalid(format!(
                    "malformed diff: a header record at byte {at} follows data records"
                )));
            }
            Record::FromSnap(s) => summary.from = Some(s),
            Record::ToSnap(s) => summary.to = Some(s),
            Record::Protection(p) => summary.protected = Some(p),
            Record::Size(s) => summary.size = Some(s),
            Record::Write { offset, length } => {
                data_seen = true;
                check_extent(summary.size, offset, length, at)?;
                summary.data_bytes += length;
                while reader.read_data(&mut buf).map_err(wire_error)? > 0 {}
            }
            Record::Zero { offset, length } => {
                data_seen = true;
                check_extent(summary.size, offset, length, at)?;
                summary.zero_bytes += length;
            }
        }
    }
}

fn check_extent(size: Option<u64>, offset: u64, length: u64, at: u64) -> Result<()> {
    match size {
        Some(size) if offset.saturating_add(length) > size => Err(Error::invalid(format!(
            "malformed diff: the extent {offset}~{length} at byte {at} ends past the image \
             size {size}"
        ))),
        _ => Ok(()),
    }
}

/// Checks that `summary` can be applied to `image`: its from-snapshot exists there and its
/// to-snapshot does not.
pub fn check_target(image: &Image, summary: &Summary) -> Result<()> {
    let header = image.header();
    if let Some(from) = &summary.from
        && header.snapshot_by_name(from).is_none()
    {
        return Err(Error::not_found(format!(
            "the diff starts at snapshot {from}, which image {} does not have",
            image.name()
        )));
    }
    if let Some(to) = &summary.to
        && header.snapshot_by_name(to).is_some()
    {
        return Err(Error::new(
            rbdx_image::ErrorKind::AlreadyExists,
            format!(
                "the diff ends at snapshot {to}, which image {} already has",
                image.name()
            ),
        ));
    }
    Ok(())
}

/// What applying a diff did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The snapshot created at the end, if the diff names one.
    pub snapshot: Option<String>,
    /// Bytes written.
    pub written: u64,
    /// Bytes zeroed.
    pub zeroed: u64,
}

/// Applies a diff's records (as [`crate::stream::diff_records`] makes them or
/// [`crate::parse::parse`] reads them from a file) to `image` (open at its head), up to its end
/// record: resizes to its size, writes and zeroes its extents, then creates (and protects) its
/// to-snapshot. `sparse_size`-byte blocks of zeros in data are zeroed rather than written. The
/// caller checks a file first ([`validate`], [`check_target`]).
pub async fn apply_records<S>(
    image: &Image,
    records: &mut S,
    sparse_size: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Applied>
where
    S: Stream<Item = Result<DiffRecord>> + Unpin,
{
    let mut applied = Applied::default();
    let mut protected = false;
    let mut writes = FuturesUnordered::new();
    loop {
        let Some(record) = records.next().await else {
            return Err(Error::invalid(
                "malformed diff: it ends before its end record",
            ));
        };
        match record? {
            DiffRecord::End => break,
            DiffRecord::FromSnap(from) => {
                if image.header().snapshot_by_name(&from).is_none() {
                    return Err(Error::not_found(format!(
                        "the diff starts at snapshot {from}, which image {} does not have",
                        image.name()
                    )));
                }
            }
            DiffRecord::ToSnap(to) => applied.snapshot = Some(to),
            DiffRecord::Protection(p) => protected = p,
            DiffRecord::Size(size) => {
                drain(&mut writes).await?;
                if size != image.size() {
                    image.resize(size, true).await?;
                }
            }
            DiffRecord::Zero { offset, length } => {
                check_extent(Some(image.size()), offset, length, offset)?;
                // Queued with the writes: awaiting it here while queued writes that hold
                // object locks are not polled would deadlock.
                while writes.len() >= IN_FLIGHT {
                    next(&mut writes).await?;
                }
                writes.push(apply_piece(image, offset, Piece::Zero(length), sparse_size));
                applied.zeroed += length;
            }
            DiffRecord::Data { offset, data } => {
                let length = data.len() as u64;
                check_extent(Some(image.size()), offset, length, offset)?;
                while writes.len() >= IN_FLIGHT {
                    next(&mut writes).await?;
                }
                writes.push(apply_piece(image, offset, Piece::Data(data), sparse_size));
                applied.written += length;
                progress(applied.written + applied.zeroed);
            }
        }
    }
    drain(&mut writes).await?;
    image.flush().await?;
    if let Some(snap) = &applied.snapshot {
        image.snap_create(snap).await?;
        if protected {
            image.snap_set_protection(snap, true).await?;
        }
    }
    Ok(applied)
}

/// Applies the diff file read from `r` (on a blocking thread) to `image`, as
/// [`apply_records`] does; the caller checks the file first ([`validate`], [`check_target`]).
pub async fn apply_diff(
    image: &Image,
    r: impl Read + Send + 'static,
    sparse_size: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Applied> {
    let mut items = parse(r, false);
    match items.next().await {
        Some(Ok(WireItem::Diff(_))) => {}
        Some(Err(e)) => return Err(e),
        _ => return Err(Error::invalid("malformed diff: no banner")),
    }
    apply_records(image, &mut records_of(&mut items), sparse_size, progress).await
}

/// The records of the diff `items` is at, up to its end record.
pub fn records_of<'a>(
    items: &'a mut BoxStream<'static, Result<WireItem>>,
) -> impl Stream<Item = Result<DiffRecord>> + Unpin + 'a {
    items.map(|item| match item? {
        WireItem::Record(record, _) => Ok(record),
        other => Err(Error::invalid(format!(
            "malformed diff: {other:?} inside a diff"
        ))),
    })
}

/// What to do at an offset.
enum Piece {
    /// Write these bytes (zeroing their all-zero blocks instead).
    Data(Bytes),
    /// Zero this many bytes.
    Zero(u64),
}

/// Applies one piece at `offset`; all-zero `sparse`-byte blocks of data are zeroed instead of
/// written.
async fn apply_piece(image: &Image, offset: u64, piece: Piece, sparse: usize) -> Result<()> {
    let data = match piece {
        Piece::Zero(0) => return Ok(()),
        Piece::Zero(length) => return image.write_zeroes(offset, length).await,
        Piece::Data(data) => data,
    };
    let mut at = offset;
    let end = offset + data.len() as u64;
    for (start, run) in rbdx_image::nonzero_pieces(offset, &data, sparse) {
        if start > at {
            image.write_zeroes(at, start - at).await?;
        }
        at = start + run.len() as u64;
        image.write(start, run).await?;
    }
    if at < end {
        image.write_zeroes(at, end - at).await?;
    }
    Ok(())
}

async fn next(writes: &mut FuturesUnordered<impl Future<Output = Result<()>>>) -> Result<()> {
    match writes.next().await {
        Some(r) => r,
        None => Ok(()),
    }
}

async fn drain(writes: &mut FuturesUnordered<impl Future<Output = Result<()>>>) -> Result<()> {
    while let Some(r) = writes.next().await {
        r?;
    }
    Ok(())
}

/// Options of an export-format-2 import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Layout and features to use instead of the exported ones (size is ignored).
    pub create: Option<CreateOptions>,
    /// Blocks of zeros of this size inside data are zeroed rather than written (default 4 KiB).
    pub sparse_size: usize,
}

/// Creates image `name` in `images` from an export-format-2 stream `r` (read on a blocking
/// thread), with every snapshot (and its protection) and the head. On failure, removes what it
/// created.
pub async fn import_image(
    images: &Images,
    name: &str,
    r: impl Read + Send + 'static,
    options: &ImportOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let mut items = parse(r, true);
    let (meta, count) = match items.next().await {
        Some(Ok(WireItem::Export { meta, diffs })) => (meta, diffs),
        Some(Err(e)) => return Err(e),
        _ => return Err(Error::invalid("malformed export: no header")),
    };
    if count == 0 {
        return Err(Error::invalid("malformed export: it holds no diffs"));
    }
    let mut create = options
        .create
        .clone()
        .unwrap_or_else(|| CreateOptions::new(0));
    if create.order.is_none() {
        create.order = meta.order.map(|o| o as u8);
    }
    if create.features.is_none() {
        create.features = meta
            .features
            .map(|f| Features(f & Features::USER_CREATABLE.0));
    }
    if create.stripe_unit.is_none()
        && let (Some(su), Some(sc)) = (meta.stripe_unit, meta.stripe_count)
        && sc > 1
    {
        create = create.with_striping(su, sc);
    }
    create.size = 0;
    images.create(name, &create).await?;
    let result = fill_image(images, name, &mut items, count, &meta, options, progress).await;
    if let Err(e) = result {
        return match purge(images, name).await {
            Ok(()) => Err(e),
            Err(cleanup) => Err(Error::new(
                e.kind(),
                format!("{e}; removing the partly imported image {name} failed too: {cleanup}"),
            )),
        };
    }
    Ok(())
}

async fn fill_image(
    images: &Images,
    name: &str,
    items: &mut BoxStream<'static, Result<WireItem>>,
    count: u64,
    meta: &image_wire::Metadata,
    options: &ImportOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let image = images.open(name, OpenOptions::default()).await?;
    let result = async {
        for (k, v) in &meta.image_meta {
            image.metadata_set(k, Bytes::from(v.clone())).await?;
        }
        let sparse = if options.sparse_size == 0 {
            4096
        } else {
            options.sparse_size
        };
        let mut base = 0;
        for n in 0..count {
            match items.next().await {
                Some(Ok(WireItem::Diff(Version::V2))) => {}
                Some(Ok(WireItem::Diff(_))) => {
                    return Err(Error::invalid(format!(
                        "malformed export: diff {} of {count} is not a version 2 diff",
                        n + 1
                    )));
                }
                Some(Err(e)) => return Err(e),
                _ => {
                    return Err(Error::invalid(format!(
                        "malformed export: diff {} of {count} is missing",
                        n + 1
                    )));
                }
            }
            let scaled = |done: u64| progress(base + done);
            let applied = apply_records(&image, &mut records_of(items), sparse, &scaled).await?;
            base += applied.written + applied.zeroed;
        }
        Ok(())
    }
    .await;
    image.close().await?;
    result
}

/// Removes image `name` with all its snapshots.
async fn purge(images: &Images, name: &str) -> Result<()> {
    let image = images.open(name, OpenOptions::default()).await?;
    for snap in image.snapshots().await? {
        if snap.protection != rbdx_image::Protection::Unprotected {
            image.snap_set_protection(&snap.name, false).await?;
        }
        image.snap_remove(&snap.name).await?;
    }
    image.close().await?;
    images.remove(name, &|_, _| {}).await
}
