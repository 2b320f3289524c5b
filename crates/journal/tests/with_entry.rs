//! Small journaled writes given to the journal with their entries: on the `dir` store, which
//! commits such a write in one transaction with its entry, the image and the journal both
//! hold every write, in order, also with snapshots, overlapping writes in flight and a
//! reopened store; and a write the journal did not apply with its entry is applied after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use futures::future::BoxFuture;
use rbdx_image::journaling::{ChangeLog, Event, JournalLayout, JournalOpener};
use rbdx_image::{Cluster, CreateOptions, Features, Image, Images, OpenOptions, Result};
use rbdx_journal::{Journal, RbdxJournals, event};
use rbdx_objstore::{IoCtx, ObjectStore, ObjectWrite};
use rbdx_objstore_dir::DirStore;

const SIZE: u64 = 1 << 20;
const ORDER: u8 = 16;

fn open_images(store: Arc<dyn ObjectStore>, io: IoCtx) -> Images {
    Images::new(rbdx_journal::cluster(store), io)
}

/// Creates and opens journaling image `name`.
async fn journaled(images: &Images, name: &str) -> Image {
    images
        .create(
            name,
            &CreateOptions::new(SIZE)
                .with_order(ORDER)
                .with_features(Features::DEFAULT.with(Features::JOURNALING)),
        )
        .await
        .unwrap();
    images.open(name, OpenOptions::default()).await.unwrap()
}

async fn journaled_writes(store: &Arc<dyn ObjectStore>, io: &IoCtx, id: &str) -> Vec<(u64, Bytes)> {
    let journal = Journal::open(store.clone(), io.clone(), id).await.unwrap();
    journal
        .replay_from(None)
        .map_ok(|(_, e)| event::decode(&e.data).unwrap().0)
        .try_collect::<Vec<Event>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Event::Write { offset, data } => Some((offset, data)),
            _ => None,
        })
        .collect()
}

/// The `n`th write of the test: 512 bytes to 16 KiB, inside one 64 KiB object or across two.
fn nth(n: u64) -> (u64, Bytes) {
    let len = 512 * (1 + (n * 7) % 32);
    let offset = (n * 40_961) % (SIZE - len);
    (offset, Bytes::from(vec![(n % 251) as u8 + 1; len as usize]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_committed_with_their_entries_reach_the_image_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    assert!(store.commits_groups());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let images = open_images(store.clone(), io.clone());
    let image = Arc::new(journaled(&images, "w").await);
    let id = image.id().to_owned();
    let mut model = vec![0u8; SIZE as usize];
    // One at a time, a snapshot now and then (the writes after it find their objects clean).
    for n in 0..120u64 {
        let (offset, data) = nth(n);
        image.write(offset, data.clone()).await.unwrap();
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        if n % 40 == 39 {
            image.snap_create(&format!("s{n}")).await.unwrap();
        }
    }
    // Sixteen in flight at once, some overlapping: they land in the order they were made.
    let batch: Vec<_> = (120..136u64)
        .map(|n| {
            let image = image.clone();
            let (offset, data) = nth(n % 8 + 120);
            let data = Bytes::from(vec![(n % 251) as u8 + 1; data.len()]);
            (offset, data.clone(), async move {
                image.write(offset, data).await
            })
        })
        .collect();
    let mut pending = Vec::new();
    for (offset, data, write) in batch {
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        pending.push(write);
    }
    for result in futures::future::join_all(pending).await {
        result.unwrap();
    }
    assert_eq!(
        image.read(0, SIZE).await.unwrap(),
        model,
        "read back while open"
    );
    Arc::try_unwrap(image).ok().unwrap().close().await.unwrap();
    drop(images);
    drop(store);

    let store: Arc<dyn ObjectStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    let images = open_images(store.clone(), io.clone());
    let image = images
        .open("w", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert_eq!(
        image.read(0, SIZE).await.unwrap(),
        model,
        "read back after reopening"
    );
    image.close().await.unwrap();
    let written = journaled_writes(&store, &io, &id).await;
    assert_eq!(written.len(), 136, "every write is in the journal");
    let mut replayed = vec![0u8; SIZE as usize];
    for (offset, data) in written {
        replayed[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    }
    assert_eq!(
        replayed, model,
        "the journal replays to the image's content"
    );
}

/// Rbdx journals whose appends never take the writes given with an entry: each entry is
/// written alone and its writes are reported as not applied, as when a store refuses them.
#[derive(Debug, Default)]
struct Apart {
    journals: RbdxJournals,
    /// Entries that came with writes.
    refused: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct ApartLog {
    log: Arc<dyn ChangeLog>,
    refused: Arc<AtomicUsize>,
}

#[async_trait]
impl ChangeLog for ApartLog {
    async fn append(&self, event: Event) -> Result<u64> {
        self.log.append(event).await
    }

    fn submit(
        &self,
        event: Event,
        with: Vec<ObjectWrite>,
    ) -> Result<BoxFuture<'static, Result<(u64, bool)>>> {
        if !with.is_empty() {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        let appended = self.log.submit(event, Vec::new())?;
        Ok(Box::pin(async move { Ok((appended.await?.0, false)) }))
    }

    async fn applied(&self, tid: u64) -> Result<()> {
        self.log.applied(tid).await
    }

    async fn unapplied(&self) -> Result<Vec<(u64, Event)>> {
        self.log.unapplied().await
    }

    async fn close(&self) -> Result<()> {
        self.log.close().await
    }
}

#[async_trait]
impl JournalOpener for Apart {
    async fn open(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<Arc<dyn ChangeLog>> {
        let log = self.journals.open(store, io, id).await?;
        Ok(Arc::new(ApartLog {
            log,
            refused: self.refused.clone(),
        }))
    }

    async fn create(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
        layout: &JournalLayout,
    ) -> Result<()> {
        self.journals.create(store, io, id, layout).await
    }

    async fn remove(&self, store: Arc<dyn ObjectStore>, io: IoCtx, id: &str) -> Result<()> {
        self.journals.remove(store, io, id).await
    }

    async fn layout(
        &self,
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        id: &str,
    ) -> Result<JournalLayout> {
        self.journals.layout(store, io, id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_not_committed_with_its_entry_is_applied_by_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let apart = Arc::new(Apart::default());
    let refused = apart.refused.clone();
    let images = Images::new(Cluster::new(store.clone()).with_journals(apart), io.clone());
    let image = journaled(&images, "r").await;
    let id = image.id().to_owned();
    let mut model = vec![0u8; SIZE as usize];
    for n in 0..40u64 {
        let (offset, data) = nth(n);
        image.write(offset, data.clone()).await.unwrap();
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        assert_eq!(
            image.read(offset, data.len() as u64).await.unwrap(),
            data,
            "write {n} read back"
        );
    }
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "no write was given with its entry"
    );
    image.close().await.unwrap();
    let image = images
        .open("r", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert_eq!(image.read(0, SIZE).await.unwrap(), model);
    image.close().await.unwrap();
    assert_eq!(journaled_writes(&store, &io, &id).await.len(), 40);
}
