//! Which bytes of an image may hold data and which certainly read as zeros, so that copies,
//! exports and usage reports can skip holes without reading them.
//!
//! Object granularity: an object the object map calls nonexistent (or, without a valid map,
//! that the store does not have) is a hole, unless a clone's parent shows through it, in which
//! case the parent's allocation counts there. Any other object counts as data in full.

use futures::future::BoxFuture;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{ErrorKind as StoreKind, ReadOp, SnapId};

use crate::error::{Error, Result};
use crate::header::FLAG_OBJECT_MAP_INVALID;
use crate::image::{Image, Inner, load_object_map};
use crate::io::CONCURRENCY;
use crate::objectmap::ObjectMap;

/// A run of bytes of an image view: data (may hold non-zero bytes) or a hole (reads as zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Image offset of the run.
    pub offset: u64,
    /// Length of the run in bytes.
    pub length: u64,
    /// True if the run may hold data, false if it certainly reads as zeros.
    pub data: bool,
}

impl Allocation {
    /// Returns the offset just past the run.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Appends a run, merging it with the last one when they touch and agree.
fn push(out: &mut Vec<Allocation>, run: Allocation) {
    if run.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.end() == run.offset
        && last.data == run.data
    {
        last.length += run.length;
        return;
    }
    out.push(run);
}

impl Inner {
    /// Returns the object map that describes this view, if a valid one exists.
    async fn view_map(&self) -> Result<Option<ObjectMap>> {
        if self.snap.is_some() {
            return Ok(self.snap_map.clone());
        }
        if self.lock.owned()
            && let Some(map) = self.map.lock().await.as_ref()
        {
            return Ok(Some(map.clone()));
        }
        let header = self.header();
        if !header.features.contains(crate::Features::OBJECT_MAP)
            || header.flags & FLAG_OBJECT_MAP_INVALID != 0
        {
            return Ok(None);
        }
        load_object_map(&self.store, &self.io, &self.id, None).await
    }

    /// Returns true if data object `objectno` may exist in this view.
    async fn object_may_exist(&self, map: Option<&ObjectMap>, objectno: u64) -> Result<bool> {
        if let Some(map) = map {
            return Ok(map.get(objectno).may_exist());
        }
        let oid = self.data_oid(objectno);
        let snap = self.snap.as_ref().map(|s| SnapId(s.id));
        match self
            .store
            .read_op(&self.data_io, &oid, &ReadOp::new().stat(), snap)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == StoreKind::NotFound => Ok(false),
            Err(e) => Err(Error::store(format!("cannot stat {oid}"), e)),
        }
    }
}

/// Turns object pieces `(image offset, length, may exist)`, in order, into runs: pieces of
/// existing objects are data; pieces of absent ones take what `below` reports for the part
/// under `overlap` (what a parent or migration source shows through) and are holes past it.
async fn fill_holes<'a>(
    states: Vec<(u64, u64, bool)>,
    overlap: u64,
    below: impl Fn(u64, u64) -> BoxFuture<'a, Result<Vec<Allocation>>>,
) -> Result<Vec<Allocation>> {
    let mut out = Vec::new();
    for (at, len, exists) in states {
        let inside = if exists || at >= overlap {
            0
        } else {
            len.min(overlap - at)
        };
        if inside > 0 {
            for run in below(at, inside).await? {
                push(&mut out, run);
            }
        }
        push(
            &mut out,
            Allocation {
                offset: at + inside,
                length: len - inside,
                data: exists,
            },
        );
    }
    Ok(out)
}

impl Image {
    /// Returns the allocation of `[offset, offset + length)` of this view (the head, or the
    /// snapshot the image is open at): runs in order, covering the range exactly, adjacent
    /// runs always different.
    pub async fn allocation(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        let _settled = self.inner.journal_read_guard(offset, length).await;
        self.allocation_with(offset, length, true).await
    }

    /// Like [`Image::allocation`], but objects this image does not have count as holes even
    /// where a parent or migration source shows through: what the image itself stores.
    pub async fn own_allocation(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        self.allocation_with(offset, length, false).await
    }

    /// Boxed: a clone's allocation recurses into its parent's.
    fn allocation_with(
        &self,
        offset: u64,
        length: u64,
        through: bool,
    ) -> BoxFuture<'_, Result<Vec<Allocation>>> {
        Box::pin(self.allocation_of(offset, length, through))
    }

    async fn allocation_of(
        &self,
        offset: u64,
        length: u64,
        through: bool,
    ) -> Result<Vec<Allocation>> {
        let inner = &self.inner;
        let header = inner.header();
        let size = self.size();
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "extent {offset}~{length} is past the end of image {} ({size} bytes)",
                inner.name
            )));
        }
        let map = inner.view_map().await?;
        let pieces = header.layout.map(offset, length);
        let mut states: Vec<(u64, u64, bool)> = futures::stream::iter(pieces)
            .map(|e| {
                let map = map.as_ref();
                async move {
                    let exists = inner.object_may_exist(map, e.objectno).await?;
                    Ok::<_, Error>((offset + e.buffer_offset, e.length, exists))
                }
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        states.sort_unstable_by_key(|s| s.0);
        if !through {
            return fill_holes(states, 0, |_, _| Box::pin(async { Ok(Vec::new()) })).await;
        }
        if let Some(spec) = inner.migration_dst() {
            let source = inner.source(&spec).await?;
            let (view, overlap) =
                inner.source_view(&spec, source.as_ref(), inner.snap.as_ref().map(|s| s.id))?;
            return fill_holes(states, overlap, |at, len| source.allocation(view, at, len)).await;
        }
        match inner.parent_image().await? {
            Some((spec, parent)) => {
                let overlap = spec.overlap.min(parent.size());
                fill_holes(states, overlap, |at, len| {
                    parent.allocation_with(at, len, true)
                })
                .await
            }
            None => fill_holes(states, 0, |_, _| Box::pin(async { Ok(Vec::new()) })).await,
        }
    }
}
