//! Journaling images end to end on the in-memory store: what is journaled and in what order,
//! replay of entries a crash left unapplied, torn tails, commit positions, trimming, clients
//! that fall behind, and writes whose callers stop waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use rbdx_image::journaling::Event;
use rbdx_image::{CreateOptions, Features, Image, Images, OpenOptions};
use rbdx_journal::header::ClientState;
use rbdx_journal::{IMAGE_CLIENT, Journal, JournalOptions, event};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, SnapContext, WriteOp};

const SIZE: u64 = 4 << 20;

async fn setup() -> (Arc<dyn ObjectStore>, Images) {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(rbdx_journal::cluster(store.clone()), IoCtx::new(pool));
    (store, images)
}

async fn journaled(images: &Images, name: &str) -> Image {
    images
        .create(
            name,
            &CreateOptions::new(SIZE)
                .with_order(16)
                .with_features(Features::DEFAULT.with(Features::JOURNALING)),
        )
        .await
        .unwrap();
    images.open(name, OpenOptions::default()).await.unwrap()
}

async fn events(store: &Arc<dyn ObjectStore>, io: &IoCtx, id: &str) -> Vec<Event> {
    let journal = Journal::open(store.clone(), io.clone(), id).await.unwrap();
    journal
        .replay_from(None)
        .map_ok(|(_, e)| event::decode(&e.data).unwrap().0)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn changes_are_journaled_in_order_with_operation_outcomes() {
    let (store, images) = setup().await;
    let image = journaled(&images, "j").await;
    let id = image.id().to_owned();
    image
        .write(100, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    image.snap_create("s1").await.unwrap();
    image.discard(0, 4096).await.unwrap();
    image
        .metadata_set("k", Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert!(image.snap_create("s1").await.is_err());
    image.close().await.unwrap();
    let got = events(&store, images.io_ctx(), &id).await;
    assert_eq!(
        got[0],
        Event::Write {
            offset: 100,
            data: Bytes::from_static(b"hello")
        }
    );
    assert_eq!(got[1], Event::SnapCreate { name: "s1".into() });
    assert!(matches!(got[2], Event::OpFinish { result: 0, .. }));
    assert_eq!(
        got[3],
        Event::Discard {
            offset: 0,
            length: 4096
        }
    );
    assert!(matches!(got[4], Event::MetadataSet { .. }));
    assert!(matches!(got[6], Event::SnapCreate { .. }));
    assert!(matches!(got[7], Event::OpFinish { result: -17, .. }));
    // Closing saved the commit position at the last entry.
    let journal = Journal::open(store.clone(), images.io_ctx().clone(), &id)
        .await
        .unwrap();
    let header = journal.header().await.unwrap();
    let pos = header.clients[IMAGE_CLIENT].commit_position.unwrap();
    assert_eq!(pos.entry_tid, got.len() as u64 - 1);
}

#[tokio::test]
async fn entries_a_crash_left_unapplied_are_replayed_on_open() {
    let (store, images) = setup().await;
    let image = journaled(&images, "r").await;
    let id = image.id().to_owned();
    image.write(0, Bytes::from_static(b"before")).await.unwrap();
    image.close().await.unwrap();
    // A writer that journaled two writes and a snapshot, then died before applying them.
    let journal = Journal::open_for_append(store.clone(), images.io_ctx().clone(), &id)
        .await
        .unwrap();
    for e in [
        Event::Write {
            offset: 0,
            data: Bytes::from_static(b"AFTER!"),
        },
        Event::Write {
            offset: 70_000,
            data: Bytes::from_static(b"xyz"),
        },
        Event::SnapCreate {
            name: "never".into(),
        },
    ] {
        journal.append(event::encode(&e)).await.unwrap();
    }
    drop(journal);
    let image = images.open("r", OpenOptions::default()).await.unwrap();
    // The first write takes the lock, which replays the journal first.
    image.write(1000, Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(image.read(0, 6).await.unwrap(), "AFTER!");
    assert_eq!(image.read(70_000, 3).await.unwrap(), "xyz");
    assert_eq!(image.read(1000, 3).await.unwrap(), "new");
    image.close().await.unwrap();
    // The snapshot that never happened is recorded as canceled.
    let got = events(&store, images.io_ctx(), &id).await;
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::OpFinish { result: -125, .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_torn_tail_is_ignored_and_cut_off() {
    let (store, images) = setup().await;
    let image = journaled(&images, "t").await;
    let id = image.id().to_owned();
    image.write(0, Bytes::from_static(b"kept")).await.unwrap();
    image.close().await.unwrap();
    let journal = Journal::open(store.clone(), images.io_ctx().clone(), &id)
        .await
        .unwrap();
    let oid = format!("{}0", journal.prefix());
    let before = events(&store, images.io_ctx(), &id).await;
    store
        .operate(
            images.io_ctx(),
            &oid,
            &WriteOp::new().write(10_000, Bytes::from_static(b"RBDXJRN1garbage")),
            &SnapContext::empty(),
        )
        .await
        .unwrap();
    assert_eq!(events(&store, images.io_ctx(), &id).await, before);
    let image = images.open("t", OpenOptions::default()).await.unwrap();
    image.write(8, Bytes::from_static(b"more")).await.unwrap();
    image.close().await.unwrap();
    let after = events(&store, images.io_ctx(), &id).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
}

#[tokio::test]
async fn trimming_frees_sets_once_clients_commit_and_laggards_are_disconnected() {
    let (store, images) = setup().await;
    let io = images.io_ctx().clone();
    let options = JournalOptions {
        order: 12,
        splay_width: 2,
        max_lag_sets: 3,
        pool: None,
    };
    Journal::create(&store, &io, "img1", options).await.unwrap();
    let journal = Journal::open_for_append(store.clone(), io.clone(), "img1")
        .await
        .unwrap();
    journal.register_client("mirror", "peer").await.unwrap();
    let mut last = None;
    for i in 0..64u64 {
        let data = Bytes::from(vec![i as u8; 1000]);
        last = Some(journal.append(data).await.unwrap());
    }
    let before = journal.object_count().await.unwrap();
    assert!(before > 8, "{before} objects");
    // The image client is done; the mirror client has read nothing.
    journal.commit(IMAGE_CLIENT, last.unwrap()).await.unwrap();
    journal.trim().await.unwrap();
    let header = journal.header().await.unwrap();
    assert_eq!(header.clients["mirror"].state, ClientState::Disconnected);
    let after = journal.object_count().await.unwrap();
    assert!(after < before, "{after} of {before} objects left");
    assert!(header.sets.minimum_set > 0);
    // What is left still reads in order.
    let left: Vec<u64> = journal
        .entries_after(None)
        .await
        .unwrap()
        .iter()
        .map(|(p, _)| p.entry_tid)
        .collect();
    assert!(left.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(left.last(), Some(&63));
}

#[tokio::test]
async fn enabling_and_disabling_journaling_creates_and_removes_the_journal() {
    let (store, images) = setup().await;
    images
        .create("f", &CreateOptions::new(SIZE).with_order(16))
        .await
        .unwrap();
    let image = images.open("f", OpenOptions::default()).await.unwrap();
    let id = image.id().to_owned();
    assert!(
        Journal::open(store.clone(), images.io_ctx().clone(), &id)
            .await
            .is_err()
    );
    image
        .update_features(Features::JOURNALING, true, &|_, _| {})
        .await
        .unwrap();
    image.write(0, Bytes::from_static(b"j")).await.unwrap();
    assert_eq!(events(&store, images.io_ctx(), &id).await.len(), 1);
    image
        .update_features(Features::JOURNALING, false, &|_, _| {})
        .await
        .unwrap();
    assert!(
        Journal::open(store.clone(), images.io_ctx().clone(), &id)
            .await
            .is_err()
    );
    image.write(1, Bytes::from_static(b"k")).await.unwrap();
    image.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_writes_in_flight_together_land_in_journal_order() {
    let (store, images) = setup().await;
    let image = journaled(&images, "o").await;
    let id = image.id().to_owned();
    // Many writers over the same bytes at once (two objects of 64 KiB), each with its own byte.
    let writes = (1..=40u8).map(|byte| {
        let image = image.clone();
        async move {
            let data = Bytes::from(vec![byte; 100_000]);
            image.write(10_000, data).await.unwrap();
            // Read-your-writes: this process sees a journaled write at once.
            let back = image.read(10_000, 100_000).await.unwrap();
            assert!(back.iter().all(|&b| b != 0));
        }
    });
    futures::future::join_all(writes).await;
    let head = image.read(10_000, 100_000).await.unwrap();
    image.close().await.unwrap();
    // The image holds what the last journaled write says, as a replay elsewhere would.
    let last = events(&store, images.io_ctx(), &id)
        .await
        .into_iter()
        .rev()
        .find_map(|e| match e {
            Event::Write { data, .. } => Some(data),
            _ => None,
        })
        .unwrap();
    assert_eq!(head, last);
}

#[tokio::test]
async fn a_write_whose_caller_stops_waiting_is_still_applied() {
    const DROPPED: u64 = (1 << 20) + 8192;
    let (store, images) = setup().await;
    let image = journaled(&images, "d").await;
    let id = image.id().to_owned();
    image.write(0, Bytes::from_static(b"first")).await.unwrap();
    // Polled until it waits for the journal, then dropped. It goes to an object of its own,
    // so it does not wait for the first write's application.
    let dropped =
        futures::FutureExt::now_or_never(image.write(DROPPED, Bytes::from_static(b"gone?")));
    assert!(dropped.is_none(), "the write finished at once");
    image
        .write(16384, Bytes::from_static(b"later"))
        .await
        .unwrap();
    image.close().await.unwrap();
    // Whatever the commit position says, the image holds what its journal holds.
    let image = images
        .open("d", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert_eq!(image.read(DROPPED, 5).await.unwrap(), "gone?");
    assert_eq!(image.read(16384, 5).await.unwrap(), "later");
    image.close().await.unwrap();
    let written = events(&store, images.io_ctx(), &id).await;
    assert!(
        written.iter().any(|e| matches!(
            e,
            Event::Write {
                offset: DROPPED,
                ..
            }
        )),
        "{written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_are_journaled_whole_and_full_sets_are_trimmed_while_the_image_is_open() {
    let (store, images) = setup().await;
    let image = journaled(&images, "big").await;
    let id = image.id().to_owned();
    // Default journal objects: 4 of 16 MiB a set, so 80 writes of 1 MiB fill more than one.
    for i in 0..80u64 {
        let data = Bytes::from(vec![i as u8; 1 << 20]);
        image.write((i % 4) << 20, data).await.unwrap();
    }
    let journal = Journal::open(store.clone(), images.io_ctx().clone(), &id)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while journal.header().await.unwrap().sets.minimum_set == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first set is still there with the position past it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let written = events(&store, images.io_ctx(), &id).await;
    let Some(Event::Write { offset, data }) = written.last() else {
        panic!("the last entry is not a write: {written:?}");
    };
    assert_eq!((*offset, data.len()), (3 << 20, 1 << 20));
    assert!(data.iter().all(|&b| b == 79));
    image.close().await.unwrap();
}
