//! The `qcow` format: QCOW version 1 and QCOW2 versions 2 and 3, read through any stream.
//!
//! ```json
//! {"type": "qcow", "stream": {...}, "rbdx_allow_backing": ["/var/lib/nova/instances/_base"]}
//! ```
//!
//! Supported: any cluster size from 512 B to 2 MiB; zero clusters; compressed clusters (zlib
//! and zstd); extended L2 entries (subclusters); internal snapshots (image snapshots, in table
//! order); backing files (qcow or raw, opened with the top image's stream type relative to its
//! location, at most [`MAX_CHAIN`] deep). Refused with a message saying so: encryption,
//! external data files, unknown incompatible features, images marked corrupt.
//!
//! Backing files: a relative name without `..` resolves next to the image and is followed.
//! An absolute name or one with `..` is followed only if it lies under a prefix listed in
//! `rbdx_allow_backing` (an rbdx extension key); otherwise the open fails with
//! `PermissionDenied`, naming the backing file and that key.
//!
//! Reads map each cluster through the L1 and L2 tables (L2 tables and decompressed clusters
//! are cached), merge runs that are contiguous in the file, and issue them concurrently.

#![warn(missing_docs, missing_debug_implementations)]

mod header;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_source::extent::normalize;
use rbdx_source::{
    BufferPool, Error, ErrorKind, Extent, ExtentKind, Format, FormatFactory, FormatRegistration,
    OpenContext, Result, SnapshotInfo, SourceSpec, Stream,
};
use serde_json::{Map, Value};

use crate::header::{Header, MAGIC, PROBE_LEN, error, parse_extensions, parse_snapshots};
use crate::table::{Mapping, classify, decompress, l2_offset, l2_table_len, split};

/// The deepest backing chain followed.
pub const MAX_CHAIN: usize = 16;
/// The spec key listing where absolute or `..` backing files may be.
pub const ALLOW_KEY: &str = "rbdx_allow_backing";
const L2_CACHE: usize = 64;
const CLUSTER_CACHE: usize = 8;
const IN_FLIGHT: usize = 8;

/// Opens `qcow` sources.
#[derive(Debug)]
pub struct QcowFormatFactory;

rbdx_source::inventory::submit! { FormatRegistration(&QcowFormatFactory) }

#[async_trait]
impl FormatFactory for QcowFormatFactory {
    fn name(&self) -> &'static str {
        "qcow"
    }

    fn probe_len(&self) -> usize {
        4
    }

    fn probe(&self, header: &[u8]) -> bool {
        header.len() >= 4 && header[..4] == MAGIC.to_be_bytes()
    }

    async fn open_stream(
        &self,
        stream: Arc<dyn Stream>,
        spec: &SourceSpec,
        ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        let mut r = spec.reader();
        let allow = r.opt_str_array(ALLOW_KEY)?.unwrap_or_default();
        r.finish()?;
        Ok(Box::new(QcowFormat::open(stream, ctx, &allow, 0).await?))
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        let mut r = spec.reader();
        let stream_spec = r.object("stream")?;
        let allow = r.opt_str_array(ALLOW_KEY)?.unwrap_or_default();
        r.finish()?;
        let stream = ctx.registry().open_stream(stream_spec, ctx).await?;
        let format = QcowFormat::open(Arc::from(stream), ctx, &allow, 0).await?;
        Ok(Box::new(format))
    }
}

/// A raw backing file: the stream is the image.
#[derive(Debug)]
struct RawBacking {
    stream: Arc<dyn Stream>,
    size: u64,
}

#[async_trait]
impl Format for RawBacking {
    fn describe(&self) -> String {
        format!("raw backing file {}", self.stream.describe())
    }

    fn format_name(&self) -> &str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn snapshots(&self) -> &[SnapshotInfo] {
        &[]
    }

    async fn read(&self, _snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes> {
        self.stream.read(offset, length).await
    }

    async fn extents(&self, _snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>> {
        self.stream.extents(offset, length).await
    }
}

/// A QCOW image.
#[derive(Debug)]
pub struct QcowFormat {
    stream: Arc<dyn Stream>,
    stream_size: u64,
    header: Header,
    l1: Vec<u64>,
    snapshots: Vec<SnapshotInfo>,
    snapshot_l1: Vec<Vec<u64>>,
    backing: Option<Box<dyn Format>>,
    l2_cache: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    cluster_cache: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
}

fn be64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            u64::from_be_bytes(x)
        })
        .collect()
}

/// Lexically normalizes a path or URL path: drops `.` and resolves `..`.
fn normalize_location(location: &str) -> String {
    let (prefix, path) = match location.find("://") {
        Some(i) => {
            let after = &location[i + 3..];
            let slash = after.find('/').map_or(after.len(), |j| j);
            (&location[..i + 3 + slash], &after[slash..])
        }
        None => ("", location),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let lead = if path.starts_with('/') || !prefix.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{prefix}{lead}{}", parts.join("/"))
}

fn location_of(spec: &Map<String, Value>) -> Option<String> {
    ["file_path", "url", "uri"]
        .iter()
        .find_map(|k| spec.get(*k).and_then(Value::as_str).map(str::to_owned))
}

impl QcowFormat {
    /// Opens the image on `stream`; `depth` counts backing levels above it.
    pub async fn open(
        stream: Arc<dyn Stream>,
        ctx: &OpenContext,
        allow: &[String],
        depth: usize,
    ) -> Result<QcowFormat> {
        let stream_size = stream.size().await?;
        let head = stream.read(0, PROBE_LEN.min(stream_size)).await?;
        let (mut header, layout) = Header::parse(&head, stream_size)?;
        if header.version >= 2 {
            let start = layout.header_length;
            let end = header.cluster_size().min(stream_size);
            if end > start {
                let ext = stream.read(start, end - start).await?;
                header.backing_format = parse_extensions(&ext)?;
            }
        }
        if layout.backing_size > 0 && layout.backing_offset > 0 {
            let name = stream
                .read(layout.backing_offset, u64::from(layout.backing_size))
                .await?;
            header.backing_name = Some(
                String::from_utf8(name.to_vec())
                    .map_err(|_| error(ErrorKind::Invalid, "backing file name is not UTF-8"))?,
            );
        }
        let l1_bytes = stream.read(header.l1_offset, header.l1_size * 8).await?;
        let l1 = be64s(&l1_bytes);
        let mut snapshots = Vec::new();
        let mut snapshot_l1 = Vec::new();
        if header.snapshot_count > 0 {
            let table_len = (stream_size - header.snapshots_offset).min(64 << 20);
            let table = stream.read(header.snapshots_offset, table_len).await?;
            let mut total_l1 = 0u64;
            for entry in parse_snapshots(&table, header.snapshot_count, header.size, stream_size)? {
                total_l1 += entry.l1_size * 8;
                if total_l1 > 256 << 20 {
                    return Err(error(
                        ErrorKind::Invalid,
                        "snapshot L1 tables are too large",
                    ));
                }
                let bytes = stream.read(entry.l1_offset, entry.l1_size * 8).await?;
                snapshots.push(SnapshotInfo {
                    name: entry.name,
                    size: entry.size,
                });
                snapshot_l1.push(be64s(&bytes));
            }
        }
        let backing = match &header.backing_name {
            Some(name) => Some(
                Self::open_backing(
                    &stream,
                    name,
                    header.backing_format.as_deref(),
                    ctx,
                    allow,
                    depth,
                )
                .await?,
            ),
            None => None,
        };
        Ok(QcowFormat {
            stream,
            stream_size,
            header,
            l1,
            snapshots,
            snapshot_l1,
            backing,
            l2_cache: Mutex::new(HashMap::new()),
            cluster_cache: Mutex::new(Vec::new()),
        })
    }

    async fn open_backing(
        stream: &Arc<dyn Stream>,
        name: &str,
        format: Option<&str>,
        ctx: &OpenContext,
        allow: &[String],
        depth: usize,
    ) -> Result<Box<dyn Format>> {
        if depth + 1 >= MAX_CHAIN {
            return Err(error(
                ErrorKind::Invalid,
                format!("backing chain is deeper than {MAX_CHAIN} (at '{name}')"),
            ));
        }
        let spec = stream.relative(name)?;
        let plain =
            !name.starts_with('/') && !name.contains("://") && !name.split('/').any(|c| c == "..");
        if !plain {
            let location = location_of(&spec)
                .map(|l| normalize_location(&l))
                .unwrap_or_default();
            let permitted = allow.iter().any(|prefix| {
                let p = normalize_location(prefix);
                location == p || location.starts_with(&format!("{}/", p.trim_end_matches('/')))
            });
            if !permitted {
                return Err(error(
                    ErrorKind::PermissionDenied,
                    format!(
                        "backing file '{name}' of {} is outside the image's directory; list its \
                         directory in the spec key '{ALLOW_KEY}' to follow it",
                        stream.describe()
                    ),
                ));
            }
        }
        let backing_stream: Arc<dyn Stream> =
            Arc::from(ctx.registry().open_stream(&spec, ctx).await.map_err(|e| {
                Error::new(e.kind(), format!("cannot open backing file '{name}': {e}"))
            })?);
        let named = match format {
            Some("qcow2") => Some("qcow"),
            // qemu calls VHD "vpc".
            Some("vpc") => Some("vhd"),
            other => other,
        };
        let factory = match named {
            Some("raw") => None,
            Some(driver) => Some(
                ctx.registry()
                    .format(driver)
                    .map_err(|_| {
                        Error::unsupported(format!(
                            "qcow: backing file '{name}' has format '{}', which no loaded \
                             driver reads",
                            format.unwrap_or_default()
                        ))
                    })?
                    .clone(),
            ),
            None => ctx.registry().probe(&*backing_stream).await?,
        };
        // What no driver recognises is raw, as qemu reads it.
        let Some(factory) = factory else {
            let size = backing_stream.size().await?;
            return Ok(Box::new(RawBacking {
                stream: backing_stream,
                size,
            }));
        };
        if factory.name() == "qcow" {
            // Followed here, so that the chain's depth and allowed locations carry on.
            let inner = Box::pin(QcowFormat::open(backing_stream, ctx, allow, depth + 1)).await?;
            return Ok(Box::new(inner));
        }
        let spec = SourceSpec::from_value(serde_json::json!({ "type": factory.name() }))?;
        factory
            .open_stream(backing_stream, &spec, ctx)
            .await
            .map_err(|e| Error::new(e.kind(), format!("backing file '{name}': {e}")))
    }

    fn view(&self, snap: Option<usize>) -> Result<(&[u64], u64)> {
        match snap {
            None => Ok((&self.l1, self.header.size)),
            Some(i) => self
                .snapshot_l1
                .get(i)
                .map(|l1| (l1.as_slice(), self.snapshots[i].size))
                .ok_or_else(|| Error::invalid(format!("no snapshot number {i}"))),
        }
    }

    async fn l2_table(&self, offset: u64) -> Result<Arc<Vec<u64>>> {
        if let Some(t) = self
            .l2_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&offset)
        {
            return Ok(t.clone());
        }
        let len = l2_table_len(&self.header);
        if offset.saturating_add(len) > self.stream_size {
            return Err(error(
                ErrorKind::Invalid,
                format!(
                    "L2 table at {offset} is past the end of the file ({} bytes)",
                    self.stream_size
                ),
            ));
        }
        let table = Arc::new(be64s(&self.stream.read(offset, len).await?));
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= L2_CACHE
            && let Some(k) = cache.keys().next().copied()
        {
            cache.remove(&k);
        }
        cache.insert(offset, table.clone());
        Ok(table)
    }

    /// Maps the byte at `virt` of the view with L1 table `l1`.
    async fn lookup(&self, l1: &[u64], virt: u64) -> Result<(Mapping, u64)> {
        let (l1_index, l2_index, in_cluster) = split(&self.header, virt);
        let to_cluster_end = self.header.cluster_size() - in_cluster;
        let Some(&l1_entry) = l1.get(l1_index as usize) else {
            return Ok((Mapping::Unallocated, to_cluster_end));
        };
        let offset = l2_offset(&self.header, l1_entry);
        if offset == 0 {
            return Ok((Mapping::Unallocated, to_cluster_end));
        }
        let table = self.l2_table(offset).await?;
        let (entry, bitmap) = if self.header.extended_l2 {
            let i = (l2_index * 2) as usize;
            (table[i], table[i + 1])
        } else {
            (table[l2_index as usize], 0)
        };
        classify(&self.header, entry, bitmap, in_cluster, self.stream_size)
    }

    /// Cuts `[offset, offset + length)` into runs of one kind, merging runs contiguous in
    /// the file.
    async fn runs(&self, l1: &[u64], offset: u64, length: u64) -> Result<Vec<(u64, u64, Mapping)>> {
        let mut runs: Vec<(u64, u64, Mapping)> = Vec::new();
        let end = offset + length;
        let mut pos = offset;
        while pos < end {
            let (mapping, run) = self.lookup(l1, pos).await?;
            let n = run.min(end - pos);
            let merged = match (runs.last_mut(), mapping) {
                (Some((start, len, Mapping::Data(h))), Mapping::Data(host))
                    if *h + *len == host && *start + *len == pos =>
                {
                    *len += n;
                    true
                }
                (Some((_, len, last)), m)
                    if (*last == Mapping::Zero && m == Mapping::Zero)
                        || (*last == Mapping::Unallocated && m == Mapping::Unallocated) =>
                {
                    *len += n;
                    true
                }
                _ => false,
            };
            if !merged {
                runs.push((pos, n, mapping));
            }
            pos += n;
        }
        Ok(runs)
    }

    async fn cluster(&self, host: u64, len: u64) -> Result<Arc<Vec<u8>>> {
        if let Some((_, c)) = self
            .cluster_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(h, _)| *h == host)
        {
            return Ok(c.clone());
        }
        let len = len.min(self.stream_size.saturating_sub(host));
        let raw = self.stream.read(host, len).await?;
        let data = Arc::new(decompress(&self.header, &raw)?);
        let mut cache = self.cluster_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CLUSTER_CACHE {
            cache.remove(0);
        }
        cache.push((host, data.clone()));
        Ok(data)
    }

    async fn read_run(&self, pos: u64, len: u64, mapping: Mapping) -> Result<Option<Bytes>> {
        match mapping {
            Mapping::Zero => Ok(None),
            Mapping::Data(host) => {
                // A data cluster at the end of a file may be cut short, so a read inside it can
                // start past the end: what the file does not hold reads as zeros.
                let avail = self.stream_size.saturating_sub(host).min(len);
                if avail == 0 {
                    return Ok(Some(Bytes::from(vec![0u8; len as usize])));
                }
                let data = self.stream.read(host, avail).await?;
                if avail == len {
                    return Ok(Some(data));
                }
                let mut buf = vec![0u8; len as usize];
                buf[..data.len()].copy_from_slice(&data);
                Ok(Some(Bytes::from(buf)))
            }
            Mapping::Compressed {
                host,
                len: stored,
                at,
            } => {
                let cluster = self.cluster(host, stored).await?;
                let at = at as usize;
                Ok(Some(Bytes::copy_from_slice(
                    &cluster[at..at + len as usize],
                )))
            }
            Mapping::Unallocated => match &self.backing {
                None => Ok(None),
                Some(b) => {
                    let bsize = b.size();
                    if pos >= bsize {
                        return Ok(None);
                    }
                    let n = len.min(bsize - pos);
                    let data = b.read(None, pos, n).await?;
                    if n == len {
                        return Ok(Some(data));
                    }
                    let mut buf = vec![0u8; len as usize];
                    buf[..data.len()].copy_from_slice(&data);
                    Ok(Some(Bytes::from(buf)))
                }
            },
        }
    }
}

#[async_trait]
impl Format for QcowFormat {
    fn describe(&self) -> String {
        format!(
            "qcow{} image on {}",
            if self.header.version == 1 { "" } else { "2" },
            self.stream.describe()
        )
    }

    fn format_name(&self) -> &str {
        "qcow"
    }

    fn size(&self) -> u64 {
        self.header.size
    }

    fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    async fn read(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes> {
        let (l1, size) = self.view(snap)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "read {offset}~{length} is past the end of {} ({size} bytes)",
                self.describe()
            )));
        }
        let runs = self.runs(l1, offset, length).await?;
        if let [(pos, len, mapping)] = runs.as_slice()
            && let Some(data) = self.read_run(*pos, *len, *mapping).await?
        {
            return Ok(data);
        }
        let unbacked = self.backing.is_none();
        if let [(_, _, m)] = runs.as_slice()
            && (*m == Mapping::Zero || (*m == Mapping::Unallocated && unbacked))
        {
            return Ok(rbdx_source::buffer::zeros(length as usize));
        }
        let mut buf = BufferPool::global().take(length as usize);
        let mut pieces = futures::stream::iter(runs)
            .map(|(pos, len, mapping)| async move {
                self.read_run(pos, len, mapping)
                    .await
                    .map(|d| (pos, len, d))
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some((pos, len, data)) = pieces.try_next().await? {
            let at = (pos - offset) as usize;
            match data {
                Some(data) => buf[at..at + data.len()].copy_from_slice(&data),
                None => buf[at..at + len as usize].fill(0),
            }
        }
        Ok(buf.freeze())
    }

    async fn extents(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>> {
        let (l1, size) = self.view(snap)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "extents {offset}~{length} are past the end of {}",
                self.describe()
            )));
        }
        let mut out = Vec::new();
        for (pos, len, mapping) in self.runs(l1, offset, length).await? {
            match mapping {
                Mapping::Data(_) | Mapping::Compressed { .. } => out.push(Extent::data(pos, len)),
                Mapping::Zero => out.push(Extent::zero(pos, len)),
                Mapping::Unallocated => match &self.backing {
                    Some(b) if pos < b.size() => {
                        let n = len.min(b.size() - pos);
                        out.extend(b.extents(None, pos, n).await?);
                        if n < len {
                            out.push(Extent::zero(pos + n, len - n));
                        }
                    }
                    _ => out.push(Extent::zero(pos, len)),
                },
            }
        }
        Ok(normalize(out, offset, length, ExtentKind::Zero))
    }
}

/// Entry points for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use rbdx_source::{Format, MemoryStream, OpenContext, Registry};

    /// Opens `bytes` as a qcow image and reads its first MiB and the extents of its first
    /// 64 MiB, at the head and at each snapshot; errors are fine, panics and hangs are not.
    pub async fn image(bytes: &[u8]) {
        let stream = Arc::new(MemoryStream::new("fuzz", bytes.to_vec()));
        let ctx = OpenContext::new(Arc::new(Registry::new()));
        let Ok(format) = super::QcowFormat::open(stream, &ctx, &[], 0).await else {
            return;
        };
        let views = std::iter::once(None).chain((0..format.snapshots().len().min(4)).map(Some));
        for view in views {
            let size = format.view_size(view);
            let _ = format.read(view, 0, size.min(1 << 20)).await;
            let _ = format.extents(view, 0, size.min(64 << 20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_normalize_lexically() {
        assert_eq!(normalize_location("/a/b/../c/./d"), "/a/c/d");
        assert_eq!(normalize_location("http://h:80/x/../y"), "http://h:80/y");
        assert_eq!(normalize_location("/a/../../etc"), "/etc");
    }
}
