//! Snapshot-mode replay: when the primary has a newer mirror snapshot than the copy holds,
//! copy only what changed between the two, then take the matching non-primary snapshot;
//! the snapshot is taken only once the whole delta is in.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use rbdx_image::mirroring::ImageMirror;
use rbdx_image::{Error, Header, Image, OpenOptions, Result};
use rbdx_snapdiff::DiffOptions;

use super::Replayer;
use super::journal::Ended;
use super::sync::finish_snapshot_sync;
use crate::image::{MAX_MIRROR_SNAPSHOTS, record_of};
use crate::status::StatusState;

/// What the last delta took.
#[derive(Debug, Default, Clone, Copy)]
struct LastSync {
    bytes: u64,
    seconds: f64,
    remote_timestamp: u64,
}

impl Replayer {
    /// Copies the primary's new mirror snapshots into `image` (the replica handle of the
    /// local copy) until the session has to end.
    pub(super) async fn replay_snapshots(
        &self,
        image: &Image,
        remote_id: &str,
        remote_name: &str,
        remote: &ImageMirror,
    ) -> Result<Ended> {
        let mut last = LastSync::default();
        // Woken by the primary's header changes (a new mirror snapshot), polled otherwise.
        let header_oid = rbdx_image::names::header_object(remote_id);
        let store = self.remote.side.store().clone();
        let mut watch = store.watch(&self.remote.side.io, &header_oid).await.ok();
        let ended = self
            .sync_snapshots(image, remote_id, remote_name, remote, &mut last, &mut watch)
            .await;
        if let Some(w) = watch {
            let _ = store
                .unwatch(&self.remote.side.io, &header_oid, w.cookie())
                .await;
        }
        ended
    }

    async fn sync_snapshots(
        &self,
        image: &Image,
        remote_id: &str,
        remote_name: &str,
        remote: &ImageMirror,
        last: &mut LastSync,
        watch: &mut Option<rbdx_objstore::Watch>,
    ) -> Result<Ended> {
        loop {
            if *self.stop.borrow() {
                return Ok(Ended::Stopped);
            }
            let Some((_, header)) = self.remote.side.image(remote_id).await? else {
                return Ok(Ended::Changed);
            };
            let Some(rm) = header.mirror.clone() else {
                return Ok(Ended::Changed);
            };
            if rm.generation.id != remote.generation.id || rm.primary != remote.primary {
                return Ok(Ended::Changed);
            }
            if self.local_promoted(image).await? {
                return Ok(Ended::Changed);
            }
            let local = record_of(image)?;
            let switching = local.generation.id != rm.generation.id;
            let base = if switching {
                // The peer's copy of this site's last snapshot is where the new generation
                // began.
                header
                    .snapshots
                    .values()
                    .rev()
                    .find_map(|s| match s.namespace.mirror() {
                        Some(m)
                            if !m.state.is_primary()
                                && m.complete
                                && m.primary_snap_id == local.position =>
                        {
                            Some(s.id)
                        }
                        _ => None,
                    })
            } else {
                local.position
            };
            let Some(base) = base.filter(|b| header.snapshots.contains_key(b)) else {
                return Ok(Ended::Resync(
                    "the copy shares no mirror snapshot with the primary any more".into(),
                ));
            };
            let target = header
                .snapshots
                .range(base + 1..)
                .rev()
                .find_map(|(id, s)| match s.namespace.mirror() {
                    Some(m) if m.state.is_primary() && m.complete => {
                        Some((*id, m.state.is_demoted(), s.timestamp.0))
                    }
                    _ => None,
                });
            let Some((target, demoted, stamp)) = target else {
                if !rm.primary && rm.demoted && !local.demoted && local.position == rm.position {
                    image
                        .mirror_update(|m| {
                            if let Some(m) = m.as_mut() {
                                m.demoted = true;
                            }
                            Ok(())
                        })
                        .await?;
                }
                self.report_snapshots(StatusState::Replaying, "idle", last, local.position)
                    .await;
                let mut stop = self.stop.clone();
                let changed = async {
                    match watch.as_mut() {
                        Some(w) => match w.next().await {
                            Some(rbdx_objstore::WatchEvent::Notify(n)) => {
                                n.ack(bytes::Bytes::new())
                            }
                            _ => *watch = None,
                        },
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            };
            if switching {
                image
                    .mirror_update(|m| {
                        if let Some(m) = m.as_mut() {
                            m.generation = rm.generation.clone();
                            m.demoted = false;
                        }
                        Ok(())
                    })
                    .await?;
            }
            self.report_snapshots(StatusState::Replaying, "syncing", last, local.position)
                .await;
            let began = Instant::now();
            let bytes = self
                .copy_delta(image, remote_id, remote_name, &header, base, target)
                .await?;
            self.count_resync(bytes);
            let copied_in = began.elapsed();
            let mut record = record_of(image)?;
            record.generation = rm.generation.clone();
            finish_snapshot_sync(image, &record, &self.remote, target, demoted).await?;
            prune_local(image).await?;
            tracing::info!(
                "image {remote_name}: copied {bytes} bytes up to mirror snapshot {target} in \
                 {:.3} s ({:.3} s with the snapshot)",
                copied_in.as_secs_f64(),
                began.elapsed().as_secs_f64()
            );
            *last = LastSync {
                bytes,
                seconds: began.elapsed().as_secs_f64(),
                remote_timestamp: stamp,
            };
            self.report_snapshots(StatusState::Replaying, "idle", last, Some(target))
                .await;
        }
    }

    /// Copies what changed between primary snapshots `base` and `target` into the head;
    /// returns the bytes copied.
    async fn copy_delta(
        &self,
        image: &Image,
        remote_id: &str,
        remote_name: &str,
        header: &Header,
        base: u64,
        target: u64,
    ) -> Result<u64> {
        let base_name = header
            .snapshots
            .get(&base)
            .map(|s| s.name.clone())
            .ok_or_else(|| Error::not_found("the base mirror snapshot is gone at the peer"))?;
        let size = header.snapshots.get(&target).map_or(0, |s| s.size);
        image
            .mirror_update(|m| {
                if let Some(m) = m.as_mut() {
                    m.syncing = Some(target);
                }
                Ok(())
            })
            .await?;
        if size > image.size() {
            image.resize(size, false).await?;
        }
        let source = Image::open_by_id(
            self.remote.side.cluster.clone(),
            self.remote.side.io.clone(),
            remote_name,
            remote_id,
            OpenOptions::default()
                .with_snap_id(Some(target))
                .with_read_only(true),
        )
        .await?;
        let options = DiffOptions::default()
            .with_from_snap(Some(base_name))
            .with_include_parent(false);
        let copied = copy_extents(image, &source, &options).await;
        let closed = source.close().await;
        let copied = copied?;
        closed?;
        if size < image.size() {
            image.resize(size, true).await?;
        }
        image.flush().await?;
        Ok(copied)
    }

    async fn report_snapshots(
        &self,
        state: StatusState,
        replay_state: &str,
        last: &LastSync,
        synced: Option<u64>,
    ) {
        let mut json = serde_json::json!({
            "bytes_per_second": if last.seconds > 0.0 { last.bytes as f64 / last.seconds } else { 0.0 },
            "last_snapshot_bytes": last.bytes,
            "last_snapshot_sync_seconds": last.seconds,
            "remote_snapshot_timestamp": last.remote_timestamp,
            "replay_state": replay_state,
        });
        if let Some(bytes) = self.resync_figure() {
            json["bytes_since_resync"] = bytes.into();
        }
        self.reporter
            .report(state, &format!("replaying, {json}"), synced)
            .await;
    }
}

/// Data of a delta read before it is written (bounds the memory of a large delta).
const WINDOW: u64 = 32 << 20;

/// Copies the extents that changed in `source` since `options.from_snap` into `image`, a
/// window at a time (see [`crate::resync::copy_sparse`]). Returns the bytes of data read.
async fn copy_extents(image: &Image, source: &Image, options: &DiffOptions) -> Result<u64> {
    let mut extents = rbdx_snapdiff::diff_extents(source, options);
    let mut copied = 0;
    let mut done = false;
    while !done {
        let mut wanted: Vec<(u64, u64)> = Vec::new();
        let mut bytes = 0;
        loop {
            let Some(extent) = extents.try_next().await? else {
                done = true;
                break;
            };
            if !extent.data {
                image.discard(extent.offset, extent.length).await?;
                continue;
            }
            wanted.push((extent.offset, extent.length));
            bytes += extent.length;
            if bytes >= WINDOW {
                break;
            }
        }
        copied += crate::resync::copy_sparse(image, source, &wanted).await?;
    }
    Ok(copied)
}

/// Removes the oldest non-primary mirror snapshots beyond [`MAX_MIRROR_SNAPSHOTS`].
async fn prune_local(image: &Image) -> Result<()> {
    let snaps: Vec<u64> = image
        .mirror_snapshots()
        .await?
        .into_iter()
        .filter(|(_, m)| !m.state.is_primary() && m.complete)
        .map(|(s, _)| s.id)
        .collect();
    if snaps.len() > MAX_MIRROR_SNAPSHOTS {
        for id in &snaps[..snaps.len() - MAX_MIRROR_SNAPSHOTS] {
            image.mirror_snap_remove(*id).await?;
        }
    }
    Ok(())
}
