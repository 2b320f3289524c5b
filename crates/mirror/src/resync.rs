//! Delta resync: bringing a demoted copy that diverged (a forced promotion elsewhere while it
//! stayed primary) back in step by copying only what changed on either side since the newest
//! point both copies share, instead of copying the whole image again.
//!
//! The shared point is where the new primary's generation began: its record names the old
//! generation and the position its copy had reached (a mirror snapshot id in snapshot mode, a
//! journal entry id in journal mode). What the old primary wrote after that point never
//! reached the new one and is rolled back: from its own copy of that mirror snapshot
//! (snapshot mode, nothing crosses), or by copying those extents from the new primary
//! (journal mode, where the old primary's journal says which extents they were). Then the
//! copy's record is set to that point, demoted, so that the replayer follows the new
//! generation from its start, as after an orderly failover, and copies only what was written
//! there. When the point cannot be proven (a snapshot pruned, the journal trimmed, an
//! operation that a delta cannot undo), the plan says why and the resync copies everything.

use std::collections::BTreeSet;

use futures::TryStreamExt as _;
use rbdx_image::journaling::Event;
use rbdx_image::mirroring::MirrorMode;
use rbdx_image::{Error, Header, Image, OpenOptions, Result, SnapInfo};
use rbdx_objstore::ExtentSet;
use rbdx_snapdiff::DiffOptions;

use crate::daemon::site::Side;

/// Bytes read from the primary before they are written.
const WINDOW: u64 = 32 << 20;
/// Reads in flight.
const IN_FLIGHT: usize = 16;

/// What a resync will do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Copy only what changed since a shared point.
    Delta(Delta),
    /// Copy everything, for this reason.
    Full(String),
}

/// A delta resync.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The mirroring mode.
    pub mode: MirrorMode,
    /// The shared point: a mirror snapshot id here (snapshot mode) or a journal entry id of
    /// this copy's journal (journal mode).
    pub position: u64,
    /// Image extents written here after the shared point (to roll back).
    pub local: ExtentSet,
    /// Snapshots here taken after the shared point (to remove), by id.
    pub drop_snapshots: Vec<u64>,
    /// Bytes written at the primary since the shared point, when known (snapshot mode: up to
    /// its newest mirror snapshot).
    pub remote_bytes: Option<u64>,
    /// Journal entries at the primary since its promotion (journal mode).
    pub remote_entries: Option<u64>,
}

impl Delta {
    /// One line for the operator.
    pub fn describe(&self) -> String {
        let since = match self.mode {
            MirrorMode::Snapshot => format!("mirror snapshot {}", self.position),
            MirrorMode::Journal => format!("journal entry {}", self.position),
        };
        let there = match (self.remote_bytes, self.remote_entries) {
            (Some(b), _) => format!("{b} bytes changed at the primary"),
            (None, Some(n)) => format!("{n} journal entries at the primary"),
            _ => "what the primary wrote since".to_owned(),
        };
        format!(
            "copying only what changed since {since}: at most {} bytes written here to roll \
             back, {there}",
            self.local.total()
        )
    }
}

/// Plans the resync of `local_image` (this site's non-primary copy, `header`) from the
/// primary's copy (`remote_header` at `remote`).
pub async fn plan(
    local_image: &Image,
    remote: &Side,
    remote_id: &str,
    remote_header: &Header,
) -> Result<Plan> {
    let header = local_image.header();
    let (Some(local), Some(primary)) = (&header.mirror, &remote_header.mirror) else {
        return Ok(Plan::Full("one of the copies is not mirrored".into()));
    };
    if local.primary {
        return Err(Error::invalid("the copy to resync is primary"));
    }
    if !primary.primary {
        return Ok(Plan::Full("the peer's copy is not primary".into()));
    }
    let Some(branch) = &primary.generation.predecessor else {
        return Ok(Plan::Full(
            "the primary's history does not say where it began".into(),
        ));
    };
    if branch.generation != local.generation.id {
        return Ok(Plan::Full(
            "the primary's history did not branch from this copy's generation".into(),
        ));
    }
    let Some(position) = branch.position else {
        return Ok(Plan::Full(
            "the primary was promoted before it held a complete copy".into(),
        ));
    };
    match local.mode {
        MirrorMode::Snapshot => {
            plan_snapshots(
                local_image,
                &header,
                remote,
                remote_id,
                remote_header,
                position,
            )
            .await
        }
        MirrorMode::Journal => {
            plan_journal(
                local_image,
                &header,
                remote,
                remote_id,
                remote_header,
                position,
            )
            .await
        }
    }
}

async fn plan_snapshots(
    image: &Image,
    header: &Header,
    remote: &Side,
    remote_id: &str,
    remote_header: &Header,
    position: u64,
) -> Result<Plan> {
    let shared = header
        .snapshots
        .get(&position)
        .filter(|s| s.namespace.mirror().is_some_and(|m| m.complete));
    let Some(shared) = shared else {
        return Ok(Plan::Full(format!(
            "mirror snapshot {position} is gone here (pruned)"
        )));
    };
    let base = remote_header
        .snapshots
        .values()
        .find(|s| {
            s.namespace.mirror().is_some_and(|m| {
                !m.state.is_primary() && m.complete && m.primary_snap_id == Some(position)
            })
        })
        .map(|s| s.id);
    let Some(base) = base else {
        return Ok(Plan::Full(format!(
            "the primary no longer has its copy of mirror snapshot {position}"
        )));
    };
    let options = DiffOptions::default()
        .with_from_snap(Some(shared.name.clone()))
        .with_include_parent(false);
    let mut local = ExtentSet::new();
    let mut extents = rbdx_snapdiff::diff_extents(image, &options);
    while let Some(e) = extents.try_next().await? {
        local.insert(e.offset, e.length);
    }
    drop(extents);
    let drop_snapshots = header
        .snapshots
        .keys()
        .copied()
        .filter(|id| *id > position)
        .collect();
    let remote_bytes = remote_delta(remote, remote_id, remote_header, base).await?;
    Ok(Plan::Delta(Delta {
        mode: MirrorMode::Snapshot,
        position,
        local,
        drop_snapshots,
        remote_bytes,
        remote_entries: None,
    }))
}

/// Bytes of the primary's newest mirror snapshot that differ from `base`.
async fn remote_delta(
    remote: &Side,
    remote_id: &str,
    remote_header: &Header,
    base: u64,
) -> Result<Option<u64>> {
    let newest = remote_header
        .snapshots
        .range(base + 1..)
        .rev()
        .find(|(_, s)| {
            s.namespace
                .mirror()
                .is_some_and(|m| m.state.is_primary() && m.complete)
        })
        .map(|(id, _)| *id);
    let (Some(newest), Some(base_name)) = (
        newest,
        remote_header.snapshots.get(&base).map(|s| s.name.clone()),
    ) else {
        return Ok(None);
    };
    let name = remote
        .image_name(remote_id)
        .await?
        .unwrap_or_else(|| remote_id.to_owned());
    let source = Image::open_by_id(
        remote.cluster.clone(),
        remote.io.clone(),
        &name,
        remote_id,
        OpenOptions::default()
            .with_snap_id(Some(newest))
            .with_read_only(true),
    )
    .await?;
    let options = DiffOptions::default()
        .with_from_snap(Some(base_name))
        .with_include_parent(false);
    let total = async {
        let mut total = 0;
        let mut extents = rbdx_snapdiff::diff_extents(&source, &options);
        while let Some(e) = extents.try_next().await? {
            if e.data {
                total += e.length;
            }
        }
        Ok::<_, Error>(total)
    }
    .await;
    let closed = source.close().await;
    let total = total?;
    closed?;
    Ok(Some(total))
}

async fn plan_journal(
    image: &Image,
    header: &Header,
    remote: &Side,
    remote_id: &str,
    remote_header: &Header,
    position: u64,
) -> Result<Plan> {
    let journal = match rbdx_journal::Journal::open(
        image.store().clone(),
        image.io_ctx().clone(),
        image.id(),
    )
    .await
    {
        Ok(j) => j,
        Err(e) if e.kind() == rbdx_image::ErrorKind::NotFound => {
            return Ok(Plan::Full("this copy has no journal".into()));
        }
        Err(e) => return Err(e),
    };
    let entries = journal.entries_after(None).await?;
    let last_committed = journal
        .header()
        .await?
        .clients
        .get(rbdx_journal::IMAGE_CLIENT)
        .and_then(|c| c.commit_position)
        .map_or(0, |p| p.entry_tid);
    let after: Vec<_> = entries
        .into_iter()
        .filter(|(p, _)| p.entry_tid > position)
        .collect();
    let contiguous = match after.first() {
        Some((p, _)) => p.entry_tid == position + 1,
        None => last_committed <= position,
    };
    if !contiguous {
        return Ok(Plan::Full(format!(
            "this copy's journal no longer holds every entry after entry {position} (trimmed)"
        )));
    }
    let mut local = ExtentSet::new();
    let mut created: BTreeSet<String> = BTreeSet::new();
    for (_, entry) in &after {
        let (event, _) = rbdx_journal::event::decode(&entry.data)?;
        match &event {
            Event::Write { offset, data } => local.insert(*offset, data.len() as u64),
            Event::CompareAndWrite { offset, data, .. } => local.insert(*offset, data.len() as u64),
            Event::Discard { offset, length }
            | Event::WriteZeroes { offset, length }
            | Event::WriteSame { offset, length, .. } => local.insert(*offset, *length),
            Event::SnapCreate { name } => {
                created.insert(name.clone());
            }
            Event::SnapProtect { name }
            | Event::SnapUnprotect { name }
            | Event::SnapRemove { name }
                if created.contains(name) => {}
            Event::Flush
            | Event::DemotePromote
            | Event::OpFinish { .. }
            | Event::MetadataSet { .. }
            | Event::MetadataRemove { .. } => {}
            other => {
                return Ok(Plan::Full(format!(
                    "this copy ran {} after the primary was promoted; a delta cannot undo it",
                    rbdx_journal::event::name(other)
                )));
            }
        }
    }
    let drop_snapshots: Vec<u64> = header
        .snapshots
        .values()
        .filter(|s| created.contains(&s.name))
        .map(|s| s.id)
        .collect();
    if !local.is_empty() {
        // Extents copied from the primary's head would be wrong in a snapshot it took since
        // its promotion (replay recreates the snapshot after the copy).
        let newer = remote_header
            .user_snapshots()
            .any(|s| header.snapshot_by_name(&s.name).is_none());
        if newer {
            return Ok(Plan::Full(
                "the primary took snapshots since its promotion".into(),
            ));
        }
    }
    let Some(remote_entries) = remote_journal_entries(remote, remote_id, remote_header).await?
    else {
        return Ok(Plan::Full(
            "the primary's journal no longer holds every entry since its promotion".into(),
        ));
    };
    let remote_entries = Some(remote_entries);
    Ok(Plan::Delta(Delta {
        mode: MirrorMode::Journal,
        position,
        local,
        drop_snapshots,
        remote_bytes: None,
        remote_entries,
    }))
}

/// Entries the primary journaled since its promotion, or `None` if its journal no longer
/// holds them all (trimmed: then only a full copy can catch up).
async fn remote_journal_entries(
    remote: &Side,
    remote_id: &str,
    remote_header: &Header,
) -> Result<Option<u64>> {
    let start = remote_header
        .mirror
        .as_ref()
        .and_then(|m| m.generation.journal_start);
    let journal =
        rbdx_journal::Journal::open(remote.store().clone(), remote.io.clone(), remote_id).await?;
    let header = journal.header().await?;
    let first_set = start.map_or(0, |p| p.object_number / journal.meta().splay_width.max(1));
    if header.sets.minimum_set > first_set {
        return Ok(None);
    }
    let last = header
        .clients
        .get(rbdx_journal::IMAGE_CLIENT)
        .and_then(|c| c.commit_position)
        .map_or(0, |p| p.entry_tid);
    Ok(Some(last.saturating_sub(start.map_or(0, |p| p.entry_tid))))
}

/// Carries out a delta resync of `image` (the replica handle of this site's copy) from the
/// primary's copy `remote_id` at `remote`; returns the bytes read from the primary.
pub async fn apply(
    image: &Image,
    remote: &Side,
    remote_id: &str,
    remote_name: &str,
    delta: &Delta,
) -> Result<u64> {
    for id in &delta.drop_snapshots {
        let snap = image.header().snapshots.get(id).cloned();
        if let Some(snap) = snap {
            drop_snapshot(image, &snap).await?;
        }
    }
    let copied = match delta.mode {
        MirrorMode::Snapshot => {
            let source = Image::open_by_id(
                image.cluster().clone(),
                image.io_ctx().clone(),
                image.name(),
                image.id(),
                OpenOptions::default()
                    .with_snap_id(Some(delta.position))
                    .with_read_only(true),
            )
            .await?;
            let done = copy_ranges(image, &source, &delta.local).await;
            let size = image
                .header()
                .snapshots
                .get(&delta.position)
                .map(|s| s.size);
            let closed = source.close().await;
            done?;
            closed?;
            if let Some(size) = size
                && size != image.size()
            {
                image.resize(size, true).await?;
            }
            0
        }
        MirrorMode::Journal => {
            let source = Image::open_by_id(
                remote.cluster.clone(),
                remote.io.clone(),
                remote_name,
                remote_id,
                OpenOptions::default().with_read_only(true),
            )
            .await?;
            let done = copy_ranges(image, &source, &delta.local).await;
            let closed = source.close().await;
            let done = done?;
            closed?;
            done
        }
    };
    image.flush().await?;
    let position = delta.position;
    image
        .mirror_update(|m| {
            if let Some(m) = m.as_mut() {
                m.position = Some(position);
                m.demoted = true;
                m.resync = false;
                m.syncing = None;
            }
            Ok(())
        })
        .await?;
    Ok(copied)
}

/// Copies `ranges` of `source` into `image`, a window at a time; returns the bytes copied.
async fn copy_ranges(image: &Image, source: &Image, ranges: &ExtentSet) -> Result<u64> {
    let size = image.size().min(source.size());
    let wanted: Vec<(u64, u64)> = ranges
        .extents()
        .into_iter()
        .filter(|e| e.offset < size)
        .map(|e| (e.offset, e.length.min(size - e.offset)))
        .collect();
    let mut copied = 0;
    let mut window: Vec<(u64, u64)> = Vec::new();
    let mut bytes = 0;
    for (i, &(offset, length)) in wanted.iter().enumerate() {
        window.push((offset, length));
        bytes += length;
        if bytes < WINDOW && i + 1 < wanted.len() {
            continue;
        }
        copied += copy_sparse(image, source, &window).await?;
        window.clear();
        bytes = 0;
    }
    Ok(copied)
}

/// Copies the extents `wanted` of `source` into `image`: the source's data is read without
/// its holes (only data crosses from a remote source), and each extent is written whole
/// (zeros where the source has none), one store operation per object. Returns the bytes of
/// data read.
pub(crate) async fn copy_sparse(
    image: &Image,
    source: &Image,
    wanted: &[(u64, u64)],
) -> Result<u64> {
    let mut read = 0;
    let mut writes = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(IN_FLIGHT) {
        let reads = chunk.iter().map(|&(o, l)| source.read_data(o, l));
        let runs = futures::future::try_join_all(reads).await?;
        for (&(offset, length), runs) in chunk.iter().zip(runs) {
            let mut buf = vec![0u8; length as usize];
            for (at, data) in runs {
                let from = (at - offset) as usize;
                buf[from..from + data.len()].copy_from_slice(&data);
                read += data.len() as u64;
            }
            writes.push((offset, bytes::Bytes::from(buf)));
        }
    }
    if !writes.is_empty() {
        image.write_many(writes).await?;
    }
    Ok(read)
}

/// Removes one snapshot of this copy (unprotecting a user snapshot first).
async fn drop_snapshot(image: &Image, snap: &SnapInfo) -> Result<()> {
    if snap.namespace.mirror().is_some() {
        return image.mirror_snap_remove(snap.id).await;
    }
    if snap.protection == rbdx_image::Protection::Protected {
        image.snap_set_protection(&snap.name, false).await?;
    }
    image.snap_remove(&snap.name).await
}

/// Plans the resync of image `name` of `local` from its copy at `remote` (for the operator:
/// what `mirror image resync` will copy).
pub async fn plan_for(local: &Side, remote: &Side, name: &str) -> Result<Plan> {
    let image = local
        .images()
        .open(name, OpenOptions::default().with_read_only(true))
        .await?;
    let planned = async {
        let global_id = image
            .header()
            .mirror
            .map(|m| m.global_id)
            .ok_or_else(|| Error::invalid(format!("image {name} is not mirrored")))?;
        let config = remote.mirror().load().await?;
        let Some(remote_id) = config.image_by_global(&global_id) else {
            return Ok(Plan::Full("the peer has no copy of the image".into()));
        };
        let Some((_, remote_header)) = remote.image(&remote_id).await? else {
            return Ok(Plan::Full("the peer has no copy of the image".into()));
        };
        plan(&image, remote, &remote_id, &remote_header).await
    }
    .await;
    let closed = image.close().await;
    let planned = planned?;
    closed?;
    Ok(planned)
}
