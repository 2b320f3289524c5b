//! The initial sync of a non-primary copy (and the removal of one): a deep copy from the
//! primary through the peer's gateway, resumable from its checkpoint.
//!
//! Journal mode registers this site as a journal client at the primary first, then copies
//! the head as it is while it changes; replay then starts from the registration, so every
//! write made during the copy is applied again in order. Only an operation the copy cannot
//! have seen (a snapshot taken, or a rollback, between registration and the end of the copy)
//! makes the sync start over. Snapshot mode copies the newest primary mirror snapshot, which
//! does not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rbdx_image::mirroring::{ImageMirror, MirrorMode, MirrorSnap, MirrorSnapState};
use rbdx_image::{CreateOptions, Error, ErrorKind, Header, Image, OpenOptions, ParentSpec, Result};
use rbdx_journal::header::Position;
use rbdx_migration::{ExecuteOptions, ImageCopyOptions, Migration};
use rbdx_objstore::ObjectStore;

use crate::image::non_primary_snap_name;
use crate::pool::{ImageRecord, ImageState};

use super::site::{Remote, Side};

/// The stores of the peers, by the name the migration opener asks for.
#[derive(Debug, Default)]
pub struct PeerStores {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl PeerStores {
    /// Makes peer store `store` reachable as `name`.
    pub fn insert(&self, name: String, store: Arc<dyn ObjectStore>) {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, store);
    }
}

#[async_trait]
impl rbdx_source::Clusters for PeerStores {
    async fn store(
        &self,
        name: Option<&str>,
        _client: Option<&str>,
    ) -> rbdx_source::Result<Arc<dyn ObjectStore>> {
        let name = name.unwrap_or_default();
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| {
                rbdx_source::Error::new(
                    rbdx_source::ErrorKind::NotFound,
                    format!("no connection to {name}"),
                )
            })
    }
}

/// Returns the migration-source opener that reads peers through `stores`.
pub fn opener(stores: Arc<PeerStores>) -> rbdx_migration::Opener {
    let ctx =
        rbdx_source::OpenContext::new(Arc::new(rbdx_source::Registry::new())).with_clusters(stores);
    rbdx_migration::Opener::new(ctx)
}

/// Returns the migration runner of the local site, reading peers through `stores`.
pub fn migration(local: &Side, stores: Arc<PeerStores>) -> Migration {
    Migration::new(local.cluster.clone(), Arc::new(opener(stores)))
}

/// Objects copied at once by an initial copy (through the peer's gateway, so more than a
/// local copy's default).
const COPY_CONCURRENCY: usize = 16;

/// Key (in the local `rbd_mirroring`) of the primary's journal position when an initial sync
/// finished: up to it, replay re-applies writes the copy may hold already.
pub fn sync_end_key(global_id: &str) -> String {
    format!("syncend_{global_id}")
}

/// Copies image `name` (`header`) of the peer into a new non-primary copy here, or goes on
/// with an unfinished copy; `progress` gets bytes copied and the total.
#[allow(clippy::too_many_arguments)]
pub async fn initial_sync(
    local: &Side,
    remote: &Remote,
    stores: &Arc<PeerStores>,
    remote_id: &str,
    name: &str,
    header: &Header,
    resumed: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let record = header
        .mirror
        .clone()
        .ok_or_else(|| Error::invalid(format!("image {name} is not mirrored at the peer")))?;
    let journal = match record.mode {
        MirrorMode::Journal => Some(
            rbdx_journal::Journal::open(
                remote.side.store().clone(),
                remote.side.io.clone(),
                remote_id,
            )
            .await?,
        ),
        MirrorMode::Snapshot => None,
    };
    let mut registered_at = None;
    if let (Some(journal), false) = (&journal, resumed) {
        // A fresh start replays from now: drop an old registration first.
        match journal.unregister_client(&remote.owner).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // From the primary's own commit position (at most a second behind its newest
        // entry): replaying a little more than needed is harmless, and it saves reading the
        // journal's tail through the gateway.
        let from = journal
            .header()
            .await?
            .clients
            .get(rbdx_journal::IMAGE_CLIENT)
            .and_then(|c| c.commit_position);
        journal
            .register_client_at(&remote.owner, "mirror peer", from)
            .await?;
        registered_at = from.map(|p| p.entry_tid);
    }
    let head_snap = match record.mode {
        MirrorMode::Snapshot => Some(newest_primary_snapshot(header).ok_or_else(|| {
            Error::busy(format!(
                "image {name} has no mirror snapshot at the peer yet"
            ))
        })?),
        MirrorMode::Journal => None,
    };
    stores.insert(remote.cluster_name(), remote.side.store().clone());
    let mut create = CreateOptions::new(header.size);
    create.features = Some(header.features);
    create.order = Some(header.layout.order());
    create.stripe_unit = Some(header.layout.stripe_unit());
    create.stripe_count = Some(header.layout.stripe_count());
    create.mirror = Some(ImageMirror {
        global_id: record.global_id.clone(),
        mode: record.mode,
        primary: false,
        generation: record.generation.clone(),
        // Replay applies what follows the registration: the copy holds the history up to it
        // (a delta resync's shared point, should the copy be promoted before any replay).
        position: registered_at,
        demoted: false,
        resync: false,
        full_resync: false,
        syncing: None,
    });
    let dest_parent = match &header.parent {
        Some(p) => Some(local_parent(local, remote, p).await?),
        None => None,
    };
    let options = ImageCopyOptions {
        create,
        snapshots: true,
        flatten: false,
        source_cluster: Some(remote.cluster_name()),
        head_snap: head_snap.map(|s| s.0),
        dest_parent,
    };
    let runner = migration(local, stores.clone());
    let images = local.images();
    let remote_images = remote.side.images();
    runner
        .prepare_copy(&remote_images, name, &images, name, &options)
        .await?;
    let id = images.lookup(name).await?;
    local
        .mirror()
        .put_image(
            &id,
            &ImageRecord {
                global_id: record.global_id.clone(),
                mode: record.mode,
                state: ImageState::Enabled,
            },
        )
        .await?;
    runner
        .execute(
            &images,
            name,
            &ExecuteOptions {
                replica: true,
                concurrency: COPY_CONCURRENCY,
                ..Default::default()
            },
            progress,
        )
        .await?;
    if let Some(journal) = &journal {
        let end = journal.last_position().await?;
        local
            .mirror()
            .update(
                vec![(sync_end_key(&record.global_id), crate::omap::json(&end))],
                Vec::new(),
            )
            .await?;
    }
    runner.commit(&images, name, false, &|_, _| {}).await?;
    if let Some((snap_id, demoted)) = head_snap {
        let image = images
            .open(name, OpenOptions::default().with_replica(true))
            .await?;
        let done = finish_snapshot_sync(&image, &record, remote, snap_id, demoted).await;
        let closed = image.close().await;
        done?;
        closed?;
    }
    Ok(())
}

/// Records a snapshot-mode copy of primary snapshot `snap_id`: the non-primary snapshot and
/// the position.
pub async fn finish_snapshot_sync(
    image: &Image,
    record: &ImageMirror,
    remote: &Remote,
    snap_id: u64,
    demoted: bool,
) -> Result<()> {
    image
        .mirror_snap_create(
            &non_primary_snap_name(&record.global_id)?,
            MirrorSnap {
                state: if demoted {
                    MirrorSnapState::NonPrimaryDemoted
                } else {
                    MirrorSnapState::NonPrimary
                },
                mirror_peer_uuids: Vec::new(),
                complete: true,
                primary_mirror_uuid: remote.peer.mirror_uuid.clone(),
                primary_snap_id: Some(snap_id),
                last_copied_object_number: Some(image.object_count()),
            },
        )
        .await?;
    image
        .mirror_update(|m| {
            if let Some(m) = m.as_mut() {
                m.position = Some(snap_id);
                m.demoted = demoted;
                m.syncing = None;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// The newest complete primary mirror snapshot of a header: (id, taken at a demotion).
pub fn newest_primary_snapshot(header: &Header) -> Option<(u64, bool)> {
    header
        .snapshots
        .values()
        .rev()
        .find_map(|s| match s.namespace.mirror() {
            Some(m) if m.state.is_primary() && m.complete => Some((s.id, m.state.is_demoted())),
            _ => None,
        })
}

/// Maps a clone's parent at the peer to the copy of that parent here (same global id, the
/// snapshot of the same name); the parent must be copied first.
async fn local_parent(local: &Side, remote: &Remote, parent: &ParentSpec) -> Result<ParentSpec> {
    let remote_pool = remote
        .side
        .store()
        .pool_by_id(rbdx_objstore::PoolId(parent.pool_id))
        .await
        .map_err(|e| Error::store("the parent's pool at the peer", e))?;
    let remote_io = rbdx_objstore::IoCtx::with_namespace(
        rbdx_objstore::PoolId(parent.pool_id),
        &parent.namespace,
    );
    let remote_side = Side {
        cluster: remote.side.cluster.clone(),
        io: remote_io,
        pool_name: remote_pool.name.clone(),
    };
    let (_, header) = remote_side
        .image(&parent.image_id)
        .await?
        .ok_or_else(|| Error::not_found("the parent of a mirrored clone is gone at the peer"))?;
    let global_id = header
        .mirror
        .as_ref()
        .map(|m| m.global_id.clone())
        .ok_or_else(|| {
            Error::busy("the parent of a mirrored clone is not mirrored at the peer yet")
        })?;
    let snap_name = header
        .snapshots
        .get(&parent.snap_id)
        .map(|s| s.name.clone())
        .ok_or_else(|| Error::not_found("the clone's parent snapshot is gone at the peer"))?;
    let local_pool = local
        .store()
        .pool_lookup(&remote_pool.name)
        .await
        .map_err(|e| Error::store(format!("pool {} here", remote_pool.name), e))?;
    let local_io = rbdx_objstore::IoCtx::with_namespace(local_pool.id, &parent.namespace);
    let here = Side {
        cluster: local.cluster.clone(),
        io: local_io.clone(),
        pool_name: remote_pool.name,
    };
    let config = here.mirror().load().await?;
    let id = config
        .image_by_global(&global_id)
        .ok_or_else(|| Error::busy("waiting for the parent of a clone to be copied first"))?;
    let (_, local_header) = here
        .image(&id)
        .await?
        .ok_or_else(|| Error::busy("waiting for the parent of a clone to be copied first"))?;
    if local_header.migration.is_some() {
        return Err(Error::busy(
            "waiting for the parent of a clone to be copied first",
        ));
    }
    let snap = local_header
        .snapshots
        .values()
        .find(|s| s.name == snap_name)
        .ok_or_else(|| Error::busy("waiting for the parent's snapshot to be copied first"))?;
    Ok(ParentSpec {
        pool_id: local_pool.id.0,
        namespace: parent.namespace.clone(),
        image_id: id,
        snap_id: snap.id,
        overlap: parent.overlap,
    })
}

/// Removes a non-primary copy with its snapshots and its records.
pub async fn remove_copy(local: &Side, name: &str, id: &str, global_id: &str) -> Result<()> {
    let images = local.images();
    match images
        .open(name, OpenOptions::default().with_replica(true))
        .await
    {
        Ok(image) => {
            let result = drop_snapshots(&image).await;
            let closed = image.close().await;
            result?;
            closed?;
            images.remove(name, &|_, _| {}).await?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let _ = rbdx_migration::progress::remove(local.store(), &local.io, id).await;
    local.mirror().remove_image(id, global_id).await?;
    local
        .mirror()
        .update(Vec::new(), vec![sync_end_key(global_id)])
        .await
}

async fn drop_snapshots(image: &Image) -> Result<()> {
    for snap in image.all_snapshots().await? {
        if snap.namespace.mirror().is_some() {
            image.mirror_snap_remove(snap.id).await?;
            continue;
        }
        if snap.protection == rbdx_image::Protection::Protected {
            image.snap_set_protection(&snap.name, false).await?;
        }
        image.snap_remove(&snap.name).await?;
    }
    Ok(())
}

/// Reads the recorded end of an initial sync, if replay has not passed it yet.
pub async fn sync_end(local: &Side, global_id: &str) -> Result<Option<Position>> {
    let key = sync_end_key(global_id);
    let (entries, _) =
        crate::omap::read(local.store(), &local.io, crate::omap::MIRRORING, &key).await?;
    match entries.get(&key) {
        Some(v) => crate::omap::parse(&key, v),
        None => Ok(None),
    }
}
