//! `migration execute`, `commit` and `abort`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbdx_deepcopy::{CopyOptions, CopyProgress};
use rbdx_image::migration::{MigrationRole, MigrationState};
use rbdx_image::{Error, ErrorKind, Features, Images, OpenOptions, Progress, Result};

use crate::Migration;
use crate::progress::{self, ProgressRecord, now_secs};

/// Options of `execute`.
#[derive(Debug, Clone, Default)]
pub struct ExecuteOptions {
    /// Objects copied at once (0: the default).
    pub concurrency: usize,
    /// At most this many bytes per second, if set.
    pub bandwidth_limit: Option<u64>,
    /// Open the destination as the mirror daemon's replica handle (it may be a non-primary
    /// mirror copy).
    pub replica: bool,
}

/// How often `execute` writes its progress record.
const SAVE_EVERY: Duration = Duration::from_secs(1);

impl Migration {
    /// Copies every object of destination `name` from its source; `on_progress` gets bytes
    /// copied and the total. Resumes where an interrupted run stopped; does nothing once
    /// executed.
    pub async fn execute(
        &self,
        dst: &Images,
        name: &str,
        options: &ExecuteOptions,
        on_progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<()> {
        let (id, _, spec) = self.destination(dst, name).await?;
        match spec.state {
            MigrationState::Executed => return Ok(()),
            MigrationState::Prepared | MigrationState::Executing => {}
            other => {
                return Err(Error::invalid(format!(
                    "the migration of image {name} is {}; it cannot be executed",
                    other.name()
                )));
            }
        }
        Migration::set_state(dst, &id, name, MigrationState::Executing).await?;
        let image = dst
            .open(name, OpenOptions::default().with_replica(options.replica))
            .await?;
        let result = self.copy(dst, &id, &image, options, on_progress).await;
        let finished = match result {
            Ok(()) => {
                if image.header().features.contains(Features::OBJECT_MAP) {
                    image.object_map_rebuild(&|_, _| {}).await?;
                }
                Migration::set_state(dst, &id, name, MigrationState::Executed).await
            }
            Err(e) => Err(e),
        };
        let closed = image.close().await;
        finished.and(closed)
    }

    async fn copy(
        &self,
        dst: &Images,
        id: &str,
        image: &rbdx_image::Image,
        options: &ExecuteOptions,
        on_progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<()> {
        let store = self.store.clone();
        let io = dst.io_ctx().clone();
        let checkpoint = progress::load(&store, &io, id).await?.unwrap_or_default();
        let mut copy = CopyOptions {
            bandwidth_limit: options.bandwidth_limit,
            start_object: checkpoint.next_object,
            ..CopyOptions::default()
        };
        if options.concurrency > 0 {
            copy.concurrency = options.concurrency;
        }
        let latest: Arc<Mutex<Option<ProgressRecord>>> = Arc::default();
        let began = Instant::now();
        let first_copied: Mutex<Option<u64>> = Mutex::new(None);
        let record = |p: &CopyProgress| {
            let start = *first_copied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(p.copied_bytes);
            let secs = began.elapsed().as_secs_f64().max(0.001);
            ProgressRecord {
                copied_bytes: p.copied_bytes,
                total_bytes: p.total_bytes,
                next_object: p.next_object,
                objects: p.objects,
                rate: p.copied_bytes.saturating_sub(start) as f64 / secs,
                updated: now_secs(),
            }
        };
        let saver = {
            let latest = latest.clone();
            let store = store.clone();
            let io = io.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SAVE_EVERY).await;
                    let rec = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(rec) = rec {
                        let _ = progress::save(&store, &io, &id, &rec).await;
                    }
                }
            })
        };
        let result = rbdx_deepcopy::copy_migration(image, &copy, &|p| {
            *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(record(p));
            on_progress(p.copied_bytes, p.total_bytes);
        })
        .await;
        saver.abort();
        let _ = saver.await;
        let last = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(rec) = last {
            progress::save(&store, &io, id, &rec).await?;
        }
        result.map(|_| ())
    }

    /// Commits the migration to destination `name`: the source is deleted (live) and the
    /// destination stands alone. With `force`, clones of the source's snapshots move to the
    /// destination's; without it they make commit fail.
    pub async fn commit(
        &self,
        dst: &Images,
        name: &str,
        force: bool,
        progress_cb: Progress<'_>,
    ) -> Result<()> {
        let (id, _, spec) = self.destination(dst, name).await?;
        match spec.state {
            MigrationState::Executed | MigrationState::Committing => {}
            other => {
                return Err(Error::invalid(format!(
                    "the migration of image {name} is {}, not executed; run 'rbdx migration \
                     execute' first",
                    other.name()
                )));
            }
        }
        let source = match spec.moves_source() {
            true => Some(self.other_images(&spec).await?),
            false => None,
        };
        let across = spec.other_cluster().is_some();
        if let Some(src) = &source
            && spec.state == MigrationState::Executed
        {
            match src.header_by_id(&spec.image_id, &spec.image_name).await {
                Ok(header) => {
                    let mut kids = 0;
                    for s in header.snapshots.values() {
                        kids += src_children(src, &spec.image_id, s.id).await?;
                    }
                    if kids > 0 && across {
                        return Err(Error::busy(format!(
                            "image {} has {kids} clone(s), which cannot follow it to another \
                             cluster; flatten or remove them first",
                            spec.image_name
                        )));
                    }
                    if kids > 0 && !force {
                        return Err(Error::busy(format!(
                            "image {} has {kids} clone(s); make sure they are not in use and \
                             commit with --force to move them to {name}",
                            spec.image_name
                        )));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // The point of no return: from here the destination no longer reads the source.
        Migration::set_state(dst, &id, name, MigrationState::Committing).await?;
        if let Some(src) = &source {
            match src.header_by_id(&spec.image_id, &spec.image_name).await {
                Ok(header) => {
                    src.reparent_children(&spec.image_id, &header, dst, &id, &spec)
                        .await?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // Also when the header is gone already: a removal cut short leaves its trash
            // entry and directory entry behind.
            src.remove_migration_source(&spec.image_id, &spec.image_name, progress_cb)
                .await?;
        }
        // The progress record goes before the migration record, which a re-run needs.
        progress::remove(&self.store, dst.io_ctx(), &id).await?;
        dst.update_migration(&id, name, |m| {
            *m = None;
            Ok(())
        })
        .await?;
        progress_cb(1, 1);
        Ok(())
    }

    /// Aborts the migration to destination `name`: the destination is deleted and a live
    /// source is put back, writable, under its name. Also finishes an abort cut short.
    pub async fn abort(&self, dst: &Images, name: &str, progress_cb: Progress<'_>) -> Result<()> {
        let found = match dst.lookup(name).await {
            Ok(id) => Some(id),
            Err(e) if e.kind() == ErrorKind::NotFound => dst.directory_entry(name).await?,
            Err(e) => return Err(e),
        };
        // A destination whose creation was cut short has no header: remove what it left.
        let partial = match &found {
            Some(id) => dst.remove_partial(name, id).await?,
            None => false,
        };
        let Some(id) = found.filter(|_| !partial) else {
            // The destination is gone: put back a source still waiting for it.
            return match self.orphaned_source(dst, name).await? {
                Some((src, src_id, src_name)) => {
                    src.restore_migration_source(&src_id, &src_name).await
                }
                None if partial => Ok(()),
                None => Err(Error::not_found(format!("image {name} does not exist"))),
            };
        };
        let header = dst.header_by_id(&id, name).await?;
        let spec = match header.migration.clone() {
            Some(m) if m.role == MigrationRole::Destination => m,
            _ => {
                return Err(Error::invalid(format!(
                    "image {name} is not the destination of a migration"
                )));
            }
        };
        if spec.state == MigrationState::Committing {
            return Err(Error::invalid(format!(
                "the migration of image {name} is being committed; run 'rbdx migration commit' \
                 to finish it"
            )));
        }
        for s in header.snapshots.values() {
            if src_children(dst, &id, s.id).await? > 0 {
                return Err(Error::busy(format!(
                    "snapshot {} of image {name} has clones; remove them first",
                    s.name
                )));
            }
        }
        Migration::set_state(dst, &id, name, MigrationState::Aborting).await?;
        dst.ensure_unwatched(name, &id).await?;
        if spec.moves_source() && spec.other_cluster().is_some() {
            // The destination's clients wrote here: their writes go back to the source
            // before the destination goes.
            let src = self.other_images(&spec).await?;
            src.restore_migration_source(&spec.image_id, &spec.image_name)
                .await?;
            let written =
                crate::across::write_back(dst, &id, &header, &src, &spec.image_name).await?;
            tracing::info!(
                "migration of image {name} aborted: {written} bytes written at the destination \
                 went back to the source"
            );
        }
        progress::remove(&self.store, dst.io_ctx(), &id).await?;
        dst.remove_migration_source(&id, name, progress_cb).await?;
        if spec.moves_source() && spec.other_cluster().is_none() {
            let src = self.images(spec.io_ctx());
            src.restore_migration_source(&spec.image_id, &spec.image_name)
                .await?;
        }
        progress_cb(1, 1);
        Ok(())
    }
}

async fn src_children(images: &Images, id: &str, snap: u64) -> Result<usize> {
    Ok(
        rbdx_image::children::list(images.store(), images.io_ctx(), id, snap)
            .await?
            .len(),
    )
}
