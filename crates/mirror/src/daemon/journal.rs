//! Journal-mode replay: follow the primary's journal through the peer's gateway, apply its
//! entries in order to the non-primary copy, and move this site's commit position at the
//! primary once they are durable here.
//!
//! Data events between two other events (an operation, a flush, a demotion) are applied
//! together: the writes to each object as one store operation, in journal order within it;
//! everything else is applied in journal order. So the copy is always a point in time the
//! primary's clients could have seen after a crash.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rbdx_image::journaling::Event;
use rbdx_image::mirroring::ImageMirror;
use rbdx_image::{ErrorKind, Image, Result};
use rbdx_journal::header::{ClientState, Position};
use rbdx_journal::{Applier, FollowOptions, Follower, Journal};
use tokio::sync::mpsc;

use super::Replayer;
use super::sync::{sync_end, sync_end_key};
use crate::status::StatusState;

/// What the follower task hands over: a batch of entries, the end, or an error.
type Batch = Result<Option<Vec<(Position, rbdx_journal::entry::Entry)>>>;

/// What the follower task hands over.
#[derive(Debug)]
enum Delivery {
    /// A batch, the end, or an error.
    Batch(Batch),
    /// The follower has caught up with the primary (it waits for new entries).
    CaughtUp,
}

/// How long the follower may wait for entries before replay counts as caught up.
const CAUGHT_UP: Duration = Duration::from_millis(20);

/// Why a replay session ended.
#[derive(Debug)]
pub enum Ended {
    /// Stopped (daemon stopping or lease lost).
    Stopped,
    /// The primary changed (promoted, demoted, another generation): decide again.
    Changed,
    /// The copy cannot follow any more and needs a resync, for this reason (the operator's
    /// call).
    Resync(String),
    /// The copy must be made again, for this reason (done at once).
    Restart(String),
    /// This site's journal client at the primary was disconnected.
    Disconnected,
}

/// Returns true for the data events applied here (writes, discards, zeroes, write-same,
/// compare-and-write).
fn is_data(event: &Event) -> bool {
    event.is_data() && !matches!(event, Event::Flush)
}

/// Applies data events in order: runs of writes go to the store one operation per object;
/// the other data events one by one between them.
async fn apply_data(image: &Image, events: &[(u64, Event)]) -> Result<()> {
    let size = image.size();
    let mut writes: Vec<(u64, bytes::Bytes)> = Vec::new();
    for (_, event) in events {
        match event {
            Event::Write { offset, data } => {
                // Clipped to the size, as replay clips (a later shrink may have cut it).
                if *offset < size {
                    let len = data.len().min((size - offset) as usize);
                    writes.push((*offset, data.slice(..len)));
                }
            }
            other => {
                if !writes.is_empty() {
                    image.write_many(std::mem::take(&mut writes)).await?;
                }
                image.apply_event(other, None).await?;
            }
        }
    }
    if !writes.is_empty() {
        image.write_many(writes).await?;
    }
    Ok(())
}

/// How long applied entries may wait before they are made durable and committed.
const SETTLE: Duration = Duration::from_secs(1);

/// What replay applied and has not made durable yet.
#[derive(Debug, Default)]
struct Pending {
    /// Positions of the entries applied since the last commit, by entry id.
    positions: BTreeMap<u64, Position>,
    /// The last entry applied.
    applied: Option<Position>,
    /// Where the commit position may move.
    commit: Option<Position>,
    /// The entry of the primary's demotion, once applied.
    demoted_at: Option<u64>,
    /// When the oldest entry not yet durable was applied.
    since: Option<Instant>,
    /// The end of the initial copy, until replay passes it.
    fixup_end: Option<Position>,
}

/// Replay figures for the status.
#[derive(Debug)]
struct Figures {
    since: Instant,
    entries: u64,
    bytes: u64,
    entries_per_second: f64,
    bytes_per_second: f64,
}

impl Figures {
    fn new() -> Figures {
        Figures {
            since: Instant::now(),
            entries: 0,
            bytes: 0,
            entries_per_second: 0.0,
            bytes_per_second: 0.0,
        }
    }

    fn count(&mut self, entries: u64, bytes: u64) {
        self.entries += entries;
        self.bytes += bytes;
        let secs = self.since.elapsed().as_secs_f64();
        if secs >= 2.0 {
            self.entries_per_second = self.entries as f64 / secs;
            self.bytes_per_second = self.bytes as f64 / secs;
            self.since = Instant::now();
            self.entries = 0;
            self.bytes = 0;
        }
    }
}

fn position_json(p: Option<Position>) -> serde_json::Value {
    match p {
        Some(p) => serde_json::json!({
            "entry_tid": p.entry_tid,
            "object_number": p.object_number,
            "tag_tid": p.tag_tid,
        }),
        None => serde_json::json!({}),
    }
}

impl Replayer {
    /// Follows the primary's journal into `image` (the replica handle of the local copy)
    /// until the session has to end.
    pub(super) async fn replay_journal(
        &self,
        image: &Image,
        remote_id: &str,
        remote: &ImageMirror,
    ) -> Result<Ended> {
        let store = self.remote.side.store().clone();
        let io = self.remote.side.io.clone();
        let journal = Journal::open(store.clone(), io.clone(), remote_id).await?;
        let header = journal.header().await?;
        let local = crate::image::record_of(image)?;
        let switching = local.generation.id != remote.generation.id;
        let after = match header.clients.get(&self.remote.owner) {
            Some(c) if c.state == ClientState::Disconnected => return Ok(Ended::Disconnected),
            Some(c) if !switching => c.commit_position,
            _ if switching => {
                // The first replay of a new generation: from where it began.
                let start = remote.generation.journal_start.map(|p| Position {
                    object_number: p.object_number,
                    tag_tid: p.tag_tid,
                    entry_tid: p.entry_tid,
                });
                match journal
                    .register_client(&self.remote.owner, "mirror peer")
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                if let Some(p) = start {
                    journal.commit(&self.remote.owner, p).await?;
                }
                image
                    .mirror_update(|m| {
                        if let Some(m) = m.as_mut() {
                            m.generation = remote.generation.clone();
                            m.position = None;
                            m.demoted = false;
                        }
                        Ok(())
                    })
                    .await?;
                start
            }
            _ => {
                return Ok(Ended::Resync(
                    "this site is not registered with the primary's journal".into(),
                ));
            }
        };
        let fixup_end = sync_end(&self.local, &self.global_id).await?;
        let (tx, mut rx) = mpsc::channel(2);
        let mut follower = match Follower::open(
            store.clone(),
            io.clone(),
            remote_id,
            after,
            FollowOptions::default(),
        )
        .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Ended::Resync(format!("the primary's journal: {e}")));
            }
            Err(e) => return Err(e),
        };
        let stopper = follower.stopper();
        let reader = tokio::spawn(async move {
            loop {
                let next = follower.next_batch();
                tokio::pin!(next);
                let mut told = false;
                let batch = loop {
                    tokio::select! {
                        batch = &mut next => break batch,
                        _ = tokio::time::sleep(CAUGHT_UP), if !told => {
                            told = true;
                            if tx.send(Delivery::CaughtUp).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let last = !matches!(batch, Ok(Some(_)));
                if tx.send(Delivery::Batch(batch)).await.is_err() || last {
                    break;
                }
            }
            follower.close().await;
        });
        let result = self
            .replay_batches(image, &journal, remote, &mut rx, fixup_end)
            .await;
        stopper.stop();
        drop(rx);
        let _ = reader.await;
        result
    }

    async fn replay_batches(
        &self,
        image: &Image,
        journal: &Journal,
        remote: &ImageMirror,
        rx: &mut mpsc::Receiver<Delivery>,
        fixup_end: Option<Position>,
    ) -> Result<Ended> {
        let mut pending = Pending {
            fixup_end,
            ..Pending::default()
        };
        let mut applier = Applier::new();
        let mut figures = Figures::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    self.settle(image, journal, &mut pending).await?;
                    return Ok(Ended::Stopped);
                }
                _ = tick.tick() => {
                    if self.local_promoted(image).await? {
                        return Ok(Ended::Changed);
                    }
                    self.settle(image, journal, &mut pending).await?;
                    if self.remote_changed(remote).await? {
                        return Ok(Ended::Changed);
                    }
                    self.report_replay(journal, pending.applied, &figures).await;
                }
                delivery = rx.recv() => {
                    let batch = match delivery {
                        Some(Delivery::CaughtUp) => {
                            self.settle(image, journal, &mut pending).await?;
                            continue;
                        }
                        Some(Delivery::Batch(batch)) => batch,
                        None => Ok(None),
                    };
                    let batch = match batch {
                        Ok(Some(batch)) => batch,
                        Ok(None) => {
                            self.settle(image, journal, &mut pending).await?;
                            return Ok(Ended::Stopped);
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            return Ok(Ended::Resync(format!("the primary's journal: {e}")));
                        }
                        Err(e) => return Err(e),
                    };
                    if self.local_promoted(image).await? {
                        return Ok(Ended::Changed);
                    }
                    let mut events = Vec::with_capacity(batch.len());
                    let mut bytes = 0u64;
                    for (position, entry) in &batch {
                        let (event, _) = rbdx_journal::event::decode(&entry.data)?;
                        bytes += entry.data.len() as u64;
                        pending.positions.insert(position.entry_tid, *position);
                        if let Some(end) = pending.fixup_end
                            && position.entry_tid <= end.entry_tid
                            && self.unseen_by_copy(image, &event)
                        {
                            return Ok(Ended::Restart(format!(
                                "the primary ran {} during the initial copy",
                                rbdx_journal::event::name(&event)
                            )));
                        }
                        events.push((position.entry_tid, event));
                    }
                    let demoted = self.apply_batch(image, &mut applier, &events).await?;
                    let last = batch.last().map(|(p, _)| *p);
                    pending.applied = last;
                    if demoted {
                        pending.demoted_at = last.map(|p| p.entry_tid);
                    }
                    // Commit no further than the entry before the oldest operation still
                    // waiting for its outcome: a restart replays from there.
                    pending.commit = match applier.held().into_iter().min() {
                        Some(h) => pending.positions.range(..h).next_back().map(|(_, p)| *p),
                        None => last,
                    };
                    pending.since.get_or_insert_with(Instant::now);
                    figures.count(batch.len() as u64, bytes);
                    self.count_resync(bytes);
                    // Made durable (and committed at the primary) once a second (the tick
                    // settles what waits when replay has caught up) and at a demotion.
                    if demoted || pending.since.is_some_and(|t| t.elapsed() >= SETTLE) {
                        self.settle(image, journal, &mut pending).await?;
                    }
                    if self.reporter.due() {
                        self.report_replay(journal, pending.applied, &figures).await;
                    }
                }
            }
        }
    }

    /// Makes what was applied durable, records the copy's position, and moves the commit
    /// position at the primary.
    async fn settle(&self, image: &Image, journal: &Journal, pending: &mut Pending) -> Result<()> {
        if pending.since.take().is_none() {
            return Ok(());
        }
        image.flush().await?;
        if let Some(last) = pending.applied {
            let demoted_at = pending.demoted_at;
            image
                .mirror_update(|m| {
                    if let Some(m) = m.as_mut() {
                        m.position = Some(last.entry_tid);
                        if let Some(tid) = demoted_at {
                            m.demoted = true;
                            m.position = Some(tid);
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        if let Some(c) = pending.commit {
            journal.commit(&self.remote.owner, c).await?;
            pending.positions = pending.positions.split_off(&c.entry_tid);
        }
        if let (Some(end), Some(last)) = (pending.fixup_end, pending.applied)
            && last.entry_tid >= end.entry_tid
        {
            self.local
                .mirror()
                .update(Vec::new(), vec![sync_end_key(&self.global_id)])
                .await?;
            pending.fixup_end = None;
        }
        Ok(())
    }

    /// Applies one batch; returns true if it ends with the primary's demotion.
    async fn apply_batch(
        &self,
        image: &Image,
        applier: &mut Applier,
        events: &[(u64, Event)],
    ) -> Result<bool> {
        let mut start = 0;
        for (i, (_, event)) in events.iter().enumerate() {
            if is_data(event) {
                continue;
            }
            apply_data(image, &events[start..i]).await?;
            if matches!(event, Event::Flush) {
                image.flush().await?;
            } else {
                applier.apply(image, &events[i..=i]).await?;
            }
            start = i + 1;
        }
        apply_data(image, &events[start..]).await?;
        Ok(matches!(events.last(), Some((_, Event::DemotePromote))))
    }

    /// Returns true for an event the initial copy may not reflect and replay cannot redo.
    fn unseen_by_copy(&self, image: &Image, event: &Event) -> bool {
        match event {
            Event::SnapCreate { name } => image.header().snapshot_by_name(name).is_none(),
            Event::SnapRollback { .. } => true,
            _ => false,
        }
    }

    async fn report_replay(&self, journal: &Journal, applied: Option<Position>, figures: &Figures) {
        let header = journal.header().await.ok();
        let commit_of = |id: &str| {
            header
                .as_ref()
                .and_then(|h| h.clients.get(id).and_then(|c| c.commit_position))
        };
        let primary = commit_of(rbdx_journal::IMAGE_CLIENT);
        let applied = applied.or_else(|| commit_of(&self.remote.owner));
        let behind = match (primary, applied) {
            (Some(p), Some(a)) => p.entry_tid.saturating_sub(a.entry_tid),
            (Some(p), None) => p.entry_tid + 1,
            _ => 0,
        };
        let seconds_until_synced = if figures.entries_per_second > 0.0 {
            (behind as f64 / figures.entries_per_second).ceil() as u64
        } else {
            0
        };
        let mut json = serde_json::json!({
            "bytes_per_second": figures.bytes_per_second,
            "entries_behind_primary": behind,
            "entries_per_second": figures.entries_per_second,
            "non_primary_position": position_json(applied),
            "primary_position": position_json(primary),
            "seconds_until_synced": seconds_until_synced,
        });
        if let Some(bytes) = self.resync_figure() {
            json["bytes_since_resync"] = bytes.into();
        }
        self.reporter
            .report(StatusState::Replaying, &format!("replaying, {json}"), None)
            .await;
    }
}
