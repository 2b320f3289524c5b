//! Clones: an image whose unwritten objects read through to a protected snapshot of a parent
//! image, up to the overlap.
//!
//! - **Reads** of an object the clone does not have come from the parent at the same image
//!   offsets (zeros past the overlap). The parent is opened lazily at its snapshot, and a
//!   chain of clones is followed to at most [`MAX_DEPTH`] levels.
//! - **Copy-up**: the first write to such an object first creates it with the parent's data,
//!   in one batch that asserts the object is absent, so a concurrent copier and a writer can
//!   never both fill it; the loser simply writes on top. The copy is written with an empty
//!   snapshot context, so the clone's older snapshots see the parent's data in the object too
//!   (what deep-flatten relies on). Discarding a whole object of a clone leaves an empty
//!   object behind instead of removing it, so the parent does not show through again.
//! - **Flatten** copies up every object inside the overlap, then drops the parent link (from
//!   the snapshots too with deep-flatten) and leaves the parent's children registry.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{IoCtx, ObjectStore, PoolId, SnapContext, WriteOp};

use crate::admin::{CreateOptions, Images};
use crate::children::{self, ChildRef};
use crate::error::{Error, Result, StoreContext};
use crate::features::{Features, OpFeatures};
use crate::header::{ParentSpec, Protection};
use crate::image::{Image, Inner, OpenOptions};
use crate::io::CONCURRENCY;
use crate::journaling::Event;
use crate::objectmap::ObjectState;
use crate::snapshot::{Progress, StepCounter};

/// The longest chain of clones followed.
pub const MAX_DEPTH: usize = 16;

/// A clone's parent, named for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentInfo {
    /// Pool name.
    pub pool: String,
    /// Namespace.
    pub namespace: String,
    /// Image name (the id if the name cannot be found).
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// Snapshot name.
    pub snapshot: String,
    /// Bytes of the parent visible through the clone.
    pub overlap: u64,
}

/// A clone, named for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Pool name.
    pub pool: String,
    /// Namespace.
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// Image id.
    pub image_id: String,
}

/// Returns true if every byte is zero.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    // OR-folding whole blocks vectorises; stopping at the first non-zero block keeps the early
    // exit that matters for data, and looking at a block's first bytes alone first spares
    // reading the rest of a block of data.
    let zero = |bytes: &[u8]| bytes.iter().fold(0u8, |acc, &b| acc | b) == 0;
    data.chunks(ZERO_BLOCK).all(|block| {
        let (head, rest) = block.split_at(block.len().min(64));
        zero(head) && zero(rest)
    })
}

/// The granularity at which copies leave zeros out (a file system block).
const ZERO_BLOCK: usize = 4096;

/// Returns `data`, read at object offset `offset`, as writes that leave out its all-zero
/// 4 KiB blocks, so that zeros a source holds as data stay holes in the copy.
pub(crate) fn nonzero_writes(offset: u64, data: &Bytes) -> Vec<(u64, Bytes)> {
    nonzero_pieces(offset, data, ZERO_BLOCK)
}

/// Returns `data`, found at `offset`, as (offset, bytes) pieces that leave out its all-zero
/// blocks of `block` bytes (counted from the start of `data`; the last may be shorter).
pub fn nonzero_pieces(offset: u64, data: &Bytes, block: usize) -> Vec<(u64, Bytes)> {
    let block = block.max(1);
    let mut writes = Vec::new();
    let mut run: Option<usize> = None;
    for (n, chunk) in data.chunks(block).enumerate() {
        let start = n * block;
        match (is_zero(chunk), run) {
            (false, None) => run = Some(start),
            (true, Some(from)) => {
                writes.push((offset + from as u64, data.slice(from..start)));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(from) = run {
        writes.push((offset + from as u64, data.slice(from..)));
    }
    writes
}

pub(crate) async fn image_name(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
) -> Option<String> {
    let op = rbdx_objstore::ReadOp::new().omap_get_by_keys([format!("id_{id}")]);
    let mut res = store
        .read_op(io, crate::names::DIRECTORY, &op, None)
        .await
        .ok()?;
    let map = res.take_map(0)?;
    map.values()
        .next()
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
}

fn registry_key(parent: &ParentSpec, child: &ChildRef) -> String {
    format!(
        "{}{}/{}/{}",
        children::key_prefix(&parent.image_id, parent.snap_id),
        child.pool_id,
        child.namespace,
        child.image_id
    )
}

/// Adds `child` to the children of `parent`.
pub(crate) async fn register_child(
    store: &Arc<dyn ObjectStore>,
    parent: &ParentSpec,
    child: &ChildRef,
) -> Result<()> {
    let value = Bytes::from(serde_json::to_vec(child).unwrap_or_default());
    let io = IoCtx::with_namespace(PoolId(parent.pool_id), parent.namespace.clone());
    store
        .operate(
            &io,
            crate::names::CHILDREN,
            &WriteOp::new().omap_set([(registry_key(parent, child), value)]),
            &SnapContext::empty(),
        )
        .await
        .ctx(|| "cannot register the clone with its parent".to_owned())?;
    Ok(())
}

/// Removes `child` from the children of `parent` (nothing to do if it is not there).
pub(crate) async fn unregister_child(
    store: &Arc<dyn ObjectStore>,
    parent: &ParentSpec,
    child: &ChildRef,
) -> Result<()> {
    let io = IoCtx::with_namespace(PoolId(parent.pool_id), parent.namespace.clone());
    match store
        .operate(
            &io,
            crate::names::CHILDREN,
            &WriteOp::new().omap_remove([registry_key(parent, child)]),
            &SnapContext::empty(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::store("cannot update the children registry", e)),
    }
}

/// Reads `[offset, offset + length)` through `read` where it lies below `overlap`; the rest
/// is zeros.
pub(crate) async fn read_below(
    offset: u64,
    length: u64,
    overlap: u64,
    read: impl AsyncFnOnce(u64, u64) -> Result<Bytes>,
) -> Result<Bytes> {
    if offset >= overlap {
        return Ok(Bytes::from(vec![0u8; length as usize]));
    }
    let inside = length.min(overlap - offset);
    let data = read(offset, inside).await?;
    if inside == length {
        return Ok(data);
    }
    let mut buf = vec![0u8; length as usize];
    buf[..data.len()].copy_from_slice(&data);
    Ok(Bytes::from(buf))
}

impl Inner {
    /// Returns the open parent of what this handle shows, opening it on first use.
    pub(crate) async fn parent_image(&self) -> Result<Option<(ParentSpec, Image)>> {
        let Some(spec) = self.parent_spec() else {
            return Ok(None);
        };
        let mut cached = self.parent.lock().await;
        if let Some((open_spec, image)) = cached.as_ref()
            && open_spec.image_id == spec.image_id
            && open_spec.snap_id == spec.snap_id
            && open_spec.pool_id == spec.pool_id
        {
            return Ok(Some((spec, image.clone())));
        }
        if self.depth + 1 > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "image {} is more than {MAX_DEPTH} clones deep",
                self.name
            )));
        }
        let io = IoCtx::with_namespace(PoolId(spec.pool_id), spec.namespace.clone());
        let name = image_name(&self.store, &io, &spec.image_id)
            .await
            .unwrap_or_else(|| spec.image_id.clone());
        let options = OpenOptions {
            read_only: true,
            snap_id: Some(spec.snap_id),
            depth: self.depth + 1,
            ..OpenOptions::default()
        };
        let image = Image::open_by_id(self.cluster.clone(), io, &name, &spec.image_id, options)
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("cannot open the parent of image {}: {e}", self.name),
                )
            })?;
        *cached = Some((spec.clone(), image.clone()));
        Ok(Some((spec, image)))
    }

    /// Reads `[offset, offset + length)` of the parent (zeros past the overlap, or without a
    /// parent).
    pub(crate) async fn read_parent(&self, offset: u64, length: u64) -> Result<Bytes> {
        if let Some(migration) = self.migration_dst() {
            return self.read_source(&migration, offset, length).await;
        }
        let Some((spec, parent)) = self.parent_image().await? else {
            return Ok(Bytes::from(vec![0u8; length as usize]));
        };
        let overlap = spec.overlap.min(parent.size());
        read_below(offset, length, overlap, async |at, len| {
            Box::pin(parent.read(at, len)).await
        })
        .await
    }

    /// Returns true if object `objectno` holds bytes below the parent overlap.
    pub(crate) fn overlaps_parent(&self, objectno: u64) -> bool {
        let header = self.header();
        let overlap = match (self.migration_dst(), &header.parent) {
            (Some(m), _) => m.overlap.min(header.size),
            (None, Some(spec)) => spec.overlap.min(header.size),
            (None, None) => return false,
        };
        !header
            .layout
            .object_pieces_below(objectno, overlap)
            .is_empty()
    }

    /// Returns true if head object `objectno` is known to exist already (no copy-up needed).
    pub(crate) fn known_to_exist(&self, objectno: u64, map_state: Option<ObjectState>) -> bool {
        map_state.is_some_and(|s| s.may_exist())
            || self
                .known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&objectno)
    }

    /// Returns the writes that give object `objectno` the parent's bytes (empty if the parent
    /// holds only zeros there).
    async fn parent_object_writes(&self, objectno: u64) -> Result<Vec<(u64, Bytes)>> {
        let header = self.header();
        let layout = header.layout;
        let overlap = header
            .parent
            .as_ref()
            .map_or(0, |p| p.overlap.min(header.size));
        let mut writes = Vec::new();
        for (o, image_off, len) in layout.object_pieces_below(objectno, overlap) {
            let data = self.read_parent(image_off, len).await?;
            writes.extend(nonzero_writes(o, &data));
        }
        Ok(writes)
    }

    /// Returns true if every snapshot that reads through to the parent sees exactly what the
    /// head sees of it (same parent, same overlap). Then a copy of the parent's data is right
    /// for those snapshots too, and deep flatten may drop their parent.
    fn snapshots_share_the_parent_view(&self) -> bool {
        let header = self.header();
        let Some(head) = &header.parent else {
            return false;
        };
        let head_overlap = head.overlap.min(header.size);
        header.snapshots.values().all(|s| match &s.parent {
            None => true,
            Some(p) => {
                p.image_id == head.image_id
                    && p.snap_id == head.snap_id
                    && p.overlap.min(s.size) == head_overlap
            }
        })
    }

    /// Creates head object `objectno` with `writes`, unless it exists (a concurrent copier
    /// won). When the snapshots see the same parent bytes, the empty snapshot context makes
    /// the copy visible at older snapshots too; otherwise they keep reading their parent.
    async fn create_copy(&self, objectno: u64, writes: Vec<(u64, Bytes)>) -> Result<()> {
        let mut op = WriteOp::new().create(true);
        for (offset, data) in writes {
            op = op.write(offset, data);
        }
        let oid = self.data_oid(objectno);
        let snapc = if self.snapshots_share_the_parent_view() {
            SnapContext::empty()
        } else {
            self.snapc()
        };
        match self.store.operate(&self.data_io, &oid, &op, &snapc).await {
            Ok(_) => {}
            Err(e) if e.kind() == rbdx_objstore::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::store(format!("cannot copy up {oid}"), e)),
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(objectno);
        Ok(())
    }

    /// Makes sure head object `objectno` of a clone exists, copying the parent's data into
    /// it if it does not. The caller holds the object's lock and has marked the object in
    /// the object map.
    pub(crate) async fn copy_up(
        &self,
        objectno: u64,
        map_state: Option<ObjectState>,
    ) -> Result<()> {
        if let Some(migration) = self.migration_dst() {
            self.migrate_object(&migration, objectno, map_state, true)
                .await?;
            return Ok(());
        }
        if self.known_to_exist(objectno, map_state) {
            return Ok(());
        }
        let writes = self.parent_object_writes(objectno).await?;
        self.create_copy(objectno, writes).await
    }

    /// Copies the parent's data of object `objectno` into the clone for flatten; an object
    /// whose parent bytes are all zeros is left absent (it reads as zeros without a parent).
    async fn flatten_object(&self, objectno: u64) -> Result<()> {
        let _object = self.objects.lock(objectno).await;
        let state = self.map.lock().await.as_ref().map(|m| m.get(objectno));
        if self.known_to_exist(objectno, state) {
            return Ok(());
        }
        let writes = self.parent_object_writes(objectno).await?;
        if writes.is_empty() {
            return Ok(());
        }
        if state.is_some() {
            self.mark(objectno, ObjectState::Exists).await?;
        }
        self.create_copy(objectno, writes).await
    }
}

impl Images {
    /// Creates `name` in this pool namespace as a clone of `parent` at its snapshot `snap`,
    /// which must be protected unless `opts.clone_format` is format 2.
    pub async fn clone_from(
        &self,
        parent: &Image,
        snap: &str,
        name: &str,
        opts: &CreateOptions,
    ) -> Result<String> {
        parent.refresh().await?;
        let header = parent.header();
        if !header.features.contains(Features::LAYERING) {
            return Err(Error::invalid(format!(
                "image {} does not have the layering feature",
                parent.name()
            )));
        }
        let snap_info = header.snapshot_by_name(snap).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "snapshot {snap} of image {} does not exist",
                parent.name()
            ))
        })?;
        let clone_format = opts.clone_format.number();
        if clone_format == 1 && snap_info.protection != Protection::Protected {
            return Err(Error::invalid(format!(
                "snapshot {snap} of image {} must be protected before it can be cloned \
                 (a format 2 clone needs no protection: --rbd-default-clone-format 2)",
                parent.name()
            )));
        }
        let mut opts = opts.clone();
        opts.size = snap_info.size;
        if opts.order.is_none() {
            opts.order = Some(header.layout.order());
        }
        let features = opts.features.unwrap_or(Features::DEFAULT);
        if !features.contains(Features::LAYERING) {
            return Err(Error::invalid("a clone needs the layering feature"));
        }
        let spec = ParentSpec {
            pool_id: parent.io_ctx().pool().0,
            namespace: parent.io_ctx().namespace().to_owned(),
            image_id: parent.id().to_owned(),
            snap_id: snap_info.id,
            overlap: snap_info.size,
        };
        let id = self
            .create_image(name, &opts, Some(spec.clone()), None, async |h| {
                if clone_format == 2 {
                    h.op_features = h.op_features.set(OpFeatures::CLONE_CHILD, true);
                }
                Ok(())
            })
            .await?;
        let record = ChildRef {
            pool_id: self.io_ctx().pool().0,
            namespace: self.io_ctx().namespace().to_owned(),
            image_id: id.clone(),
            clone_format,
        };
        let registered = async {
            register_child(self.store(), &spec, &record).await?;
            if clone_format == 2 {
                crate::clone_v2::set_op_features(
                    self.store(),
                    parent.io_ctx(),
                    parent.id(),
                    &[(OpFeatures::CLONE_PARENT, true)],
                )
                .await?;
            }
            Ok::<(), Error>(())
        };
        if let Err(e) = registered.await {
            let _ = self.remove(name, &|_, _| {}).await;
            return Err(e);
        }
        Ok(id)
    }
}

/// Removes a clone from its parent's children registry once neither its head nor any of its
/// snapshots uses the parent snapshot any more.
pub(crate) async fn unregister_if_unused(
    cluster: &crate::cluster::Cluster,
    child_io: &IoCtx,
    child_id: &str,
    header: &crate::header::Header,
    old: &ParentSpec,
) -> Result<()> {
    let still_used = header.parent.as_ref() == Some(old)
        || header.snapshots.values().any(|s| {
            s.parent
                .as_ref()
                .is_some_and(|p| p.image_id == old.image_id && p.snap_id == old.snap_id)
        });
    if still_used {
        return Ok(());
    }
    let child = ChildRef {
        pool_id: child_io.pool().0,
        namespace: child_io.namespace().to_owned(),
        image_id: child_id.to_owned(),
        clone_format: 1,
    };
    unregister_child(cluster.store(), old, &child).await?;
    crate::clone_v2::child_detached(cluster, old).await
}

impl Image {
    /// Returns the parent of this view (the head's, or the snapshot's) opened read-only at its
    /// snapshot, and how many bytes of it show through; the handle closes with this image.
    pub async fn parent(&self) -> Result<Option<(Image, u64)>> {
        let size = self.size();
        Ok(self
            .inner
            .parent_image()
            .await?
            .map(|(spec, image)| (image, spec.overlap.min(size))))
    }

    /// Describes the parent of the head (or of the snapshot this handle is open at).
    pub async fn parent_info(&self) -> Result<Option<ParentInfo>> {
        let Some(spec) = self.inner.parent_spec() else {
            return Ok(None);
        };
        let store = &self.inner.store;
        let io = IoCtx::with_namespace(PoolId(spec.pool_id), spec.namespace.clone());
        let pool = store
            .pool_by_id(PoolId(spec.pool_id))
            .await
            .map(|p| p.name)
            .unwrap_or_else(|_| spec.pool_id.to_string());
        let image = image_name(store, &io, &spec.image_id)
            .await
            .unwrap_or_else(|| spec.image_id.clone());
        let snapshot = match self.inner.parent_image().await {
            Ok(Some((_, parent))) => parent
                .snapshot()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            _ => spec.snap_id.to_string(),
        };
        Ok(Some(ParentInfo {
            pool,
            namespace: spec.namespace.clone(),
            image,
            image_id: spec.image_id.clone(),
            snapshot,
            overlap: spec.overlap,
        }))
    }

    /// Lists the clones of snapshot `snap` of this image, sorted by pool, namespace, name.
    pub async fn children(&self, snap: &str) -> Result<Vec<ChildInfo>> {
        self.inner.refresh().await?;
        let header = self.inner.header();
        let info = header.snapshot_by_name(snap).ok_or_else(|| {
            Error::not_found(format!(
                "snapshot {snap} of image {} does not exist",
                self.inner.name
            ))
        })?;
        let store = &self.inner.store;
        let mut out = Vec::new();
        for child in children::list(store, &self.inner.io, &self.inner.id, info.id).await? {
            let io = IoCtx::with_namespace(PoolId(child.pool_id), child.namespace.clone());
            let pool = store
                .pool_by_id(PoolId(child.pool_id))
                .await
                .map(|p| p.name)
                .unwrap_or_else(|_| child.pool_id.to_string());
            let image = image_name(store, &io, &child.image_id)
                .await
                .unwrap_or_else(|| child.image_id.clone());
            out.push(ChildInfo {
                pool,
                namespace: child.namespace,
                image,
                image_id: child.image_id,
            });
        }
        out.sort_by(|a, b| {
            (&a.pool, &a.namespace, &a.image).cmp(&(&b.pool, &b.namespace, &b.image))
        });
        Ok(out)
    }

    /// Copies every object the parent still provides into the clone and removes the parent
    /// link.
    pub async fn flatten(&self, progress: Progress<'_>) -> Result<()> {
        self.inner
            .log_op(Event::Flatten, self.flatten_now(progress))
            .await
    }

    async fn flatten_now(&self, progress: Progress<'_>) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _gate = inner.gate.read().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let header = inner.header();
        let Some(old) = header.parent.clone() else {
            return Err(Error::invalid(format!(
                "image {} is not a clone",
                inner.name
            )));
        };
        let layout = header.layout;
        let total = layout.num_objects(header.size);
        let done = StepCounter::new(total);
        futures::stream::iter(0..total)
            .map(|objectno| {
                let done = &done;
                async move {
                    if inner.overlaps_parent(objectno) {
                        inner.flatten_object(objectno).await?;
                    }
                    done.step(progress);
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        // Snapshots that see more or less of the parent than the head keep their parent.
        let deep = header.features.contains(Features::DEEP_FLATTEN)
            && inner.snapshots_share_the_parent_view();
        if deep {
            // The copies are visible at the snapshots too: record that in their maps.
            for snap in header.snapshots.values().filter(|s| s.parent.is_some()) {
                if let Some(mut map) =
                    crate::image::load_object_map(&inner.store, &inner.io, &inner.id, Some(snap.id))
                        .await?
                {
                    let count = layout.num_objects(snap.size).min(map.len());
                    for i in 0..count {
                        if !map.get(i).may_exist() && inner.overlaps_parent(i) {
                            map.set(i, ObjectState::Exists);
                        }
                    }
                    inner.store_object_map(Some(snap.id), &map).await?;
                }
            }
        }
        let new = inner
            .update_header(|h| {
                h.parent = None;
                if deep {
                    for s in h.snapshots.values_mut() {
                        s.parent = None;
                    }
                }
                h.clear_clone_child_if_detached();
                Ok(())
            })
            .await?;
        *inner.parent.lock().await = None;
        unregister_if_unused(&inner.cluster, &inner.io, &inner.id, &new, &old).await?;
        progress(total, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_writes_leave_out_zero_blocks_and_keep_partial_ones() {
        let mut data = vec![0u8; 5 * ZERO_BLOCK + 100];
        data[ZERO_BLOCK + 7] = 1;
        data[2 * ZERO_BLOCK] = 2;
        data[5 * ZERO_BLOCK + 99] = 3;
        let data = Bytes::from(data);

        let writes = nonzero_writes(1 << 20, &data);

        let spans: Vec<(u64, usize)> = writes.iter().map(|(o, b)| (*o, b.len())).collect();
        let block = ZERO_BLOCK as u64;
        assert_eq!(
            spans,
            vec![
                ((1 << 20) + block, 2 * ZERO_BLOCK),
                ((1 << 20) + 5 * block, 100)
            ]
        );
        assert_eq!(writes[0].1, data.slice(ZERO_BLOCK..3 * ZERO_BLOCK));
    }

    #[test]
    fn nonzero_writes_of_zeros_is_empty() {
        assert!(nonzero_writes(0, &Bytes::from(vec![0u8; 3 * ZERO_BLOCK])).is_empty());
    }
}
