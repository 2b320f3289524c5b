//! Which bytes of an image may hold data and which certainly read as zeros, so that copies,
//! exports and usage reports can skip holes without reading them.
//!
//! An object the object map calls nonexistent (or, without a valid map, that the store does
//! not have) is a hole, unless a clone's parent shows through it, in which case the parent's
//! allocation counts there. [`Image::allocation`] counts any other object as data in full;
//! [`Image::allocation_exact`] asks the store where inside it the data lies (the holes of an
//! existing object read as zeros: the parent never shows through them).

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
    /// Returns the object map that describes this view if this handle holds it in memory
    /// (a snapshot's, or the head's while this handle owns the lock): `None` if it must be
    /// read from the store.
    async fn map_in_memory(&self) -> Option<Option<ObjectMap>> {
        if self.snap.is_some() {
            return Some(
                self.snap_map
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            );
        }
        if self.lock.owned()
            && let Some(map) = self.map.lock().await.as_ref()
        {
            return Some(Some(map.clone()));
        }
        None
    }

    /// Returns the object map that describes this view, if a valid one exists.
    async fn view_map(&self) -> Result<Option<ObjectMap>> {
        if let Some(map) = self.map_in_memory().await {
            return Ok(map);
        }
        let header = self.header();
        if !header.features.contains(crate::Features::OBJECT_MAP)
            || header.flags & FLAG_OBJECT_MAP_INVALID != 0
        {
            return Ok(None);
        }
        load_object_map(&self.store, &self.io, &self.id, None).await
    }

    /// Splits the piece of data object `objectno` at object offset `offset` (image offset
    /// `at`, `length` bytes) into the runs the store reports as holding data and those that
    /// read as zeros; all of it is absent if the object is.
    async fn object_pieces(
        &self,
        objectno: u64,
        offset: u64,
        at: u64,
        length: u64,
    ) -> Result<Vec<(u64, u64, Piece)>> {
        let oid = self.data_oid(objectno);
        let snap = self.snap.as_ref().map(|s| SnapId(s.id));
        let op = ReadOp::new().extents(offset, Some(length));
        let extents = match self.store.read_op(&self.data_io, &oid, &op, snap).await {
            Ok(mut res) => res.take_extents(0).unwrap_or_default(),
            Err(e) if e.kind() == StoreKind::NotFound => {
                return Ok(vec![(at, length, Piece::Absent)]);
            }
            Err(e) => return Err(Error::store(format!("cannot read {oid}"), e)),
        };
        let mut out = Vec::new();
        let mut next = offset;
        let end = offset + length;
        for (lo, len) in extents {
            let (lo, hi) = (lo.max(next), (lo + len).min(end));
            if lo >= hi {
                continue;
            }
            if lo > next {
                out.push((at + (next - offset), lo - next, Piece::Zero));
            }
            out.push((at + (lo - offset), hi - lo, Piece::Data));
            next = hi;
        }
        if next < end {
            out.push((at + (next - offset), end - next, Piece::Zero));
        }
        Ok(out)
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

/// What one piece of an object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Bytes of an existing object that may hold data.
    Data,
    /// Bytes of an existing object that read as zeros.
    Zero,
    /// Bytes of an absent object: what is below shows through.
    Absent,
}

/// Turns object pieces `(image offset, length, state)`, in order, into runs: data pieces are
/// data, zero pieces holes; absent pieces take what `below` reports for the part under
/// `overlap` (what a parent or migration source shows through) and are holes past it.
async fn fill_holes<'a>(
    states: Vec<(u64, u64, Piece)>,
    overlap: u64,
    below: impl Fn(u64, u64) -> BoxFuture<'a, Result<Vec<Allocation>>>,
) -> Result<Vec<Allocation>> {
    let mut out = Vec::new();
    for (at, len, piece) in states {
        let exists = piece == Piece::Data;
        let inside = if piece != Piece::Absent || at >= overlap {
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
        self.allocation_with(offset, length, true, false).await
    }

    /// Like [`Image::allocation`], but inside each existing object only the extents the
    /// store reports as allocated count as data (one extent read per object, through the
    /// parent chain and a migration source too): what a block-status answer needs so that a
    /// client skips the holes inside partly written objects.
    pub async fn allocation_exact(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        let _settled = self.inner.journal_read_guard(offset, length).await;
        self.allocation_with(offset, length, true, true).await
    }

    /// Like [`Image::allocation`], but objects this image does not have count as holes even
    /// where a parent or migration source shows through: what the image itself stores.
    pub async fn own_allocation(&self, offset: u64, length: u64) -> Result<Vec<Allocation>> {
        self.allocation_with(offset, length, false, false).await
    }

    /// Boxed: a clone's allocation recurses into its parent's.
    fn allocation_with(
        &self,
        offset: u64,
        length: u64,
        through: bool,
        exact: bool,
    ) -> BoxFuture<'_, Result<Vec<Allocation>>> {
        Box::pin(self.allocation_of(offset, length, through, exact))
    }

    async fn allocation_of(
        &self,
        offset: u64,
        length: u64,
        through: bool,
        exact: bool,
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
        // An exact answer reads the extents of every object, which also finds the absent
        // ones: reading the map from the store first would cost more than it saves.
        let map = if exact {
            inner.map_in_memory().await.flatten()
        } else {
            inner.view_map().await?
        };
        let pieces = header.layout.map(offset, length);
        let found: Vec<Vec<(u64, u64, Piece)>> = futures::stream::iter(pieces)
            .map(|e| {
                let map = map.as_ref();
                async move {
                    let at = offset + e.buffer_offset;
                    // Without a map the extent read itself finds absent objects.
                    let known = map.is_some() || !exact;
                    if known && !inner.object_may_exist(map, e.objectno).await? {
                        return Ok::<_, Error>(vec![(at, e.length, Piece::Absent)]);
                    }
                    if !exact {
                        return Ok(vec![(at, e.length, Piece::Data)]);
                    }
                    inner
                        .object_pieces(e.objectno, e.offset, at, e.length)
                        .await
                }
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut states: Vec<(u64, u64, Piece)> = found.into_iter().flatten().collect();
        states.sort_unstable_by_key(|s| s.0);
        if !through {
            return fill_holes(states, 0, |_, _| Box::pin(async { Ok(Vec::new()) })).await;
        }
        if let Some(spec) = inner.migration_dst() {
            let source = inner.source(&spec).await?;
            let (view, overlap) =
                inner.source_view(&spec, source.as_ref(), inner.snap.as_ref().map(|s| s.id))?;
            return fill_holes(states, overlap, |at, len| {
                if exact {
                    source.allocation_exact(view, at, len)
                } else {
                    source.allocation(view, at, len)
                }
            })
            .await;
        }
        match inner.parent_image().await? {
            Some((spec, parent)) => {
                let overlap = spec.overlap.min(parent.size());
                fill_holes(states, overlap, |at, len| {
                    parent.allocation_with(at, len, true, exact)
                })
                .await
            }
            None => fill_holes(states, 0, |_, _| Box::pin(async { Ok(Vec::new()) })).await,
        }
    }
}
