//! The replayer of one image: decides from both sites' records what to do (copy, replay,
//! switch to a promoted peer, remove, report split-brain), does it, and reports status.

use std::sync::Arc;
use std::time::Duration;

use rbdx_image::mirroring::{ImageMirror, MirrorMode};
use rbdx_image::{Error, Header, OpenOptions, Result};
use tokio::sync::watch;

use super::Shared;
use super::journal::Ended;
use super::relation::{Relation, relation};
use super::report::Reporter;
use super::site::{Remote, Side};
use super::sync::{initial_sync, remove_copy};
use crate::pool::ImageState;
use crate::resync::Plan;
use crate::status::StatusState;

/// What to do after a step.
#[derive(Debug)]
enum Next {
    /// Decide again at once.
    Again,
    /// Report this and wait a while.
    Wait(StatusState, String),
    /// Nothing more to do for this image.
    Done,
}

/// The replayer of one image.
#[derive(Debug)]
pub struct Replayer {
    pub(super) local: Side,
    pub(super) remote: Remote,
    pub(super) global_id: String,
    pub(super) reporter: Reporter,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) shared: Arc<Shared>,
    /// Bytes read from the primary since a delta resync began here (shown in the status).
    pub(super) resync_bytes: std::sync::Mutex<Option<u64>>,
}

impl Replayer {
    /// Returns the replayer of image `global_id` between `local` and `remote`; it runs until
    /// `stop` turns true.
    pub(super) fn new(
        local: Side,
        remote: Remote,
        global_id: String,
        stop: watch::Receiver<bool>,
        shared: Arc<Shared>,
    ) -> Replayer {
        let reporter = Reporter::new(
            local.clone(),
            remote.clone(),
            global_id.clone(),
            shared.service.clone(),
            shared.site_name.clone(),
        );
        Replayer {
            local,
            remote,
            global_id,
            reporter,
            stop,
            shared,
            resync_bytes: std::sync::Mutex::new(None),
        }
    }

    /// Counts bytes read from the primary, if a delta resync is being accounted for.
    pub(super) fn count_resync(&self, bytes: u64) {
        if let Some(n) = self
            .resync_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            *n += bytes;
        }
    }

    /// The bytes read from the primary since a delta resync began, if one did.
    pub(super) fn resync_figure(&self) -> Option<u64> {
        *self.resync_bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until stopped or until the image needs no replayer here.
    pub(super) async fn run(&self) {
        let mut failures = 0u32;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let (state, description) = match self.step().await {
                Ok(Next::Again) => {
                    failures = 0;
                    continue;
                }
                Ok(Next::Done) => break,
                Ok(Next::Wait(state, description)) => {
                    failures = 0;
                    (state, description)
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("image {}: {e}", self.global_id);
                    (StatusState::Error, e.to_string())
                }
            };
            self.reporter.report(state, &description, None).await;
            let pause = Duration::from_millis(500 * u64::from(failures.clamp(1, 10)));
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Looks at both sites and does one thing.
    async fn step(&self) -> Result<Next> {
        let local_config = self.local.mirror().load().await?;
        let local_id = local_config.image_by_global(&self.global_id);
        let local = match &local_id {
            Some(id) => self.local.image(id).await?.map(|(n, h)| (id.clone(), n, h)),
            None => None,
        };
        let remote_config = self.remote.side.mirror().load().await?;
        let remote_id = remote_config.image_by_global(&self.global_id);
        let enabled = remote_id.as_ref().is_some_and(|id| {
            remote_config
                .images()
                .get(id)
                .is_some_and(|r| r.state == ImageState::Enabled)
        });
        let remote = match (&remote_id, enabled) {
            (Some(id), true) => self
                .remote
                .side
                .image(id)
                .await?
                .map(|(n, h)| (id.clone(), n, h)),
            _ => None,
        };
        match (local, remote) {
            (None, None) => {
                if let Some(id) = local_id {
                    // Records of a copy that is gone.
                    self.local
                        .mirror()
                        .remove_image(&id, &self.global_id)
                        .await?;
                }
                Ok(Next::Done)
            }
            (Some((id, name, header)), None) => {
                if header.mirror.as_ref().is_some_and(|m| !m.primary) {
                    tracing::info!(
                        "image {name}: removed or no longer mirrored at site {}; removing the \
                         copy here",
                        self.remote.peer.site_name
                    );
                    remove_copy(&self.local, &name, &id, &self.global_id).await?;
                }
                Ok(Next::Done)
            }
            (None, Some((rid, name, header))) => self.first_sync(&rid, &name, &header, false).await,
            (Some((id, name, header)), Some((rid, rname, rheader))) => {
                self.follow(&id, &name, &header, &rid, &rname, &rheader)
                    .await
            }
        }
    }

    /// Makes the first copy, or goes on with an unfinished one.
    async fn first_sync(
        &self,
        remote_id: &str,
        name: &str,
        header: &Header,
        resumed: bool,
    ) -> Result<Next> {
        let Some(rm) = &header.mirror else {
            return Ok(Next::Wait(
                StatusState::Unknown,
                "the image is not mirrored at the peer".into(),
            ));
        };
        if !rm.primary && !resumed {
            return Ok(Next::Wait(
                StatusState::Unknown,
                "remote image is not primary".into(),
            ));
        }
        let _permit = tokio::select! {
            permit = self.shared.syncs.acquire() => permit.map_err(|_| Error::busy("stopping"))?,
            _ = self.stopped() => return Ok(Next::Done),
        };
        self.reporter
            .write(StatusState::Syncing, "bootstrapping, IMAGE_COPY", None)
            .await;
        let reporter = &self.reporter;
        let last = std::sync::Mutex::new(0u64);
        let progress = |done: u64, total: u64| {
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            *last.lock().unwrap_or_else(|p| p.into_inner()) = percent;
        };
        let copy = initial_sync(
            &self.local,
            &self.remote,
            &self.shared.stores,
            remote_id,
            name,
            header,
            resumed,
            &progress,
        );
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut copy => {
                    done?;
                    tracing::info!("image {name}: initial copy done");
                    return Ok(Next::Again);
                }
                _ = tick.tick() => {
                    let percent = *last.lock().unwrap_or_else(|p| p.into_inner());
                    let json = serde_json::json!({ "syncing_percent": percent });
                    reporter
                        .report(StatusState::Syncing, &format!("syncing, {json}"), None)
                        .await;
                }
                _ = self.stopped() => return Ok(Next::Done),
            }
        }
    }

    /// Resolves once the replayer is told to stop.
    async fn stopped(&self) {
        let mut stop = self.stop.clone();
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// Keeps an existing copy in step with the peer's.
    async fn follow(
        &self,
        id: &str,
        name: &str,
        header: &Header,
        remote_id: &str,
        remote_name: &str,
        remote_header: &Header,
    ) -> Result<Next> {
        let Some(local) = header.mirror.clone() else {
            return Ok(Next::Wait(
                StatusState::Error,
                format!(
                    "image {name} here has the global id of a mirrored image but is not mirrored"
                ),
            ));
        };
        if header.migration.is_some() {
            return self
                .first_sync(remote_id, remote_name, remote_header, true)
                .await;
        }
        if local.resync && !local.primary {
            if !local.full_resync && self.delta_resync(name, remote_id, remote_header).await? {
                return Ok(Next::Again);
            }
            tracing::info!("image {name}: resync asked for; copying it again");
            remove_copy(&self.local, name, id, &self.global_id).await?;
            return Ok(Next::Again);
        }
        let Some(remote) = remote_header.mirror.clone() else {
            return Ok(Next::Done);
        };
        match relation(&local, &remote) {
            Relation::LocalPrimary => Ok(Next::Wait(
                StatusState::Stopped,
                "local image is primary".into(),
            )),
            Relation::SplitBrain => Ok(Next::Wait(
                StatusState::Error,
                "split-brain detected: both copies were primary; demote the copy to replace \
                 and run `mirror image resync` there"
                    .into(),
            )),
            Relation::Idle => Ok(Next::Wait(
                StatusState::Unknown,
                "remote image demoted; the copy here holds all of it".into(),
            )),
            Relation::Replay | Relation::Switch => {
                self.replay(name, remote_id, remote_name, &remote).await
            }
        }
    }

    async fn replay(
        &self,
        name: &str,
        remote_id: &str,
        remote_name: &str,
        remote: &ImageMirror,
    ) -> Result<Next> {
        let image = self
            .local
            .images()
            .open(name, OpenOptions::default().with_replica(true))
            .await?;
        self.reporter
            .report(StatusState::StartingReplay, "starting replay", None)
            .await;
        let ended = match remote.mode {
            MirrorMode::Journal => self.replay_journal(&image, remote_id, remote).await,
            MirrorMode::Snapshot => {
                self.replay_snapshots(&image, remote_id, remote_name, remote)
                    .await
            }
        };
        let closed = image.close().await;
        let ended = ended?;
        closed?;
        Ok(match ended {
            Ended::Stopped => Next::Done,
            Ended::Changed => Next::Again,
            Ended::Restart(reason) => {
                tracing::info!("image {name}: {reason}; copying it again");
                let id = self.local.images().lookup(name).await?;
                remove_copy(&self.local, name, &id, &self.global_id).await?;
                Next::Again
            }
            Ended::Resync(reason) => Next::Wait(StatusState::Error, reason),
            Ended::Disconnected => Next::Wait(StatusState::Error, "disconnected".into()),
        })
    }

    /// Resyncs the copy here with only what changed on either side since the last point both
    /// share; returns false (and says why) when that point cannot be proven.
    async fn delta_resync(
        &self,
        name: &str,
        remote_id: &str,
        remote_header: &Header,
    ) -> Result<bool> {
        let image = self
            .local
            .images()
            .open(name, OpenOptions::default().with_replica(true))
            .await?;
        let done = async {
            match crate::resync::plan(&image, &self.remote.side, remote_id, remote_header).await? {
                Plan::Full(why) => {
                    tracing::info!("image {name}: no shared point with the primary ({why})");
                    Ok(false)
                }
                Plan::Delta(delta) => {
                    let described = delta.describe();
                    tracing::info!("image {name}: resync: {described}");
                    self.reporter
                        .write(
                            StatusState::Syncing,
                            &format!("resyncing, {described}"),
                            None,
                        )
                        .await;
                    *self.resync_bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some(0);
                    let remote_name = self
                        .remote
                        .side
                        .image_name(remote_id)
                        .await?
                        .unwrap_or_else(|| remote_id.to_owned());
                    let copied = crate::resync::apply(
                        &image,
                        &self.remote.side,
                        remote_id,
                        &remote_name,
                        &delta,
                    )
                    .await?;
                    self.count_resync(copied);
                    Ok(true)
                }
            }
        }
        .await;
        let closed = image.close().await;
        let done = done?;
        closed?;
        Ok(done)
    }

    /// Re-reads the local copy's header; returns true if it was promoted (or is no longer
    /// mirrored): the replayer must stop writing it.
    pub(super) async fn local_promoted(&self, image: &rbdx_image::Image) -> Result<bool> {
        image.refresh().await?;
        Ok(image.header().mirror.is_none_or(|m| m.primary))
    }

    /// Returns true if the peer's record no longer says what `remote` says.
    pub(super) async fn remote_changed(&self, remote: &ImageMirror) -> Result<bool> {
        let config = self.remote.side.mirror().load().await?;
        let Some(id) = config.image_by_global(&self.global_id) else {
            return Ok(true);
        };
        let Some((_, header)) = self.remote.side.image(&id).await? else {
            return Ok(true);
        };
        Ok(header.mirror.is_none_or(|m| {
            m.generation.id != remote.generation.id
                || m.primary != remote.primary
                || m.demoted != remote.demoted
        }))
    }
}
