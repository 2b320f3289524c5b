//! Which bytes of an image may hold data and which certainly read as zeros, so that copies,
//! exports and usage reports can skip holes without reading them.
//!
//! Object granularity: an object the object map calls nonexistent (or, without a valid map,
//! that the store does not have) is a hole, unless a clone's parent shows through it, in which
//! case the parent's allocation counts there. Any other object counts as data in full.

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

impl Inner {
    /// Completes the object states of a migration destination view: absent objects show the
    /// source's allocation, within the source's overlap.
    async fn source_allocation(
        &self,
        spec: &crate::migration::MigrationSpec,
        states: Vec<(u64, u64, bool)>,
    ) -> Result<Vec<Allocation>> {
        let source = self.source(spec).await?;
        let (view, overlap) =
            self.source_view(spec, source.as_ref(), self.snap.as_ref().map(|s| s.id))?;
        let mut out = Vec::new();
        for (at, len, exists) in states {
            let inside = if exists || at >= overlap {
                0
            } else {
                len.min(overlap - at)
            };
            if inside > 0 {
                for run in source.allocation(view, at, inside).await? {
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
}

impl Image {
    /// Returns the allocation of `[offset, offset + length)` of this view (the head, or the
    /// snapshot the image is open at): runs in order, covering the range exactly, adjacent
    /// runs always different.
    pub async fn allocation(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        self.allocation_with(offset, length, true).await
    }

    /// Like [`Image::allocation`], but objects this image does not have count as holes even
    /// where a parent or migration source shows through: what the image itself stores.
    pub async fn own_allocation(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        self.allocation_with(offset, length, false).await
    }

    async fn allocation_with(
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
            let mut out = Vec::new();
            for (at, len, exists) in states {
                push(
                    &mut out,
                    Allocation {
                        offset: at,
                        length: len,
                        data: exists,
                    },
                );
            }
            return Ok(out);
        }
        if let Some(spec) = inner.migration_dst() {
            return inner.source_allocation(&spec, states).await;
        }
        let parent = inner.parent_image().await?;
        let overlap = parent
            .as_ref()
            .map_or(0, |(spec, image)| spec.overlap.min(image.size()));
        let mut out = Vec::new();
        for (at, len, exists) in states {
            if exists || at >= overlap {
                push(
                    &mut out,
                    Allocation {
                        offset: at,
                        length: len,
                        data: exists,
                    },
                );
                continue;
            }
            let inside = len.min(overlap - at);
            if let Some((_, image)) = &parent {
                for run in Box::pin(image.allocation(at, inside)).await? {
                    push(&mut out, run);
                }
            }
            push(
                &mut out,
                Allocation {
                    offset: at + inside,
                    length: len - inside,
                    data: false,
                },
            );
        }
        Ok(out)
    }
}
