//! Image I/O: byte extents mapped to data objects, with the object map kept exact.
//!
//! Writes mark an object as existing in the object map before writing it; removals mark it
//! pending, remove it, then mark it nonexistent. Each transition and its data operation run
//! under the object's lock, so the map never claims an object is absent while it exists.
//! Reads of objects the map (or a snapshot's map) says are absent return zeros without asking
//! the store.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{ErrorKind as StoreKind, ReadOp, SnapId, WriteOp};

use crate::error::{Error, ErrorKind, Result};
use crate::image::{Image, Inner, place};
use crate::journaled::Change;
use crate::journaling::{Event, MAX_EVENT_WRITE};
use crate::layout::ObjectExtent;
use crate::objectmap::{ObjectMap, ObjectState};

/// Object operations in flight for one request.
pub(crate) const CONCURRENCY: usize = 16;

/// What a data operation does to its object, for the object map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Creates or changes the object.
    Write,
    /// Changes the object only if it exists (zeroing, truncating).
    Modify,
    /// Removes the object (in a clone, empties it so that the parent stays hidden).
    Remove,
    /// Removes the object even in a clone, so that the parent shows through again.
    Delete,
}

impl Inner {
    pub(crate) fn check_range(&self, offset: u64, length: u64, size: u64) -> Result<()> {
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::invalid(format!(
                "extent {offset}~{length} is past the end of image {} ({size} bytes)",
                self.name
            ))),
        }
    }

    /// Applies `op` to data object `objectno`, keeping the object map exact; in a clone,
    /// copies the parent's data up first.
    pub(crate) async fn object_op(
        &self,
        objectno: u64,
        mut op: WriteOp,
        mut effect: Effect,
    ) -> Result<()> {
        let oid = self.data_oid(objectno);
        let snapc = self.snapc();
        if matches!(effect, Effect::Write | Effect::Modify) {
            // A write to an object that needs no map transition and no copy-up runs beside
            // other such writes; anything that changes the object's state waits for them.
            let _shared = self.objects.lock_shared(objectno).await;
            if self.settled(objectno).await {
                return match self.store.operate(&self.data_io, &oid, &op, &snapc).await {
                    Ok(_) => Ok(()),
                    Err(e) if effect == Effect::Modify && e.kind() == StoreKind::NotFound => Ok(()),
                    Err(e) => Err(Error::store(format!("cannot write {oid}"), e)),
                };
            }
        }
        let _object = self.objects.lock(objectno).await;
        let state = {
            let map = self.map.lock().await;
            map.as_ref().map(|m| m.get(objectno))
        };
        let from_parent = effect != Effect::Delete && self.overlaps_parent(objectno);
        if from_parent {
            // Removing the object would let the parent show through: keep it, empty.
            if effect == Effect::Remove {
                op = WriteOp::new().create(false).truncate(0);
            }
            effect = Effect::Write;
        }
        if effect != Effect::Write && state == Some(ObjectState::Nonexistent) {
            return Ok(());
        }
        match effect {
            Effect::Write | Effect::Modify => {
                if matches!(state, Some(s) if s != ObjectState::Exists) {
                    self.mark(objectno, ObjectState::Exists).await?;
                }
                if from_parent {
                    self.copy_up(objectno, state).await?;
                }
                match self.store.operate(&self.data_io, &oid, &op, &snapc).await {
                    Ok(_) => Ok(()),
                    Err(e) if effect == Effect::Modify && e.kind() == StoreKind::NotFound => Ok(()),
                    Err(e) => Err(Error::store(format!("cannot write {oid}"), e)),
                }
            }
            Effect::Remove | Effect::Delete => {
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&objectno);
                if state.is_some() {
                    self.mark(objectno, ObjectState::Pending).await?;
                }
                self.remove_object(&self.data_io, &oid, &snapc).await?;
                if state.is_some() {
                    self.mark(objectno, ObjectState::Nonexistent).await?;
                }
                Ok(())
            }
        }
    }

    /// True if a write to object `objectno` needs no object-map transition and no copy-up:
    /// it is then a plain store write. The caller holds the object's lock, shared at least.
    pub(crate) async fn settled(&self, objectno: u64) -> bool {
        let state = {
            let map = self.map.lock().await;
            map.as_ref().map(|m| m.get(objectno))
        };
        // A migration destination's map may call an object existing before its copy-up is
        // done (the copier marks a window first), so only clones trust the map here.
        matches!(state, None | Some(ObjectState::Exists))
            && (!self.overlaps_parent(objectno)
                || (self.migration_dst().is_none() && self.known_to_exist(objectno, state)))
    }

    /// Sets one entry of the head object map and stores it.
    pub(crate) async fn mark(&self, objectno: u64, state: ObjectState) -> Result<()> {
        let mut guard = self.map.lock().await;
        let Some(map) = guard.as_mut() else {
            return Ok(());
        };
        if !map.set(objectno, state) {
            return Ok(());
        }
        self.store_map_range(map, objectno, objectno).await
    }

    /// Stores entries `first..=last` of the head object map.
    async fn store_map_range(&self, map: &ObjectMap, first: u64, last: u64) -> Result<()> {
        let op = map.update_op(first, last);
        let oid = crate::names::object_map_object(&self.id, None);
        self.store
            .operate(&self.io, &oid, &op, &rbdx_objstore::SnapContext::empty())
            .await
            .map_err(|e| Error::store(format!("cannot update object map {oid}"), e))?;
        Ok(())
    }

    /// Marks every object of `objects` that the head map says is absent as existing, in one
    /// write of the map.
    pub(crate) async fn mark_existing(&self, objects: &[u64]) -> Result<()> {
        let mut guard = self.map.lock().await;
        let Some(map) = guard.as_mut() else {
            return Ok(());
        };
        let mut changed: Option<(u64, u64)> = None;
        for &objectno in objects {
            if map.get(objectno) == ObjectState::Nonexistent
                && map.set(objectno, ObjectState::Exists)
            {
                changed = Some(changed.map_or((objectno, objectno), |(lo, hi)| {
                    (lo.min(objectno), hi.max(objectno))
                }));
            }
        }
        match changed {
            Some((first, last)) => self.store_map_range(map, first, last).await,
            None => Ok(()),
        }
    }

    /// Reads object extent `e` with `op` (whose step 0 reads the extent) at the head or a
    /// snapshot. `None` if the object is absent, or not yet fully copied from a migration
    /// source: then the parent or the source provides the bytes.
    async fn fetch_object(
        &self,
        e: ObjectExtent,
        snap: Option<u64>,
        op: ReadOp,
    ) -> Result<Option<rbdx_objstore::ReadResult>> {
        let known_absent = match snap {
            Some(_) => self.snap_map_says_absent(e.objectno),
            // Only the lock owner has the head map loaded; others need not wait for it.
            None if self.lock.owned() => self
                .map
                .lock()
                .await
                .as_ref()
                .is_some_and(|m| !m.get(e.objectno).may_exist()),
            None => false,
        };
        if known_absent {
            return Ok(None);
        }
        // A snapshot of a migration destination shows a copied object only once its whole
        // history is in place (the head object exists without the copy-up mark); before
        // that, the object's clones may be missing or hold an older step of the copy.
        if snap.is_some() && self.reads_migration_source() && !self.copied(e.objectno, None).await?
        {
            return Ok(None);
        }
        let oid = self.data_oid(e.objectno);
        // A migration destination's head object with the copy-up mark is a copy cut short:
        // the source still has the right bytes.
        let check_copy = snap.is_none()
            && self.reads_migration_source()
            && !self
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&e.objectno);
        let op = if check_copy { op.get_xattrs() } else { op };
        match self
            .store
            .read_op(&self.data_io, &oid, &op, snap.map(SnapId))
            .await
        {
            Ok(mut res) => {
                if check_copy
                    && res
                        .take_map(1)
                        .unwrap_or_default()
                        .contains_key(crate::copyup::COPYUP_XATTR)
                {
                    return Ok(None);
                }
                Ok(Some(res))
            }
            Err(err) if err.kind() == StoreKind::NotFound => Ok(None),
            Err(err) => Err(Error::store(format!("cannot read {oid}"), err)),
        }
    }

    /// Reads one object extent at the head or a snapshot; `None` if the object is absent
    /// (then the parent, if any, provides the bytes).
    pub(crate) async fn read_object(
        &self,
        e: ObjectExtent,
        snap: Option<u64>,
    ) -> Result<Option<Bytes>> {
        let op = ReadOp::new().read(e.offset, Some(e.length));
        let Some(mut res) = self.fetch_object(e, snap, op).await? else {
            return Ok(None);
        };
        let len = e.length as usize;
        let data = res.take_data(0).unwrap_or_default();
        if data.len() == len {
            return Ok(Some(data));
        }
        // A short object: its bytes, then zeros (only the tail is zeroed).
        let mut buf = BytesMut::with_capacity(len);
        buf.extend_from_slice(&data[..data.len().min(len)]);
        buf.resize(len, 0);
        Ok(Some(buf.freeze()))
    }

    /// Reads the data of the image extent at `offset` that object extent `e` holds, as
    /// (image offset, bytes) runs without its holes and all-zero 4 KiB blocks.
    async fn read_piece_data(
        &self,
        offset: u64,
        e: ObjectExtent,
        snap: Option<u64>,
    ) -> Result<Vec<(u64, Bytes)>> {
        let at = offset + e.buffer_offset;
        let op = ReadOp::new().sparse_read(e.offset, Some(e.length));
        let Some(mut res) = self.fetch_object(e, snap, op).await? else {
            let below = self.read_parent(at, e.length).await?;
            return Ok(crate::layering::nonzero_writes(at, &below));
        };
        let mut runs = Vec::new();
        for (object_offset, data) in res.take_sparse(0).unwrap_or_default() {
            let image_offset = at + object_offset.saturating_sub(e.offset);
            runs.extend(crate::layering::nonzero_writes(image_offset, &data));
        }
        Ok(runs)
    }

    /// Reads one object extent of an image read starting at `offset`, falling through to the
    /// parent for absent objects.
    pub(crate) async fn read_piece(
        &self,
        offset: u64,
        e: ObjectExtent,
        snap: Option<u64>,
    ) -> Result<Bytes> {
        match self.read_object(e, snap).await? {
            Some(data) => Ok(data),
            None => self.read_parent(offset + e.buffer_offset, e.length).await,
        }
    }

    /// Discards an extent: whole objects get `whole` (`Remove` keeps a clone's parent hidden,
    /// `Delete` lets it show through, for a shrink past which it cannot show anyway), parts
    /// of objects are zeroed.
    async fn discard_extents(&self, offset: u64, length: u64, whole_effect: Effect) -> Result<()> {
        let header = self.header();
        let layout = header.layout;
        let extents = layout.map(offset, length);
        futures::stream::iter(extents)
            .map(|e| {
                let whole =
                    e.offset == 0 && e.length >= layout.object_len_within(e.objectno, header.size);
                async move {
                    if whole {
                        self.object_op(e.objectno, WriteOp::new().remove(), whole_effect)
                            .await
                    } else {
                        self.object_op(
                            e.objectno,
                            WriteOp::new().zero(e.offset, e.length),
                            Effect::Modify,
                        )
                        .await
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}

impl Image {
    /// Reads `length` bytes at `offset` (of the head, or of the snapshot the image is open at).
    pub async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        let inner = &self.inner;
        let _gate = inner.gate.read().await;
        inner.refresh_if_stale().await?;
        inner.check_range(offset, length, self.size())?;
        let _settled = inner.journal_read_guard(offset, length).await;
        let layout = inner.layout();
        let snap = inner.snap.as_ref().map(|s| s.id);
        let extents = layout.map(offset, length);
        if extents.len() == 1 {
            return inner.read_piece(offset, extents[0], snap).await;
        }
        let mut buf = BytesMut::zeroed(length as usize);
        let mut pieces = futures::stream::iter(extents)
            .map(|e| async move { inner.read_piece(offset, e, snap).await.map(|d| (e, d)) })
            .buffer_unordered(CONCURRENCY);
        while let Some((e, data)) = pieces.try_next().await? {
            place(&mut buf, e.buffer_offset as usize, &data);
        }
        Ok(buf.freeze())
    }

    /// Reads the data of `[offset, offset + length)` (of the head, or of the snapshot the
    /// image is open at) as (image offset, bytes) runs in order, leaving out what reads as
    /// zeros: holes of the objects, absent objects without a parent or source below, and
    /// all-zero 4 KiB blocks. Copies use it to read only what they must write.
    pub async fn read_data(&self, offset: u64, length: u64) -> Result<Vec<(u64, Bytes)>> {
        let inner = &self.inner;
        let _gate = inner.gate.read().await;
        inner.refresh_if_stale().await?;
        inner.check_range(offset, length, self.size())?;
        let _settled = inner.journal_read_guard(offset, length).await;
        let layout = inner.layout();
        let snap = inner.snap.as_ref().map(|s| s.id);
        let pieces: Vec<Vec<(u64, Bytes)>> = futures::stream::iter(layout.map(offset, length))
            .map(|e| inner.read_piece_data(offset, e, snap))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut runs: Vec<(u64, Bytes)> = pieces.into_iter().flatten().collect();
        runs.sort_by_key(|(at, _)| *at);
        Ok(runs)
    }

    async fn begin_write(&self) -> Result<tokio::sync::OwnedRwLockReadGuard<()>> {
        self.inner.check_writable()?;
        let gate = self.inner.gate.clone().read_owned().await;
        crate::lock::ensure_lock(&self.inner).await?;
        Ok(gate)
    }

    /// Applies `change` now, or, for an image that journals, journals it and has it applied
    /// in the background (see `journaled`).
    async fn change(&self, change: Change) -> Result<()> {
        let gate = self.begin_write().await?;
        let inner = &self.inner;
        let (offset, length) = match &change {
            Change::Write { offset, data } => (*offset, data.len() as u64),
            Change::Zero { offset, length, .. } | Change::Same { offset, length, .. } => {
                (*offset, *length)
            }
        };
        inner.check_range(offset, length, inner.head_size())?;
        let Some(log) = inner.change_log().await else {
            return match change {
                Change::Write { offset, data } => inner.write_unlogged(offset, data).await,
                Change::Zero { offset, length, .. } => inner.discard_unlogged(offset, length).await,
                Change::Same {
                    offset,
                    length,
                    pattern,
                } => inner.write_same_unlogged(offset, length, &pattern).await,
            };
        };
        let gate = Arc::new(gate);
        match change {
            // A large write is journaled in pieces, each an event of its own.
            Change::Write { offset, data } => {
                let mut at = 0;
                while at < data.len() {
                    let piece = data.slice(at..data.len().min(at + MAX_EVENT_WRITE));
                    let piece_offset = offset + at as u64;
                    at += piece.len();
                    let change = Change::Write {
                        offset: piece_offset,
                        data: piece,
                    };
                    inner.journal_change(&log, &gate, change).await?;
                }
                Ok(())
            }
            other => inner.journal_change(&log, &gate, other).await,
        }
    }

    /// Writes `data` at `offset`.
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<()> {
        self.change(Change::Write { offset, data }).await
    }

    /// Discards `[offset, offset + length)`: whole objects are removed, parts are zeroed.
    pub async fn discard(&self, offset: u64, length: u64) -> Result<()> {
        let zeroes = false;
        self.change(Change::Zero {
            offset,
            length,
            zeroes,
        })
        .await
    }

    /// Makes `[offset, offset + length)` read as zeros, deallocating where possible.
    pub async fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        let zeroes = true;
        self.change(Change::Zero {
            offset,
            length,
            zeroes,
        })
        .await
    }

    /// Writes `pattern` repeatedly over `[offset, offset + length)`; `length` must be a
    /// multiple of the pattern length.
    pub async fn write_same(&self, offset: u64, length: u64, pattern: &[u8]) -> Result<()> {
        if pattern.is_empty() || !length.is_multiple_of(pattern.len() as u64) {
            return Err(Error::invalid(format!(
                "write-same length {length} is not a multiple of the pattern length {}",
                pattern.len()
            )));
        }
        let pattern = Bytes::copy_from_slice(pattern);
        self.change(Change::Same {
            offset,
            length,
            pattern,
        })
        .await
    }

    /// Writes `data` at `offset` if the image holds `compare` there; otherwise fails with
    /// `Mismatch` naming the first differing image offset. The extent must lie in one object.
    pub async fn compare_and_write(&self, offset: u64, compare: Bytes, data: Bytes) -> Result<()> {
        if compare.len() != data.len() {
            return Err(Error::invalid(
                "compare-and-write needs compare and write buffers of the same length",
            ));
        }
        let _gate = self.begin_write().await?;
        let inner = &self.inner;
        inner.check_range(offset, data.len() as u64, inner.head_size())?;
        let _order = inner.journal_order_guard(offset, data.len() as u64).await;
        let tid = inner
            .log(|| Event::CompareAndWrite {
                offset,
                compare: compare.clone(),
                data: data.clone(),
            })
            .await?;
        let result = inner
            .compare_and_write_unlogged(offset, compare, data)
            .await;
        inner.log_applied(tid).await?;
        result
    }

    /// Makes every completed write durable.
    pub async fn flush(&self) -> Result<()> {
        let tid = self.inner.log(|| Event::Flush).await?;
        self.inner.flush_store().await?;
        self.inner.log_applied(tid).await
    }

    /// Changes the size. Shrinking needs `allow_shrink` and discards the bytes past the new end.
    pub async fn resize(&self, size: u64, allow_shrink: bool) -> Result<()> {
        let event = Event::Resize { size };
        self.inner
            .log_op(event, self.resize_now(size, allow_shrink))
            .await
    }

    async fn resize_now(&self, size: u64, allow_shrink: bool) -> Result<()> {
        self.inner.check_writable()?;
        let inner = &self.inner;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        let header = inner.header();
        if size < header.size && !allow_shrink {
            return Err(Error::invalid(format!(
                "shrinking image {} from {} to {size} bytes needs --allow-shrink",
                inner.name, header.size
            )));
        }
        if size < header.size {
            inner
                .discard_extents(size, header.size - size, Effect::Delete)
                .await?;
        }
        let count = header.layout.num_objects(size);
        {
            let mut guard = inner.map.lock().await;
            if let Some(map) = guard.as_mut() {
                map.resize(count);
                inner.store_object_map(None, map).await?;
            }
        }
        inner
            .update_header(|h| {
                h.size = size;
                if let Some(parent) = h.parent.as_mut() {
                    parent.overlap = parent.overlap.min(size);
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

impl Inner {
    /// For a journaling image, holds the objects of `[offset, offset + length)` (in object
    /// order, so two callers never wait for each other in a cycle) from before the change is
    /// journaled until it is applied; nothing otherwise.
    pub(crate) async fn journal_order_guard(
        &self,
        offset: u64,
        length: u64,
    ) -> Vec<crate::objlocks::ObjectGuard> {
        self.journal_guard(offset, length, false).await
    }

    /// For a journaling image, waits until the journaled changes to the objects of
    /// `[offset, offset + length)` are applied, and keeps new ones out while the returned
    /// guards live (readers see their own writes).
    pub(crate) async fn journal_read_guard(
        &self,
        offset: u64,
        length: u64,
    ) -> Vec<crate::objlocks::ObjectGuard> {
        self.journal_guard(offset, length, true).await
    }

    async fn journal_guard(
        &self,
        offset: u64,
        length: u64,
        shared: bool,
    ) -> Vec<crate::objlocks::ObjectGuard> {
        if self.change_log().await.is_none() {
            return Vec::new();
        }
        let mut objects: Vec<u64> = self
            .layout()
            .map(offset, length)
            .iter()
            .map(|e| e.objectno)
            .collect();
        objects.sort_unstable();
        objects.dedup();
        let mut guards = Vec::with_capacity(objects.len());
        for objectno in objects {
            guards.push(match shared {
                true => self.journal_order.lock_shared(objectno).await,
                false => self.journal_order.lock(objectno).await,
            });
        }
        guards
    }

    /// Writes `data` at `offset` without journaling (the caller checked range and lock).
    pub(crate) async fn write_unlogged(&self, offset: u64, data: Bytes) -> Result<()> {
        let header = self.header();
        let extents = header.layout.map(offset, data.len() as u64);
        futures::stream::iter(extents)
            .map(|e| {
                let start = e.buffer_offset as usize;
                let piece = data.slice(start..start + e.length as usize);
                self.object_op(
                    e.objectno,
                    WriteOp::new().write(e.offset, piece),
                    Effect::Write,
                )
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Discards `[offset, offset + length)` without journaling.
    pub(crate) async fn discard_unlogged(&self, offset: u64, length: u64) -> Result<()> {
        self.discard_extents(offset, length, Effect::Remove).await
    }

    /// Writes a repeated pattern without journaling.
    pub(crate) async fn write_same_unlogged(
        &self,
        offset: u64,
        length: u64,
        pattern: &[u8],
    ) -> Result<()> {
        if pattern.iter().all(|&b| b == 0) {
            return self.discard_unlogged(offset, length).await;
        }
        // Expand the pattern one object-size chunk at a time, so memory stays bounded.
        let object_size = self.layout().object_size();
        let chunk = (object_size / pattern.len() as u64).max(1) * pattern.len() as u64;
        let block: Bytes = pattern
            .iter()
            .copied()
            .cycle()
            .take(chunk.min(length) as usize)
            .collect::<Vec<u8>>()
            .into();
        let mut done = 0;
        while done < length {
            let n = (length - done).min(block.len() as u64);
            self.write_unlogged(offset + done, block.slice(..n as usize))
                .await?;
            done += n;
        }
        Ok(())
    }

    /// Compare-and-write without journaling.
    pub(crate) async fn compare_and_write_unlogged(
        &self,
        offset: u64,
        compare: Bytes,
        data: Bytes,
    ) -> Result<()> {
        let header = self.header();
        let extents = header.layout.map(offset, data.len() as u64);
        let [e] = extents.as_slice() else {
            return Err(Error::invalid(
                "compare-and-write must not cross an object or stripe unit boundary",
            ));
        };
        let op = WriteOp::new()
            .create(false)
            .cmp_ext(e.offset, compare.clone())
            .write(e.offset, data);
        match self.object_op(e.objectno, op, Effect::Write).await {
            Ok(()) => Ok(()),
            Err(err)
                if err
                    .store_error()
                    .is_some_and(|s| s.kind() == StoreKind::ComparisonFailed) =>
            {
                let current = self.read_piece(offset, *e, None).await?;
                let at = current
                    .iter()
                    .zip(compare.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0) as u64;
                Err(Error::new(
                    ErrorKind::Mismatch,
                    format!(
                        "compare-and-write on image {}: data differs at offset {}",
                        self.name,
                        offset + at
                    ),
                ))
            }
            Err(err) => Err(err),
        }
    }

    /// Flushes the store.
    pub(crate) async fn flush_store(&self) -> Result<()> {
        self.store
            .flush()
            .await
            .map_err(|e| Error::store(format!("cannot flush image {}", self.name), e))
    }
}
