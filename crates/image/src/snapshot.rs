//! Snapshots: taken with the store's self-managed snapshots, recorded in the header, each with
//! a frozen copy of the object map.
//!
//! Creating one quiesces this handle's writes and takes the exclusive lock (so the lock owner,
//! if another process, hands it over and re-reads the header, and with it the new snapshot
//! context, before it writes again). With fast-diff, the head map's "exists" entries become
//! "exists-clean" afterwards, so the next diff knows what changed since.

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{ErrorKind as StoreKind, ReadOp, SnapId, WriteOp};

use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::features::{Features, OpFeatures};
use crate::header::{FLAG_OBJECT_MAP_INVALID, Header, Protection, SnapInfo, SnapNamespace, now};
use crate::image::{Image, load_object_map};
use crate::io::{CONCURRENCY, Effect};
use crate::journaling::Event;
use crate::objectmap::{ObjectMap, ObjectState};

/// Progress of a long operation: bytes (or objects) done and the total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Counts finished steps of a long operation whose steps end in any order, and reports each.
#[derive(Debug)]
pub(crate) struct StepCounter {
    done: std::sync::atomic::AtomicU64,
    total: u64,
}

impl StepCounter {
    /// Counts towards `total` steps.
    pub fn new(total: u64) -> Self {
        StepCounter {
            done: std::sync::atomic::AtomicU64::new(0),
            total,
        }
    }

    /// Counts one more finished step and reports it.
    pub fn step(&self, progress: Progress<'_>) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        progress(n, self.total);
    }
}

/// Finds the user's snapshot `name` in a header being changed.
fn snapshot_mut<'a>(h: &'a mut Header, name: &str, image: &str) -> Result<&'a mut SnapInfo> {
    h.snapshots
        .values_mut()
        .find(|s| s.name == name && s.namespace.is_user())
        .ok_or_else(|| Error::not_found(format!("snapshot {name} of image {image} does not exist")))
}

fn check_snap_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('@') {
        return Err(Error::invalid(format!("invalid snapshot name '{name}'")));
    }
    Ok(())
}

impl Image {
    /// Returns the user's snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapInfo>> {
        self.inner.refresh().await?;
        Ok(self.inner.header().user_snapshots().cloned().collect())
    }

    /// Returns every snapshot, those in the trash namespace too, oldest first.
    pub async fn all_snapshots(&self) -> Result<Vec<SnapInfo>> {
        self.inner.refresh().await?;
        Ok(self.inner.header().snapshots.into_values().collect())
    }

    /// Returns the snapshot named `name` as this handle last read it; not-found if it does not
    /// exist.
    pub fn snapshot_named(&self, name: &str) -> Result<SnapInfo> {
        self.inner
            .header()
            .snapshot_by_name(name)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "snapshot {name} of image {} does not exist",
                    self.inner.name
                ))
            })
    }

    /// Takes a snapshot named `name`.
    pub async fn snap_create(&self, name: &str) -> Result<SnapInfo> {
        let event = Event::SnapCreate { name: name.into() };
        self.inner.log_op(event, self.snap_create_now(name)).await
    }

    async fn snap_create_now(&self, name: &str) -> Result<SnapInfo> {
        check_snap_name(name)?;
        self.create_snapshot(name, SnapNamespace::User).await
    }

    /// Takes a snapshot named `name` in namespace `namespace`; the snapshot limit counts the
    /// user's snapshots only.
    pub(crate) async fn create_snapshot(
        &self,
        name: &str,
        namespace: SnapNamespace,
    ) -> Result<SnapInfo> {
        self.inner.check_writable()?;
        let inner = &self.inner;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let header = inner.header();
        let taken = |h: &crate::Header| h.snapshots.values().any(|s| s.name == name);
        if taken(&header) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {name} of image {} already exists", inner.name),
            ));
        }
        if let Some(limit) = header.snap_limit
            && namespace.is_user()
            && header.snapshots.len() as u64 >= limit
        {
            return Err(Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "image {} has reached its snapshot limit of {limit}",
                    inner.name
                ),
            ));
        }
        let id = inner
            .store
            .snap_create(inner.data_io.pool())
            .await
            .ctx(|| format!("cannot allocate a snapshot id for image {}", inner.name))?
            .0;
        let frozen = inner.map.lock().await.clone();
        let map_valid = frozen.is_some();
        if let Some(map) = &frozen {
            inner.store_object_map(Some(id), map).await?;
        }
        let snap = SnapInfo {
            id,
            name: name.to_owned(),
            size: header.size,
            timestamp: now(),
            protection: Protection::Unprotected,
            flags: if header.features.contains(Features::OBJECT_MAP) && !map_valid {
                FLAG_OBJECT_MAP_INVALID
            } else {
                0
            },
            parent: header.parent.clone(),
            namespace,
        };
        let record = snap.clone();
        let result = inner
            .update_header(|h| {
                if taken(h) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("snapshot {name} of image {} already exists", inner.name),
                    ));
                }
                h.snap_seq = h.snap_seq.max(id);
                h.snapshots.insert(id, record.clone());
                Ok(())
            })
            .await;
        if let Err(e) = result {
            let _ = inner
                .store
                .snap_remove(inner.data_io.pool(), SnapId(id))
                .await;
            let oid = crate::names::object_map_object(&inner.id, Some(id));
            let _ = inner
                .remove_object(&inner.io, &oid, &rbdx_objstore::SnapContext::empty())
                .await;
            return Err(e);
        }
        if header.features.contains(Features::FAST_DIFF) {
            let mut guard = inner.map.lock().await;
            if let Some(map) = guard.as_mut() {
                for i in 0..map.len() {
                    if map.get(i) == ObjectState::Exists {
                        map.set(i, ObjectState::ExistsClean);
                    }
                }
                inner.store_object_map(None, map).await?;
            }
        }
        Ok(snap)
    }

    /// Removes snapshot `name`; refused while it is protected. A snapshot that format 2
    /// clones still use moves to the trash namespace instead, until its last clone is gone.
    pub async fn snap_remove(&self, name: &str) -> Result<()> {
        let event = Event::SnapRemove { name: name.into() };
        self.inner.log_op(event, self.snap_remove_now(name)).await
    }

    async fn snap_remove_now(&self, name: &str) -> Result<()> {
        self.inner.check_writable()?;
        let inner = &self.inner;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let snap = self.snapshot_named(name)?;
        if snap.protection != Protection::Unprotected {
            return Err(Error::busy(format!(
                "snapshot {name} of image {} is protected; unprotect it first",
                inner.name
            )));
        }
        if !crate::children::list(&inner.store, &inner.io, &inner.id, snap.id)
            .await?
            .is_empty()
        {
            // Format 2 clones still read it: it waits in the trash for the last of them.
            let trash_name = crate::clone_v2::new_uuid()?;
            inner
                .update_header(|h| {
                    let s = snapshot_mut(h, name, &inner.name)?;
                    s.name = trash_name.clone();
                    s.namespace = SnapNamespace::Trash {
                        original_name: name.to_owned(),
                    };
                    h.op_features = h.op_features.set(OpFeatures::SNAP_TRASH, true);
                    Ok(())
                })
                .await?;
            return Ok(());
        }
        self.remove_snapshot(&snap).await
    }

    /// Removes snapshot `id` if it waits in the trash namespace and no clone uses it any more
    /// (nothing to do otherwise).
    pub(crate) async fn remove_trashed_snapshot(&self, id: u64) -> Result<()> {
        self.inner.check_writable()?;
        let inner = &self.inner;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let Some(snap) = inner.header().snapshots.get(&id).cloned() else {
            return Ok(());
        };
        if snap.namespace.is_user()
            || !crate::children::list(&inner.store, &inner.io, &inner.id, id)
                .await?
                .is_empty()
        {
            return Ok(());
        }
        self.remove_snapshot(&snap).await
    }

    /// Removes snapshot `snap` for good: its object map, its header record and its store
    /// snapshot. The caller holds the gate and the lock.
    pub(crate) async fn remove_snapshot(&self, snap: &SnapInfo) -> Result<()> {
        let inner = &self.inner;
        let name = &snap.name;
        let header = inner.header();
        // Keep fast-diff exact: what changed before the removed snapshot now counts as
        // changed in the next newer map.
        if header.features.contains(Features::FAST_DIFF) {
            let removed =
                load_object_map(&inner.store, &inner.io, &inner.id, Some(snap.id)).await?;
            let next = header
                .snapshots
                .range(snap.id + 1..)
                .next()
                .map(|(id, _)| *id);
            if let Some(removed) = removed {
                match next {
                    Some(next_id) => {
                        if let Some(mut m) =
                            load_object_map(&inner.store, &inner.io, &inner.id, Some(next_id))
                                .await?
                        {
                            merge_dirty(&mut m, &removed);
                            inner.store_object_map(Some(next_id), &m).await?;
                        }
                    }
                    None => {
                        let mut guard = inner.map.lock().await;
                        if let Some(m) = guard.as_mut() {
                            merge_dirty(m, &removed);
                            inner.store_object_map(None, m).await?;
                        }
                    }
                }
            }
        }
        let new = inner
            .update_header(|h| {
                h.snapshots.remove(&snap.id);
                h.clear_clone_child_if_detached();
                if h.snapshots.values().all(|s| s.namespace.is_user()) {
                    h.op_features = h.op_features.set(OpFeatures::SNAP_TRASH, false);
                }
                Ok(())
            })
            .await?;
        if let Some(parent) = &snap.parent {
            crate::layering::unregister_if_unused(
                &inner.cluster,
                &inner.io,
                &inner.id,
                &new,
                parent,
            )
            .await?;
        }
        let oid = crate::names::object_map_object(&inner.id, Some(snap.id));
        inner
            .remove_object(&inner.io, &oid, &rbdx_objstore::SnapContext::empty())
            .await?;
        inner
            .store
            .snap_remove(inner.data_io.pool(), SnapId(snap.id))
            .await
            .ctx(|| format!("cannot remove snapshot {name} from the store"))?;
        Ok(())
    }

    /// Renames snapshot `old` to `new`.
    pub async fn snap_rename(&self, old: &str, new: &str) -> Result<()> {
        let event = Event::SnapRename {
            from: old.into(),
            to: new.into(),
        };
        self.inner
            .log_op(event, self.snap_rename_now(old, new))
            .await
    }

    async fn snap_rename_now(&self, old: &str, new: &str) -> Result<()> {
        check_snap_name(new)?;
        let inner = &self.inner;
        inner
            .update_header(|h| {
                if h.snapshot_by_name(new).is_some() {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("snapshot {new} of image {} already exists", inner.name),
                    ));
                }
                let snap = snapshot_mut(h, old, &inner.name)?;
                snap.name = new.to_owned();
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Sets the protection of snapshot `name`. Protecting a protected snapshot fails with
    /// `Busy`, unprotecting an unprotected one with `InvalidArgument`, as `rbd` does.
    pub async fn snap_set_protection(&self, name: &str, protect: bool) -> Result<()> {
        let event = match protect {
            true => Event::SnapProtect { name: name.into() },
            false => Event::SnapUnprotect { name: name.into() },
        };
        let op = self.snap_set_protection_now(name, protect);
        self.inner.log_op(event, op).await
    }

    async fn snap_set_protection_now(&self, name: &str, protect: bool) -> Result<()> {
        let inner = &self.inner;
        if !protect {
            let snap = {
                inner.refresh().await?;
                self.snapshot_named(name)?
            };
            // Format 2 clones do not need the protection.
            let children: Vec<_> =
                crate::children::list(&inner.store, &inner.io, &inner.id, snap.id)
                    .await?
                    .into_iter()
                    .filter(|c| c.clone_format == 1)
                    .collect();
            if !children.is_empty() {
                return Err(Error::busy(format!(
                    "snapshot {name} of image {} has {} child image(s)",
                    inner.name,
                    children.len()
                )));
            }
        }
        inner
            .update_header(|h| {
                if protect && !h.features.contains(Features::LAYERING) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("image {} does not have the layering feature", inner.name),
                    ));
                }
                let snap = snapshot_mut(h, name, &inner.name)?;
                match (protect, snap.protection) {
                    (true, Protection::Protected) => {
                        Err(Error::busy(format!("snapshot {name} is already protected")))
                    }
                    (false, Protection::Unprotected) => Err(Error::invalid(format!(
                        "snapshot {name} is already unprotected"
                    ))),
                    _ => {
                        snap.protection = if protect {
                            Protection::Protected
                        } else {
                            Protection::Unprotected
                        };
                        Ok(())
                    }
                }
            })
            .await
            .map(|_| ())
    }

    /// Sets (`Some`) or clears (`None`) the maximum number of snapshots.
    pub async fn snap_set_limit(&self, limit: Option<u64>) -> Result<()> {
        let event = Event::SnapLimit { limit };
        self.inner
            .log_op(event, self.snap_set_limit_now(limit))
            .await
    }

    async fn snap_set_limit_now(&self, limit: Option<u64>) -> Result<()> {
        self.inner
            .update_header(|h| {
                if let Some(l) = limit
                    && (h.snapshots.len() as u64) > l
                {
                    return Err(Error::invalid(format!(
                        "the image already has {} snapshots, more than {l}",
                        h.snapshots.len()
                    )));
                }
                h.snap_limit = limit;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Rolls the head back to snapshot `name`: size, data and object map.
    pub async fn snap_rollback(&self, name: &str, progress: Progress<'_>) -> Result<()> {
        let event = Event::SnapRollback { name: name.into() };
        let op = self.snap_rollback_now(name, progress);
        self.inner.log_op(event, op).await
    }

    async fn snap_rollback_now(&self, name: &str, progress: Progress<'_>) -> Result<()> {
        self.rollback_to(|| self.snapshot_named(name), progress)
            .await
    }

    /// Rolls the head back to the snapshot with store id `id`, of any namespace (a forced
    /// promotion drops a mirror snapshot's delta copied in part so).
    pub async fn snap_rollback_id(&self, id: u64, progress: Progress<'_>) -> Result<()> {
        let name = self.inner.name.clone();
        self.rollback_to(
            || {
                self.inner
                    .header()
                    .snapshots
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Error::not_found(format!("image {name} has no snapshot {id}")))
            },
            progress,
        )
        .await
    }

    async fn rollback_to(
        &self,
        find: impl Fn() -> Result<SnapInfo>,
        progress: Progress<'_>,
    ) -> Result<()> {
        self.inner.check_writable()?;
        let inner = &self.inner;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let snap = find()?;
        let header = inner.header();
        let layout = header.layout;
        let snap_map = if header.features.contains(Features::OBJECT_MAP)
            && snap.flags & FLAG_OBJECT_MAP_INVALID == 0
        {
            load_object_map(&inner.store, &inner.io, &inner.id, Some(snap.id)).await?
        } else {
            None
        };
        let total = layout.num_objects(header.size.max(snap.size));
        let head_map = {
            // Cover every object the rollback may write, so each write is recorded.
            let mut guard = inner.map.lock().await;
            if let Some(map) = guard.as_mut()
                && map.len() < total
            {
                map.resize(total);
                inner.store_object_map(None, map).await?;
            }
            guard.clone()
        };
        let done = StepCounter::new(total);
        futures::stream::iter(0..total)
            .map(|objectno| {
                let snap_map = &snap_map;
                let head_map = &head_map;
                let done = &done;
                async move {
                    let in_snap = objectno < layout.num_objects(snap.size)
                        && snap_map
                            .as_ref()
                            .is_none_or(|m| m.get(objectno).may_exist());
                    let in_head = head_map
                        .as_ref()
                        .is_none_or(|m| m.get(objectno).may_exist());
                    let oid = inner.data_oid(objectno);
                    let data = if in_snap {
                        let op = ReadOp::new().read(0, None);
                        match inner
                            .store
                            .read_op(&inner.data_io, &oid, &op, Some(SnapId(snap.id)))
                            .await
                        {
                            Ok(mut res) => res.take_data(0),
                            Err(e) if e.kind() == StoreKind::NotFound => None,
                            Err(e) => return Err(Error::store(format!("cannot read {oid}"), e)),
                        }
                    } else {
                        None
                    };
                    match data {
                        Some(data) => {
                            inner
                                .object_op(objectno, WriteOp::new().write_full(data), Effect::Write)
                                .await?
                        }
                        None if in_head => {
                            inner
                                .object_op(objectno, WriteOp::new().remove(), Effect::Delete)
                                .await?
                        }
                        None => {}
                    }
                    done.step(progress);
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await?;
        {
            let mut guard = inner.map.lock().await;
            if let Some(map) = guard.as_mut() {
                map.resize(layout.num_objects(snap.size));
                inner.store_object_map(None, map).await?;
            }
        }
        let parent = snap.parent.clone();
        inner
            .update_header(|h| {
                h.size = snap.size;
                h.parent = parent.clone();
                Ok(())
            })
            .await?;
        progress(total, total);
        Ok(())
    }
}

/// Marks objects that were dirty in `removed` as dirty in `next` where `next` says clean.
fn merge_dirty(next: &mut ObjectMap, removed: &ObjectMap) {
    for i in 0..next.len().min(removed.len()) {
        if removed.get(i) == ObjectState::Exists && next.get(i) == ObjectState::ExistsClean {
            next.set(i, ObjectState::Exists);
        }
    }
}
