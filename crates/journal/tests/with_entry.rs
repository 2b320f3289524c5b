//! Small journaled writes on the `dir` store, which commits a write into a settled object in
//! one transaction with its journal entry: the image and the journal both hold every write,
//! in order, also with snapshots, overlapping writes in flight and a reopened store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use rbdx_image::journaling::Event;
use rbdx_image::{CreateOptions, Features, Images, OpenOptions};
use rbdx_journal::{Journal, event};
use rbdx_objstore::{IoCtx, ObjectStore};
use rbdx_objstore_dir::DirStore;

const SIZE: u64 = 1 << 20;
const ORDER: u8 = 16;

fn open_images(store: Arc<dyn ObjectStore>, io: IoCtx) -> Images {
    Images::new(rbdx_journal::cluster(store), io)
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
    images
        .create(
            "w",
            &CreateOptions::new(SIZE)
                .with_order(ORDER)
                .with_features(Features::DEFAULT.with(Features::JOURNALING)),
        )
        .await
        .unwrap();
    let image = Arc::new(images.open("w", OpenOptions::default()).await.unwrap());
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
