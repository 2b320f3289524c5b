//! The journal as the image layer uses it: events in, entry ids out, and the image's commit
//! position kept in step with what has been applied.
//!
//! The commit position is the last entry such that it and every entry before it are applied
//! (writes finish out of order). It is saved in the journal header in the background every
//! [`SAVE_EVERY`] entries or [`SAVE_AFTER`], and on close; each save also trims. After a crash
//! the entries past the saved position are replayed, which may apply some twice: harmless, as
//! every event is idempotent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rbdx_image::Result;
use rbdx_image::journaling::{ChangeLog, Event, JournalLayout, JournalOpener};
use rbdx_objstore::{IoCtx, ObjectStore};

use crate::header::Position;
use crate::journal::{IMAGE_CLIENT, Journal, JournalOptions};

/// Entries applied between saves of the commit position.
const SAVE_EVERY: u64 = 256;
/// Longest time between saves of the commit position while entries are applied.
const SAVE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Commits {
    /// Appended, not yet applied.
    outstanding: BTreeMap<u64, Position>,
    /// Applied, waiting for an earlier one.
    done: BTreeMap<u64, Position>,
    /// Every entry up to this one is applied.
    committed: Option<Position>,
    /// Entries applied since the last save.
    since_save: u64,
    last_save: Option<Instant>,
}

impl Commits {
    fn advance(&mut self) {
        while let Some((&tid, &pos)) = self.done.first_key_value() {
            if self.outstanding.keys().next().is_some_and(|&o| o < tid) {
                break;
            }
            self.committed = Some(pos);
            self.done.pop_first();
        }
    }
}

/// An image's open journal.
#[derive(Debug)]
pub struct ImageJournal {
    journal: Arc<Journal>,
    commits: Mutex<Commits>,
    saving: Arc<AtomicBool>,
}

impl ImageJournal {
    /// Wraps a journal opened for appending.
    pub fn new(journal: Journal) -> Self {
        ImageJournal {
            journal: Arc::new(journal),
            commits: Mutex::new(Commits::default()),
            saving: Arc::new(AtomicBool::new(false)),
        }
    }

    fn commits(&self) -> std::sync::MutexGuard<'_, Commits> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves the commit position (and trims) in the background unless a save is running.
    fn save_in_background(&self, position: Position) {
        if self.saving.swap(true, Ordering::SeqCst) {
            return;
        }
        let journal = self.journal.clone();
        let saving = self.saving.clone();
        tokio::spawn(async move {
            if let Err(e) = save(&journal, position).await {
                tracing::warn!("journal of image {}: {e}", journal.image_id());
            }
            saving.store(false, Ordering::SeqCst);
        });
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
        let pos = self.journal.append(crate::event::encode(&event)).await?;
        self.commits().outstanding.insert(pos.entry_tid, pos);
        Ok(pos.entry_tid)
    }

    async fn applied(&self, tid: u64) -> Result<()> {
        let save = {
            let mut c = self.commits();
            if let Some(pos) = c.outstanding.remove(&tid) {
                c.done.insert(tid, pos);
            }
            c.advance();
            c.since_save += 1;
            let due =
                c.since_save >= SAVE_EVERY || c.last_save.is_none_or(|t| t.elapsed() >= SAVE_AFTER);
            match (due, c.committed) {
                (true, Some(pos)) => {
                    c.since_save = 0;
                    c.last_save = Some(Instant::now());
                    Some(pos)
                }
                _ => None,
            }
        };
        if let Some(pos) = save {
            self.save_in_background(pos);
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
            c.outstanding.insert(pos.entry_tid, pos);
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
}
