//! Mirroring of one image, as an operator changes it: enable, disable, promote, demote,
//! resync, and mirror snapshots.

use std::time::{Duration, Instant};

use rbdx_image::journaling::Event;
use rbdx_image::mirroring::{
    Branch, Generation, ImageMirror, JournalPoint, MirrorMode, MirrorSnap, MirrorSnapState,
};
use rbdx_image::{Error, ErrorKind, Features, Image, Images, OpenOptions, Result, SnapInfo};

use crate::pool::{ImageRecord, ImageState, PoolConfig, PoolMirror, PoolMode};

/// Mirror snapshots kept per image (`rbd_mirroring_max_mirroring_snapshots`).
pub const MAX_MIRROR_SNAPSHOTS: usize = 5;

/// Errno of a pool whose mirroring is off where it must be on (`ENOSYS`, as Ceph).
pub const ENOSYS: i32 = 38;

/// Returns the name of a new primary mirror snapshot.
pub fn primary_snap_name(global_id: &str) -> Result<String> {
    Ok(format!(
        ".mirror.primary.{global_id}.{}",
        rbdx_image::new_uuid()?
    ))
}

/// Returns the name of a new non-primary mirror snapshot.
pub fn non_primary_snap_name(global_id: &str) -> Result<String> {
    Ok(format!(
        ".mirror.non_primary.{global_id}.{}",
        rbdx_image::new_uuid()?
    ))
}

/// Returns the image's mirroring record, or the error for an image not mirrored.
pub fn record_of(image: &Image) -> Result<ImageMirror> {
    image.header().mirror.ok_or_else(|| {
        Error::invalid(format!(
            "mirroring is not enabled on image {}",
            image.name()
        ))
    })
}

/// Opens image `name` of `images` for a mirroring change.
async fn open(images: &Images, name: &str, replica: bool) -> Result<Image> {
    images
        .open(name, OpenOptions::default().with_replica(replica))
        .await
}

/// Runs `op` on an open image, then closes it whatever happened.
async fn with<T>(image: Image, op: impl AsyncFnOnce(&Image) -> Result<T>) -> Result<T> {
    let result = op(&image).await;
    let closed = image.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

/// The position of a journal's newest entry, if it has one.
async fn journal_end(image: &Image) -> Result<Option<JournalPoint>> {
    let journal =
        rbdx_journal::Journal::open(image.store().clone(), image.io_ctx().clone(), image.id())
            .await?;
    Ok(journal.last_position().await?.map(|p| JournalPoint {
        object_number: p.object_number,
        tag_tid: p.tag_tid,
        entry_tid: p.entry_tid,
    }))
}

/// What enabling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    /// The image's global id.
    pub global_id: String,
    /// Parents enabled first (`pool/image`), nearest last.
    pub parents: Vec<String>,
}

/// Enables mirroring of image `name` in `mode`; a clone's parents are enabled first, in the
/// same mode. Enabling an image already mirrored in that mode changes nothing.
pub async fn enable(images: &Images, name: &str, mode: MirrorMode) -> Result<Enabled> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let config = pool.load().await?;
    match config.mode() {
        PoolMode::Disabled => {
            return Err(Error::invalid(format!(
                "mirroring is not enabled on the pool of image {name}"
            )));
        }
        PoolMode::Pool if mode == MirrorMode::Snapshot => {
            return Err(Error::invalid(
                "a pool in pool mode mirrors journaling images only; snapshot mirroring needs \
                 the pool in image mode",
            ));
        }
        _ => {}
    }
    let image = open(images, name, false).await?;
    with(image, async |image| {
        let mut parents = Vec::new();
        enable_parents(image, mode, &mut parents).await?;
        let global_id = enable_open(&pool, &config, image, mode).await?;
        Ok(Enabled { global_id, parents })
    })
    .await
}

/// In a pool mirrored in `pool` mode, enables journal mirroring of image `name` if it has
/// the journaling feature and is not mirrored yet (called after it is created or gets the
/// feature); returns true if it did.
pub async fn enable_if_pool_mode(images: &Images, name: &str) -> Result<bool> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    if pool.load().await?.mode() != PoolMode::Pool {
        return Ok(false);
    }
    let id = images.lookup(name).await?;
    let header = images.header_by_id(&id, name).await?;
    if header.mirror.is_some() || !header.features.contains(Features::JOURNALING) {
        return Ok(false);
    }
    enable(images, name, MirrorMode::Journal).await?;
    Ok(true)
}

/// Enables mirroring of the parents of a clone that are not mirrored yet, oldest first.
async fn enable_parents(image: &Image, mode: MirrorMode, done: &mut Vec<String>) -> Result<()> {
    let Some((parent, _)) = image.parent().await? else {
        return Ok(());
    };
    Box::pin(enable_parents(&parent, mode, done)).await?;
    if parent.header().mirror.is_some() {
        return Ok(());
    }
    let pool = PoolMirror::new(parent.store().clone(), parent.io_ctx().clone());
    let config = pool.load().await?;
    if config.mode() == PoolMode::Disabled {
        return Err(Error::new(
            ErrorKind::Store(ENOSYS),
            format!(
                "image {} is a clone of {}, whose pool does not mirror; enable mirroring on that \
                 pool first",
                image.name(),
                parent.name()
            ),
        ));
    }
    // A parent is read through a snapshot: open it writable to record its mirroring.
    let images = Images::new(parent.cluster().clone(), parent.io_ctx().clone());
    let writable = open(&images, parent.name(), false).await?;
    with(writable, async |p| {
        enable_open(&pool, &config, p, mode).await
    })
    .await?;
    done.push(parent.name().to_owned());
    Ok(())
}

/// Enables mirroring of an open image; returns its global id.
async fn enable_open(
    pool: &PoolMirror,
    config: &PoolConfig,
    image: &Image,
    mode: MirrorMode,
) -> Result<String> {
    if let Some(m) = image.header().mirror {
        if m.mode != mode {
            return Err(Error::invalid(format!(
                "image {} is mirrored in {} mode already; disable mirroring to change the mode",
                image.name(),
                m.mode.as_str()
            )));
        }
        return Ok(m.global_id);
    }
    let features = image.header().features;
    match mode {
        MirrorMode::Journal if !features.contains(Features::JOURNALING) => {
            if !features.contains(Features::EXCLUSIVE_LOCK) {
                return Err(Error::invalid(format!(
                    "journal mirroring of image {} needs the exclusive-lock feature",
                    image.name()
                )));
            }
            image
                .update_features(Features::JOURNALING, true, &|_, _| {})
                .await?;
        }
        MirrorMode::Snapshot if features.contains(Features::JOURNALING) => {
            return Err(Error::invalid(format!(
                "image {} has the journaling feature; mirror it in journal mode, or disable \
                 journaling first",
                image.name()
            )));
        }
        _ => {}
    }
    let site = config
        .mirror_uuid()
        .ok_or_else(|| Error::corrupt("the pool's mirroring has no mirror UUID"))?;
    let global_id = rbdx_image::new_uuid()?;
    let journal_start = match mode {
        MirrorMode::Journal => journal_end(image).await?,
        MirrorMode::Snapshot => None,
    };
    let record = ImageMirror {
        global_id: global_id.clone(),
        mode,
        primary: true,
        generation: Generation {
            id: rbdx_image::new_uuid()?,
            site,
            predecessor: None,
            journal_start,
        },
        position: None,
        demoted: false,
        resync: false,
        full_resync: false,
        syncing: None,
    };
    image
        .mirror_update(|m| {
            *m = Some(record.clone());
            Ok(())
        })
        .await?;
    pool.put_image(
        image.id(),
        &ImageRecord {
            global_id: global_id.clone(),
            mode,
            state: ImageState::Enabled,
        },
    )
    .await?;
    if mode == MirrorMode::Snapshot {
        create_primary_snapshot(image, config, MirrorSnapState::Primary).await?;
    }
    pool.announce().await;
    Ok(global_id)
}

/// Takes a primary mirror snapshot of an open image (for every peer the pool sends to) and
/// prunes the oldest beyond [`MAX_MIRROR_SNAPSHOTS`].
pub async fn create_primary_snapshot(
    image: &Image,
    config: &PoolConfig,
    state: MirrorSnapState,
) -> Result<SnapInfo> {
    let m = record_of(image)?;
    let peers = config
        .peers()
        .into_iter()
        .filter(|p| p.direction != crate::peer::Direction::RxOnly)
        .map(|p| p.uuid)
        .collect();
    let snap = image
        .mirror_snap_create(
            &primary_snap_name(&m.global_id)?,
            MirrorSnap {
                state,
                mirror_peer_uuids: peers,
                complete: true,
                primary_mirror_uuid: String::new(),
                primary_snap_id: None,
                last_copied_object_number: None,
            },
        )
        .await?;
    prune(image, config, &m.global_id).await?;
    Ok(snap)
}

/// Removes the oldest primary mirror snapshots beyond [`MAX_MIRROR_SNAPSHOTS`], except those
/// a peer reported it still copies from.
pub async fn prune(image: &Image, config: &PoolConfig, global_id: &str) -> Result<()> {
    let snaps: Vec<SnapInfo> = image
        .mirror_snapshots()
        .await?
        .into_iter()
        .filter(|(_, m)| m.state.is_primary())
        .map(|(s, _)| s)
        .collect();
    if snaps.len() <= MAX_MIRROR_SNAPSHOTS {
        return Ok(());
    }
    let in_use = peers_in_use(config, global_id);
    let excess = snaps.len() - MAX_MIRROR_SNAPSHOTS;
    for snap in snaps.iter().take(excess) {
        if in_use.is_some_and(|used| snap.id >= used) {
            break;
        }
        image.mirror_snap_remove(snap.id).await?;
    }
    Ok(())
}

/// The oldest primary snapshot id a peer's daemon reported it copies from, if any.
fn peers_in_use(config: &PoolConfig, global_id: &str) -> Option<u64> {
    config
        .peer_statuses()
        .into_iter()
        .filter(|((_, gid), _)| gid == global_id)
        .filter_map(|(_, s)| crate::status::synced_snap_of(&s))
        .min()
}

/// Disables mirroring of image `name`: its record and mirror snapshots go, and peers'
/// daemons remove their copies. A non-primary copy needs `force`.
pub async fn disable(images: &Images, name: &str, force: bool) -> Result<()> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let id = images.lookup(name).await?;
    let non_primary = images
        .header_by_id(&id, name)
        .await?
        .mirror
        .is_some_and(|m| !m.primary);
    let image = open(images, name, non_primary).await?;
    with(image, async |image| {
        let m = record_of(image)?;
        if !m.primary && !force {
            return Err(Error::invalid(format!(
                "image {name} is not primary; disabling mirroring of a non-primary copy needs \
                 --force"
            )));
        }
        for (snap, _) in image.mirror_snapshots().await? {
            image.mirror_snap_remove(snap.id).await?;
        }
        image
            .mirror_update(|m| {
                *m = None;
                Ok(())
            })
            .await?;
        pool.remove_image(image.id(), &m.global_id).await?;
        pool.announce().await;
        Ok(())
    })
    .await
}

/// Demotes primary image `name`: every write so far is kept, and the copy becomes
/// non-primary; the point where its generation ends is recorded (a journal event, or a
/// demoted mirror snapshot) for the peer to replay before it is promoted.
pub async fn demote(images: &Images, name: &str) -> Result<()> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let config = pool.load().await?;
    let image = open(images, name, false).await?;
    with(image, async |image| {
        let m = record_of(image)?;
        if !m.primary {
            return Err(Error::invalid(format!("image {name} is not primary")));
        }
        image
            .quiesced(async || {
                let position = match m.mode {
                    MirrorMode::Journal => image.journal_event(Event::DemotePromote).await?,
                    MirrorMode::Snapshot => Some(
                        create_primary_snapshot(image, &config, MirrorSnapState::PrimaryDemoted)
                            .await?
                            .id,
                    ),
                };
                image
                    .mirror_update(|r| {
                        let r = r.as_mut().ok_or_else(|| Error::invalid("not mirrored"))?;
                        r.primary = false;
                        r.demoted = true;
                        r.position = position;
                        Ok(())
                    })
                    .await?;
                Ok(())
            })
            .await?;
        image.release_lock().await
    })
    .await
}

/// How long an orderly promotion waits for the demotion to be replayed by default.
pub const PROMOTE_WAIT: Duration = Duration::from_secs(60);

/// Promotes non-primary image `name`. Without `force` it waits (up to `wait`) until this
/// copy holds the whole history of a demoted primary; with it, the copy is promoted as it is
/// (a snapshot delta copied in part is rolled back first), which is split-brain if the
/// other side is still primary.
pub async fn promote(images: &Images, name: &str, force: bool, wait: Duration) -> Result<()> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let image = open(images, name, true).await?;
    with(image, async |image| {
        let mut m = record_of(image)?;
        if m.primary {
            return Err(Error::invalid(format!("image {name} is already primary")));
        }
        if !force {
            let deadline = Instant::now() + wait;
            while !m.demoted {
                if Instant::now() >= deadline {
                    return Err(Error::busy(format!(
                        "image {name} is primary at a peer, or its demotion there has not been \
                         replayed here yet (waited {} s); promote with --force to take over \
                         anyway",
                        wait.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                image.refresh().await?;
                m = record_of(image)?;
            }
        }
        if m.mode == MirrorMode::Snapshot {
            drop_partial_delta(image).await?;
        }
        let config = pool.load().await?;
        let site = config
            .mirror_uuid()
            .ok_or_else(|| Error::corrupt("the pool's mirroring has no mirror UUID"))?;
        let journal_start = match m.mode {
            MirrorMode::Journal => {
                let start = journal_end(image).await?;
                register_peers(image, &config, start).await?;
                start
            }
            MirrorMode::Snapshot => None,
        };
        let generation = Generation {
            id: rbdx_image::new_uuid()?,
            site,
            predecessor: Some(Branch {
                generation: m.generation.id.clone(),
                position: m.position,
            }),
            journal_start,
        };
        // Under the exclusive lock: the mirror daemon's writes in flight finish first, and
        // it cannot write once the copy is primary.
        image
            .quiesced(async || {
                image
                    .mirror_update(|r| {
                        let r = r.as_mut().ok_or_else(|| Error::invalid("not mirrored"))?;
                        r.primary = true;
                        r.generation = generation.clone();
                        r.position = None;
                        r.demoted = false;
                        r.resync = false;
                        r.full_resync = false;
                        r.syncing = None;
                        Ok(())
                    })
                    .await
            })
            .await?;
        Ok(())
    })
    .await?;
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let config = pool.load().await?;
    let image = open(images, name, false).await?;
    with(image, async |image| {
        if record_of(image)?.mode == MirrorMode::Snapshot {
            create_primary_snapshot(image, &config, MirrorSnapState::Primary).await?;
        }
        Ok(())
    })
    .await
}

/// Rolls the head back to the newest non-primary snapshot if a delta was being copied into
/// it.
async fn drop_partial_delta(image: &Image) -> Result<()> {
    if record_of(image)?.syncing.is_none() {
        return Ok(());
    }
    let snaps = image.mirror_snapshots().await?;
    if let Some((good, _)) = snaps.iter().rev().find(|(_, m)| m.complete) {
        image.snap_rollback_id(good.id, &|_, _| {}).await?;
    }
    image
        .mirror_update(|r| {
            if let Some(r) = r.as_mut() {
                r.syncing = None;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// Registers the journal clients of the peers that replay this site (known by the
/// registrations they wrote), so that the journal keeps their entries from `start`.
async fn register_peers(
    image: &Image,
    config: &PoolConfig,
    start: Option<JournalPoint>,
) -> Result<()> {
    let journal =
        rbdx_journal::Journal::open(image.store().clone(), image.io_ctx().clone(), image.id())
            .await?;
    for owner in config.registrations().into_keys() {
        match journal.register_client(&owner, "mirror peer").await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = start {
            journal
                .commit(
                    &owner,
                    rbdx_journal::header::Position {
                        object_number: p.object_number,
                        tag_tid: p.tag_tid,
                        entry_tid: p.entry_tid,
                    },
                )
                .await?;
        }
    }
    Ok(())
}

/// Flags non-primary image `name` for a resync: its mirror daemon brings it back in step
/// with the primary, copying only what changed since the last point both share (see
/// [`crate::resync`]), or everything with `full`.
pub async fn resync(images: &Images, name: &str, full: bool) -> Result<()> {
    let image = open(images, name, true).await?;
    with(image, async |image| {
        let m = record_of(image)?;
        if m.primary {
            return Err(Error::invalid(format!(
                "image {name} is primary; only a non-primary copy can be resynced (demote it \
                 first)"
            )));
        }
        image
            .mirror_update(|r| {
                if let Some(r) = r.as_mut() {
                    r.resync = true;
                    r.full_resync = full;
                }
                Ok(())
            })
            .await?;
        Ok(())
    })
    .await
}

/// Takes a mirror snapshot of primary image `name` (snapshot mode); returns its id.
pub async fn snapshot(images: &Images, name: &str) -> Result<u64> {
    let pool = PoolMirror::new(images.store().clone(), images.io_ctx().clone());
    let config = pool.load().await?;
    let image = open(images, name, false).await?;
    with(image, async |image| {
        let m = record_of(image)?;
        if m.mode != MirrorMode::Snapshot {
            return Err(Error::invalid(format!(
                "image {name} is mirrored in journal mode; mirror snapshots are for snapshot mode"
            )));
        }
        if !m.primary {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!("image {name} is not primary"),
            ));
        }
        Ok(
            create_primary_snapshot(image, &config, MirrorSnapState::Primary)
                .await?
                .id,
        )
    })
    .await
}
