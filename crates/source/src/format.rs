//! The [`Format`] trait: a stream (or an image) seen as an image with snapshots.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::extent::{Extent, ExtentKind, nonzero_runs};

/// A snapshot of a source image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// The image size at that snapshot.
    pub size: u64,
}

/// An image read from a source: its head and its snapshots (oldest first).
///
/// # Contract
///
/// - `snap == None` is the head; `Some(i)` is `snapshots()[i]`. Reads past that view's size
///   are `Invalid`.
/// - [`Format::extents`] covers the requested range exactly, in order, without overlaps;
///   `Zero` extents read as zeros, so copies may leave holes there.
#[async_trait]
pub trait Format: Send + Sync + Debug {
    /// Says what the source is, for messages (secrets redacted).
    fn describe(&self) -> String;

    /// Returns the format's type name (`raw`, `qcow`, …).
    fn format_name(&self) -> &str;

    /// Returns the head's size.
    fn size(&self) -> u64;

    /// Returns the snapshots, oldest first.
    fn snapshots(&self) -> &[SnapshotInfo];

    /// Reads `length` bytes at `offset` of the head or a snapshot.
    async fn read(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes>;

    /// Returns the data and zero extents of `[offset, offset + length)`.
    async fn extents(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>>;

    /// Returns the size of a view.
    fn view_size(&self, snap: Option<usize>) -> u64 {
        match snap {
            None => self.size(),
            Some(i) => self.snapshots().get(i).map_or(0, |s| s.size),
        }
    }

    /// Reads the data of `[offset, offset + length)` without its zeros: `(offset, bytes)`
    /// pieces, leaving out zero extents and all-zero blocks of `block` bytes.
    async fn read_sparse(
        &self,
        snap: Option<usize>,
        offset: u64,
        length: u64,
        block: usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        let mut out = Vec::new();
        for e in self.extents(snap, offset, length).await? {
            if e.kind == ExtentKind::Zero {
                continue;
            }
            let data = self.read(snap, e.offset, e.length).await?;
            for (at, len) in nonzero_runs(&data, block) {
                out.push((e.offset + at as u64, data.slice(at..at + len)));
            }
        }
        Ok(out)
    }
}
