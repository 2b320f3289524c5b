//! The journal as the image layer uses it: events in, entry ids out, and the image's commit
//! position kept in step with what has been applied.
//!
//! The commit position (kept by [`Commits`]) is saved in the journal header in the background
//! every [`SAVE_EVERY`] entries or [`SAVE_AFTER`], as soon as it reaches a new object set (so
//! the sets behind it are trimmed while their pages are still only in memory: large writes
//! fill a set in a few entries), and on close; each save also trims. After a
//! crash the entries past the saved position are replayed, which may apply some twice:
//! harmless, as every event is idempotent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use rbdx_image::Result;
use rbdx_image::journaling::{ChangeLog, Event, JournalLayout, JournalOpener};
use rbdx_objstore::{IoCtx, ObjectStore, ObjectWrite};

use crate::commits::Commits;
use crate::header::Position;
use crate::journal::{IMAGE_CLIENT, Journal, JournalOptions};

/// Entries applied between saves of the commit position.
const SAVE_EVERY: u64 = 256;
/// Longest time between saves of the commit position while entries are applied.
const SAVE_AFTER: Duration = Duration::from_secs(1);

/// An image's open journal.
#[derive(Debug)]
pub struct ImageJournal {
    journal: Arc<Journal>,
    commits: Arc<Mutex<Commits>>,
    saving: Arc<AtomicBool>,
}

impl ImageJournal {
    /// Wraps a journal opened for appending.
    pub fn new(journal: Journal) -> Self {
        ImageJournal {
            journal: Arc::new(journal),
            commits: Arc::new(Mutex::new(Commits::default())),
            saving: Arc::new(AtomicBool::new(false)),
        }
    }

    fn commits(&self) -> MutexGuard<'_, Commits> {
        lock(&self.commits)
    }

    /// Saves the commit position (and trims) in the background unless a save is running;
    /// returns true if it started one.
    fn save_in_background(&self, position: Position) -> bool {
        if self.saving.swap(true, Ordering::SeqCst) {
            return false;
        }
        let journal = self.journal.clone();
        let saving = self.saving.clone();
        tokio::spawn(async move {
            if let Err(e) = save(&journal, position).await {
                tracing::warn!("journal of image {}: {e}", journal.image_id());
            }
            saving.store(false, Ordering::SeqCst);
        });
        true
    }
}

async fn save(journal: &Journal, position: Position) -> Result<()> {
    journal.commit(IMAGE_CLIENT, position).await?;
    journal.trim().await?;
    Ok(())
}

#[async_trait]
impl ChangeLog for ImageJournal {
    async fn append(&self, event: Event) -> Result<u64> {
        Ok(self.submit(event, Vec::new())?.await?.0)
    }

    fn submit(
        &self,
        event: Event,
        with: Vec<ObjectWrite>,
    ) -> Result<BoxFuture<'static, Result<(u64, bool)>>> {
        let pieces = crate::event::encode_pieces(&event);
        // Numbered and queued under one lock, so ids follow the submission numbers.
        let (submission, appended) = {
            let mut c = self.commits();
            let appended = self.journal.submit_with(pieces, with)?;
            let submission = Submission {
                commits: self.commits.clone(),
                seq: Some(c.submit()),
            };
            (submission, appended)
        };
        Ok(Box::pin(async move {
            let result = appended.await;
            submission.finish(result.as_ref().ok().map(|a| a.position));
            let appended = result?;
            Ok((appended.position.entry_tid, appended.applied))
        }))
    }

    async fn applied(&self, tid: u64) -> Result<()> {
        let splay = self.journal.meta().splay_width.max(1);
        let save = {
            let mut c = self.commits();
            c.applied(tid);
            c.since_save += 1;
            let new_set = c
                .committed
                .is_some_and(|p| Some(p.object_number / splay) > c.saved_set);
            let due = new_set
                || c.since_save >= SAVE_EVERY
                || c.last_save.is_none_or(|t| t.elapsed() >= SAVE_AFTER);
            c.committed.filter(|_| due)
        };
        if let Some(pos) = save
            && self.save_in_background(pos)
        {
            let mut c = self.commits();
            c.since_save = 0;
            c.last_save = Some(Instant::now());
            c.saved_set = Some(pos.object_number / splay);
        }
        Ok(())
    }

    async fn unapplied(&self) -> Result<Vec<(u64, Event)>> {
        let header = self.journal.header().await?;
        let from = header
            .clients
            .get(IMAGE_CLIENT)
            .and_then(|c| c.commit_position);
        let entries = self.journal.entries_after(from).await?;
        let mut out = Vec::with_capacity(entries.len());
        let mut c = self.commits();
        c.committed = from;
        for (pos, entry) in entries {
            let (event, _) = crate::event::decode(&entry.data)?;
            c.outstanding.insert(pos.entry_tid, (pos, 0));
            out.push((pos.entry_tid, event));
        }
        Ok(out)
    }

    async fn close(&self) -> Result<()> {
        let committed = self.commits().committed;
        // Let a background save finish first, so saves never go back.
        while self.saving.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(pos) = committed {
            save(&self.journal, pos).await?;
        }
        Ok(())
    }
}

/// A numbered append waiting for its answer. Dropped unanswered (its caller gave up), it
/// withdraws its number so that the commit position does not wait for it forever. The entry
/// is still written, and the position then passes it unapplied. Data changes never come to
/// this: the image layer hands the append of a change whose caller stopped waiting to a task
/// that waits for it and applies the change.
struct Submission {
    commits: Arc<Mutex<Commits>>,
    seq: Option<u64>,
}

impl Submission {
    /// Records the append's outcome: its position, or none if it failed.
    fn finish(mut self, position: Option<Position>) {
        if let Some(seq) = self.seq.take() {
            lock(&self.commits).appended(seq, position);
        }
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            lock(&self.commits).appended(seq, None);
        }
    }
}

/// Locks `commits`; a panic of an earlier holder does not stop later ones.
fn lock(commits: &Mutex<Commits>) -> MutexGuard<'_, Commits> {
    commits.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the journals of images for the image layer.
#[derive(Debug, Default)]
pub struct RbdxJournals {
    /// How new journals are laid out.
    pub options: JournalOptions,
}

#[async_trait]
impl JournalOpener for RbdxJournals {
    async fn open(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<Arc<dyn ChangeLog>> {
        let journal = Journal::open_for_append(store, io, id).await?;
        Ok(Arc::new(ImageJournal::new(journal)))
    }

    async fn create(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
        layout: &JournalLayout,
    ) -> Result<()> {
        let options = JournalOptions {
            order: layout.order.unwrap_or(self.options.order),
            splay_width: layout.splay_width.unwrap_or(self.options.splay_width),
            pool: layout.pool.map(rbdx_objstore::PoolId).or(self.options.pool),
            ..self.options
        };
        Journal::create(&store, &io, id, options).await
    }

    async fn remove(&self, store: Arc<dyn ObjectStore>, io: IoCtx, id: &str) -> Result<()> {
        Journal::remove(&store, &io, id).await
    }

    async fn layout(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<JournalLayout> {
        let meta = Journal::open(store, io, id).await?.meta();
        Ok(JournalLayout {
            order: Some(meta.order),
            splay_width: Some(meta.splay_width),
            pool: Some(meta.pool_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbdx_objstore::MemoryStore;

    #[tokio::test]
    async fn an_append_dropped_before_its_answer_does_not_hold_the_commit_position() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
        Journal::create(&store, &io, "j", JournalOptions::default())
            .await
            .unwrap();
        let journal = Journal::open_for_append(store.clone(), io.clone(), "j")
            .await
            .unwrap();
        let image = ImageJournal::new(journal);
        // Polled once (queued, not answered), then dropped.
        let dropped = futures::FutureExt::now_or_never(image.append(Event::Flush));
        assert!(dropped.is_none(), "the first append was answered at once");
        let tid = image.append(Event::Flush).await.unwrap();
        image.applied(tid).await.unwrap();
        image.close().await.unwrap();
        let header = Journal::open(store, io, "j").await.unwrap().header().await;
        let saved = header.unwrap().clients[IMAGE_CLIENT].commit_position;
        assert_eq!(saved.map(|p| p.entry_tid), Some(tid));
    }
}
