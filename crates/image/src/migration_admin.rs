//! The steps of a migration that change image records: creating the destination, changing
//! `migration` records, and removing or restoring the source. The migration crate composes
//! them into prepare, commit and abort.

use std::sync::Arc;

use rbdx_objstore::{IoCtx, ObjectStore, PoolId};

use crate::admin::{CreateOptions, Images};
use crate::children::{self, ChildRef};
use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::features::Features;
use crate::header::{
    FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID, Header, ParentSpec, Protection, SnapInfo, now,
};
use crate::image::write_header_change;
use crate::layering::{register_child, unregister_child};
use crate::migration::{MigrationSpec, SourceSnapshot};
use crate::names;
use crate::snapshot::Progress;

/// A snapshot the destination of a migration starts with.
#[derive(Debug, Clone)]
pub struct TargetSnapshot {
    /// The source snapshot it shows.
    pub source: SourceSnapshot,
    /// The clone parent it keeps after commit (none when flattening).
    pub parent: Option<ParentSpec>,
}

/// Changes the header of image `id` in `io` (named `name` in messages) and tells its
/// watchers.
pub(crate) async fn change_header(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
    name: &str,
    change: impl Fn(&mut Header) -> Result<()>,
) -> Result<Header> {
    let oid = names::header_object(id);
    let (header, _) = write_header_change(store, io, &oid, name, change).await?;
    crate::lock::notify_header(store, io, &oid).await;
    Ok(header)
}

impl Images {
    /// Returns the pool namespace of a record, in this store.
    fn ref_of(&self, id: &str) -> ChildRef {
        ChildRef {
            pool_id: self.io_ctx().pool().0,
            namespace: self.io_ctx().namespace().to_owned(),
            image_id: id.to_owned(),
            clone_format: 1,
        }
    }

    /// Creates image `name` with id `id` as the destination of a migration: `opts` give its
    /// layout, `parent` the clone parent it keeps after commit, `snapshots` the snapshots it
    /// starts with (their object maps are rebuilt once every object is copied), and `spec`
    /// its migration record, whose snapshot map is filled here.
    pub async fn create_migration_target(
        &self,
        name: &str,
        id: &str,
        opts: &CreateOptions,
        parent: Option<ParentSpec>,
        snapshots: &[TargetSnapshot],
        spec: MigrationSpec,
    ) -> Result<String> {
        let store = self.store().clone();
        let io = self.io_ctx().clone();
        let mut registered = Vec::new();
        for p in parent
            .iter()
            .chain(snapshots.iter().filter_map(|s| s.parent.as_ref()))
        {
            if !registered.contains(&(p.image_id.clone(), p.snap_id)) {
                register_child(&store, p, &self.ref_of(id)).await?;
                registered.push((p.image_id.clone(), p.snap_id));
            }
        }
        let created = self
            .create_image(
                name,
                opts,
                parent,
                Some(id.to_owned()),
                async |h: &mut Header| {
                    let pool = h.data_pool_id.map_or(io.pool(), PoolId);
                    let mut spec = spec.clone();
                    let invalid = if h.features.contains(Features::OBJECT_MAP) {
                        FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID
                    } else {
                        0
                    };
                    for snap in snapshots {
                        let sid = store
                            .snap_create(pool)
                            .await
                            .ctx(|| format!("cannot allocate a snapshot id for image {name}"))?
                            .0;
                        h.snapshots.insert(
                            sid,
                            SnapInfo {
                                id: sid,
                                name: snap.source.name.clone(),
                                size: snap.source.size,
                                timestamp: snap.source.timestamp.unwrap_or_else(now),
                                protection: if snap.source.protected {
                                    Protection::Protected
                                } else {
                                    Protection::Unprotected
                                },
                                flags: invalid,
                                parent: snap.parent.clone(),
                                namespace: Default::default(),
                            },
                        );
                        h.snap_seq = h.snap_seq.max(sid);
                        spec.snap_map.insert(sid, snap.source.key);
                    }
                    h.migration = Some(spec);
                    Ok(())
                },
            )
            .await;
        created.map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                Error::new(
                    ErrorKind::AlreadyExists,
                    format!("image {name} already exists"),
                )
            } else {
                e
            }
        })
    }

    /// Changes the migration record of image `id` (named `name` in messages) and tells its
    /// watchers.
    pub async fn update_migration(
        &self,
        id: &str,
        name: &str,
        change: impl Fn(&mut Option<MigrationSpec>) -> Result<()>,
    ) -> Result<Header> {
        change_header(self.store(), self.io_ctx(), id, name, |h| {
            change(&mut h.migration)
        })
        .await
    }

    /// Reads the header of image `id`.
    pub async fn header_by_id(&self, id: &str, name: &str) -> Result<Header> {
        Ok(
            crate::image::read_header(self.store(), self.io_ctx(), &names::header_object(id), name)
                .await?
                .header,
        )
    }

    /// Puts a migration source back under `name` (out of the trash, if it is there) and
    /// clears its migration record, which makes it writable again.
    pub async fn restore_migration_source(&self, id: &str, name: &str) -> Result<()> {
        if self.trash_list().await?.iter().any(|e| e.id == id) {
            match crate::directory::add(self.store(), self.io_ctx(), name, id).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let current =
                        crate::directory::lookup(self.store(), self.io_ctx(), name).await?;
                    if current != id {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            self.trash_forget_entry(id).await?;
        }
        self.update_migration(id, name, |m| {
            *m = None;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Removes a migration source for good: its snapshots (protected or not), data, header
    /// and trash entry. Refused while a snapshot still has clones.
    pub async fn remove_migration_source(
        &self,
        id: &str,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<()> {
        let header = match self.header_by_id(id, name).await {
            Ok(h) => Some(h),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(header) = header {
            for snap in header.snapshots.values() {
                let kids = children::list(self.store(), self.io_ctx(), id, snap.id).await?;
                if !kids.is_empty() {
                    return Err(Error::busy(format!(
                        "snapshot {} of image {name} still has {} clone(s)",
                        snap.name,
                        kids.len()
                    )));
                }
            }
            let pool = header.data_pool_id.map_or(self.io_ctx().pool(), PoolId);
            for snap in header.snapshots.values() {
                let _ = self
                    .store()
                    .snap_remove(pool, rbdx_objstore::SnapId(snap.id))
                    .await;
            }
            // The registry entries go first, while the header still lists the snapshots that
            // name the parents; the migration record stays until the header is deleted, so
            // that a removal cut short is still known as part of the migration.
            let parents = header.parent.iter();
            for p in parents.chain(header.snapshots.values().filter_map(|s| s.parent.as_ref())) {
                unregister_child(self.store(), p, &self.ref_of(id)).await?;
            }
            let oid = names::header_object(id);
            write_header_change(self.store(), self.io_ctx(), &oid, name, |h| {
                h.snapshots.clear();
                Ok(())
            })
            .await?;
        }
        self.remove_data(name, id, progress).await?;
        if self.trash_list().await?.iter().any(|e| e.id == id) {
            self.trash_forget_entry(id).await?;
        }
        let _ = crate::directory::remove(self.store(), self.io_ctx(), name, id).await;
        Ok(())
    }

    /// Moves the clones of the source's snapshots to the destination's matching snapshots:
    /// their parent records and the children registry. `source` is this namespace's image
    /// `source_id`; `dst` and `dst_spec` describe the destination.
    pub async fn reparent_children(
        &self,
        source_id: &str,
        source_header: &Header,
        dst: &Images,
        dst_id: &str,
        dst_spec: &MigrationSpec,
    ) -> Result<usize> {
        let mut moved = 0;
        for snap in source_header.snapshots.values() {
            let Some(dst_snap) = dst_spec
                .snap_map
                .iter()
                .find(|(_, key)| **key == snap.id)
                .map(|(id, _)| *id)
            else {
                continue;
            };
            for child in children::list(self.store(), self.io_ctx(), source_id, snap.id).await? {
                let new = ParentSpec {
                    pool_id: dst.io_ctx().pool().0,
                    namespace: dst.io_ctx().namespace().to_owned(),
                    image_id: dst_id.to_owned(),
                    snap_id: dst_snap,
                    overlap: 0,
                };
                register_child(self.store(), &new, &child).await?;
                let child_io =
                    IoCtx::with_namespace(PoolId(child.pool_id), child.namespace.clone());
                let is_old = |p: &ParentSpec| p.image_id == source_id && p.snap_id == snap.id;
                let relink = |p: &mut Option<ParentSpec>| {
                    if let Some(p) = p.as_mut()
                        && is_old(p)
                    {
                        p.pool_id = new.pool_id;
                        p.namespace = new.namespace.clone();
                        p.image_id = new.image_id.clone();
                        p.snap_id = new.snap_id;
                    }
                };
                change_header(
                    self.store(),
                    &child_io,
                    &child.image_id,
                    &child.image_id,
                    |h| {
                        relink(&mut h.parent);
                        for s in h.snapshots.values_mut() {
                            relink(&mut s.parent);
                        }
                        Ok(())
                    },
                )
                .await?;
                let old = ParentSpec {
                    pool_id: self.io_ctx().pool().0,
                    namespace: self.io_ctx().namespace().to_owned(),
                    image_id: source_id.to_owned(),
                    snap_id: snap.id,
                    overlap: 0,
                };
                unregister_child(self.store(), &old, &child).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
