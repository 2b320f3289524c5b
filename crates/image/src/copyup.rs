//! Reads through to a migration source, and copy-up of a source object with its snapshot
//! history.
//!
//! A destination object is copied in *steps*, one per destination snapshot (oldest first)
//! and one for the head, each holding the source's bytes of that object at the source view
//! the destination view was made from: the whole object for the first view, and for each
//! later view only what changed since the view before when the source can tell
//! ([`MigrationSource::changed`]: an rbdx image answers from its clones' overlaps), else the
//! whole object again. Consecutive steps with the same bytes form one group;
//! each group is written with the snapshot context of the destination snapshots older than
//! it, so the store keeps exactly the clones the snapshots need (one write with an empty
//! context when nothing changed, which costs no clone at all). Every group but the last sets
//! the `rbdx.copyup` xattr, and the last removes it in the same atomic write: a head object
//! carrying it is a copy cut short, which readers ignore and the next copier redoes (the
//! writes are idempotent: clones already kept are never changed again).
//!
//! Under migration a destination head object exists exactly when it has been copied (a
//! discard keeps it, empty), so existence, checked for the xattr, is the checkpoint.

use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::{ErrorKind as StoreKind, ExtentSet, ReadOp, SnapContext, SnapId, WriteOp};

use crate::error::{Error, Result};
use crate::image::Inner;
use crate::layering::read_below;
use crate::migration::{MigrationRole, MigrationSource, MigrationSpec, MigrationState};
use crate::objectmap::ObjectState;

/// The xattr marking a head object of a migration destination whose copy has not finished:
/// its head does not show the destination yet, and its copy starts again when needed.
pub const COPYUP_XATTR: &str = "rbdx.copyup";

/// An object's content as writes (object offset, bytes); `None`: absent or all zeros.
type Content = Option<Vec<(u64, Bytes)>>;

/// What one step of an object copy writes.
#[derive(Debug)]
enum StepData {
    /// The object's whole content at the view: writes (object offset, bytes), or `None` when
    /// it is absent or all zeros there.
    Full(Content),
    /// What changed since the previous view: new bytes, and ranges that read as zeros now.
    Delta {
        writes: Vec<(u64, Bytes)>,
        zeros: Vec<(u64, u64)>,
    },
}

/// One step of an object copy: the destination snapshot it fills (`None`: the head).
struct Step {
    dst_snap: Option<u64>,
    data: StepData,
}

/// Returns true for the record of a destination that reads its source: once commit has
/// started, every object is copied and the source may be gone.
fn reads_source(m: &MigrationSpec) -> bool {
    m.role == MigrationRole::Destination && m.state != MigrationState::Committing
}

impl Inner {
    /// Returns the migration record if this image is a migration destination.
    pub(crate) fn migration_dst(&self) -> Option<MigrationSpec> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .header
            .migration
            .as_ref()
            .filter(|m| reads_source(m))
            .cloned()
    }

    /// Returns true if this image is a migration destination that still reads its source
    /// (without copying the record: this is asked on every object read).
    pub(crate) fn reads_migration_source(&self) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.header.migration.as_ref().is_some_and(reads_source)
    }

    /// Returns the open migration source, opening it on first use.
    pub(crate) async fn source(&self, spec: &MigrationSpec) -> Result<Arc<dyn MigrationSource>> {
        let mut cached = self.migration_source.lock().await;
        if let Some(source) = cached.as_ref() {
            return Ok(source.clone());
        }
        let source = self
            .cluster
            .sources()
            .open_source(&self.cluster, spec)
            .await
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "cannot open the migration source of image {}: {e}",
                        self.name
                    ),
                )
            })?;
        *cached = Some(source.clone());
        Ok(source)
    }

    /// Returns the source view (source snapshot key, or `None` for its head) and how many
    /// bytes of it show through, for destination view `dst_snap` (`None`: the head).
    pub(crate) fn source_view(
        &self,
        spec: &MigrationSpec,
        source: &dyn MigrationSource,
        dst_snap: Option<u64>,
    ) -> Result<(Option<u64>, u64)> {
        let header = self.header();
        let head_view = spec.copy.as_ref().and_then(|c| c.head_snap);
        let (view, dst_size) = match dst_snap {
            None => (head_view, header.size),
            Some(id) => {
                let size = header.snapshots.get(&id).map_or(0, |s| s.size);
                (spec.snap_map.get(&id).copied(), size)
            }
        };
        let mut overlap = dst_size.min(source.view_size(view)?);
        if dst_snap.is_none() {
            overlap = overlap.min(spec.overlap);
        }
        Ok((view, overlap))
    }

    /// Reads `[offset, offset + length)` of this view from the migration source.
    pub(crate) async fn read_source(
        &self,
        spec: &MigrationSpec,
        offset: u64,
        length: u64,
    ) -> Result<Bytes> {
        let source = self.source(spec).await?;
        let (view, overlap) =
            self.source_view(spec, source.as_ref(), self.snap.as_ref().map(|s| s.id))?;
        read_below(offset, length, overlap, async |at, len| {
            source.read(view, at, len).await
        })
        .await
    }

    /// Returns true if head object `objectno` of a migration destination has been copied
    /// completely (it exists without the copy-up mark).
    pub(crate) async fn copied(
        &self,
        objectno: u64,
        map_state: Option<ObjectState>,
    ) -> Result<bool> {
        if self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&objectno)
        {
            return Ok(true);
        }
        if map_state == Some(ObjectState::Nonexistent) {
            return Ok(false);
        }
        let oid = self.data_oid(objectno);
        let op = ReadOp::new().get_xattrs();
        let complete = match self.store.read_op(&self.data_io, &oid, &op, None).await {
            Ok(mut res) => !res
                .take_map(0)
                .unwrap_or_default()
                .contains_key(COPYUP_XATTR),
            Err(e) if e.kind() == StoreKind::NotFound => false,
            Err(e) => return Err(Error::store(format!("cannot check {oid}"), e)),
        };
        if complete {
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(objectno);
        }
        Ok(complete)
    }

    /// Returns the source's writes for object `objectno` at one destination view.
    async fn source_object_writes(
        &self,
        spec: &MigrationSpec,
        source: &dyn MigrationSource,
        objectno: u64,
        dst_snap: Option<u64>,
    ) -> Result<Content> {
        let (view, overlap) = self.source_view(spec, source, dst_snap)?;
        let layout = self.layout();
        let mut writes = Vec::new();
        for (o, image_off, len) in layout.object_pieces_below(objectno, overlap) {
            for run in source.allocation(view, image_off, len).await? {
                let start = run.offset.max(image_off);
                let end = run.end().min(image_off + len);
                if run.data && start < end {
                    for (at, data) in source.read_data(view, start, end - start).await? {
                        writes.push((o + (at - image_off), data));
                    }
                }
            }
        }
        Ok((!writes.is_empty()).then_some(writes))
    }

    /// Returns what changed in object `objectno` between source views `from` and `to` (both
    /// showing `overlap` bytes): the new bytes and the ranges that now read as zeros, in object
    /// offsets; `None` if the source cannot tell.
    async fn source_object_delta(
        &self,
        source: &dyn MigrationSource,
        objectno: u64,
        (from, to): (Option<u64>, Option<u64>),
        overlap: u64,
    ) -> Result<Option<(Vec<(u64, Bytes)>, Vec<(u64, u64)>)>> {
        let layout = self.layout();
        let mut writes = Vec::new();
        let mut zeros = Vec::new();
        for (o, image_off, len) in layout.object_pieces_below(objectno, overlap) {
            let Some(changed) = source.changed(from, to, image_off, len).await? else {
                return Ok(None);
            };
            for e in changed {
                let mut holes = ExtentSet::from_range(e.offset, e.length);
                for (at, data) in source.read_data(to, e.offset, e.length).await? {
                    holes.subtract(at, data.len() as u64);
                    writes.push((o + (at - image_off), data));
                }
                zeros.extend(
                    holes
                        .extents()
                        .iter()
                        .map(|h| (o + (h.offset - image_off), h.length)),
                );
            }
        }
        Ok(Some((writes, zeros)))
    }

    /// Copies source object `objectno` with its history into this destination, unless it is
    /// copied already. The caller holds the exclusive lock and the object's lock. Returns
    /// true if the object exists afterwards.
    ///
    /// The first view is read whole (sparse); each later view is read whole only if the source
    /// cannot say what changed since the view before, otherwise only what changed is read and
    /// written on top.
    pub(crate) async fn migrate_object(
        &self,
        spec: &MigrationSpec,
        objectno: u64,
        map_state: Option<ObjectState>,
        create_empty: bool,
    ) -> Result<bool> {
        if self.copied(objectno, map_state).await? {
            return Ok(true);
        }
        let source = self.source(spec).await?;
        let header = self.header();
        let mut steps = Vec::new();
        // The source view and overlap of the previous step, while the object has content.
        let mut previous: Option<(Option<u64>, u64)> = None;
        for dst_snap in header.snapshots.keys().map(|id| Some(*id)).chain([None]) {
            let (view, overlap) = self.source_view(spec, source.as_ref(), dst_snap)?;
            let delta = match previous {
                Some((from, before)) if before == overlap => {
                    self.source_object_delta(source.as_ref(), objectno, (from, view), overlap)
                        .await?
                }
                _ => None,
            };
            let data = match delta {
                Some((writes, zeros)) => StepData::Delta { writes, zeros },
                None => StepData::Full(
                    self.source_object_writes(spec, source.as_ref(), objectno, dst_snap)
                        .await?,
                ),
            };
            previous = match &data {
                StepData::Full(None) => None,
                _ => Some((view, overlap)),
            };
            steps.push(Step { dst_snap, data });
        }
        if !create_empty && steps.iter().all(|s| matches!(s.data, StepData::Full(None))) {
            return Ok(false);
        }
        if map_state.is_some_and(|s| s != ObjectState::Exists) {
            self.mark(objectno, ObjectState::Exists).await?;
        }
        // Group steps that leave the object as the step before did; each group starts after
        // the snapshots before it.
        let mut groups: Vec<(Vec<u64>, &StepData)> = Vec::new();
        let mut older: Vec<u64> = Vec::new();
        for step in &steps {
            let same = match (groups.last(), &step.data) {
                (Some(_), StepData::Delta { writes, zeros }) => {
                    writes.is_empty() && zeros.is_empty()
                }
                (Some((_, StepData::Full(a))), StepData::Full(b)) => a == b,
                _ => false,
            };
            if !same {
                groups.push((older.clone(), &step.data));
            }
            if let Some(id) = step.dst_snap {
                older.push(id);
            }
        }
        let oid = self.data_oid(objectno);
        let last = groups.len() - 1;
        let mut exists = !matches!(map_state, Some(ObjectState::Nonexistent));
        for (i, (before, data)) in groups.into_iter().enumerate() {
            let snapc = SnapContext::from_snaps(before.iter().map(|id| SnapId(*id)));
            let final_group = i == last;
            let op = match data {
                StepData::Full(None) if !final_group && !exists => continue,
                StepData::Full(None) if !final_group => WriteOp::new().remove(),
                StepData::Full(writes) => {
                    let mut op = WriteOp::new().create(false).truncate(0);
                    for (offset, data) in writes.iter().flatten() {
                        op = op.write(*offset, data.clone());
                    }
                    op
                }
                StepData::Delta { writes, zeros } => {
                    let mut op = WriteOp::new().create(false);
                    for (offset, length) in zeros {
                        op = op.zero(*offset, *length);
                    }
                    for (offset, data) in writes {
                        op = op.write(*offset, data.clone());
                    }
                    op
                }
            };
            let op = if final_group {
                op.xattr_remove(COPYUP_XATTR)
            } else {
                op.xattr_set(COPYUP_XATTR, Bytes::from_static(b"partial"))
            };
            match self.store.operate(&self.data_io, &oid, &op, &snapc).await {
                Ok(_) => {}
                Err(e) if e.kind() == StoreKind::NotFound => {}
                Err(e) => return Err(Error::store(format!("cannot copy up {oid}"), e)),
            }
            exists = !matches!(data, StepData::Full(None)) || final_group;
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(objectno);
        Ok(true)
    }
}

impl crate::Image {
    /// Copies object `objectno` of this migration destination from its source, with its
    /// snapshot history, unless it is copied already or the source has no data for it.
    /// Takes the exclusive lock like a write. Returns true if the object exists afterwards.
    pub async fn migrate_object(&self, objectno: u64) -> Result<bool> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _gate = inner.gate.read().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh_if_stale().await?;
        let Some(spec) = inner.migration_dst() else {
            return Err(Error::invalid(format!(
                "image {} is not the destination of a migration",
                inner.name
            )));
        };
        let _object = inner.objects.lock(objectno).await;
        let state = inner.map.lock().await.as_ref().map(|m| m.get(objectno));
        inner.migrate_object(&spec, objectno, state, false).await
    }

    /// Marks head objects `objects` of this migration destination as existing in the object
    /// map, in one write, ahead of copying them with [`Self::migrate_object`]: the copies
    /// then need no map update each. Marking an object that ends up absent is harmless (the
    /// map may overstate, never understate). Takes the exclusive lock like a write.
    pub async fn prepare_copies(&self, objects: &[u64]) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _gate = inner.gate.read().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh_if_stale().await?;
        inner.mark_existing(objects).await
    }

    /// Returns the source of this migration destination and, for each destination view
    /// (snapshots oldest first, then the head), the source view it shows and how many bytes
    /// of it show through; `None` if the image is not a destination that reads its source.
    pub async fn migration_source_views(
        &self,
    ) -> Result<Option<(Arc<dyn MigrationSource>, Vec<(Option<u64>, u64)>)>> {
        let inner = &self.inner;
        inner.refresh_if_stale().await?;
        let Some(spec) = inner.migration_dst() else {
            return Ok(None);
        };
        let source = inner.source(&spec).await?;
        let header = inner.header();
        let views = header
            .snapshots
            .keys()
            .map(|id| Some(*id))
            .chain([None])
            .map(|dst_snap| inner.source_view(&spec, source.as_ref(), dst_snap))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((source, views)))
    }

    /// Returns the number of data objects of the head.
    pub fn object_count(&self) -> u64 {
        self.layout().num_objects(self.size())
    }
}
