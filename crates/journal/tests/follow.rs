//! Following a journal: a writer appends for ten seconds while a follower applies what it
//! reads into a second image; a 1 GiB backlog is read within the follower's budget; and a
//! follower from the start waits for entry 0 when a later entry lands first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_image::{CreateOptions, Features, Image, Images, OpenOptions};
use rbdx_journal::{Applier, FollowOptions, Follower, Journal, JournalOptions, event};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, SnapContext, WriteOp};

const SIZE: u64 = 16 << 20;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

async fn read_all(images: &Images, name: &str, snap: Option<String>) -> Vec<u8> {
    let image = images
        .open(
            name,
            OpenOptions::default().with_read_only(true).with_snap(snap),
        )
        .await
        .unwrap();
    let data = image.read(0, image.size()).await.unwrap().to_vec();
    image.close().await.unwrap();
    data
}

/// Writes, discards, snapshots and metadata changes into `image` for `secs` seconds.
async fn write_for(image: &Image, secs: u64) -> u32 {
    let mut rng = Lcg(7);
    let start = Instant::now();
    let mut snaps = 0;
    let mut last_snap = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let len = (1 + rng.next(16)) * 4096;
        let offset = rng.next((SIZE - len) / 4096) * 4096;
        match rng.next(10) {
            0 => image.discard(offset, len).await.unwrap(),
            1 => image
                .metadata_set("round", Bytes::from(rng.next(1000).to_string()))
                .await
                .unwrap(),
            _ => {
                let byte = rng.next(255) as u8 + 1;
                image
                    .write(offset, Bytes::from(vec![byte; len as usize]))
                    .await
                    .unwrap();
            }
        }
        if last_snap.elapsed() > Duration::from_secs(2) {
            image.snap_create(&format!("s{snaps}")).await.unwrap();
            snaps += 1;
            last_snap = Instant::now();
        }
    }
    snaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_replays_a_journal_that_is_being_written() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(rbdx_journal::cluster(store.clone()), IoCtx::new(pool));
    let journaled = CreateOptions::new(SIZE)
        .with_order(20)
        .with_features(Features::DEFAULT.with(Features::JOURNALING));
    images.create("primary", &journaled).await.unwrap();
    images
        .create("replica", &CreateOptions::new(SIZE).with_order(20))
        .await
        .unwrap();
    let primary = images
        .open("primary", OpenOptions::default())
        .await
        .unwrap();
    primary.acquire_exclusive_lock().await.unwrap();
    let id = primary.id().to_owned();
    let io = images.io_ctx().clone();
    // The follower registers as a client, so that trimming keeps what it has not applied.
    let journal = Journal::open(store.clone(), io.clone(), &id).await.unwrap();
    journal
        .register_client("mirror", "test follower")
        .await
        .unwrap();
    let start = journal.last_position().await.unwrap();

    let options = FollowOptions {
        budget: 4 << 20,
        poll: Duration::from_millis(50),
        gap_grace: Duration::from_secs(1),
    };
    let mut follower = Follower::open(store.clone(), io.clone(), &id, start, options)
        .await
        .unwrap();
    let stop = follower.stopper();
    let replica = images
        .open("replica", OpenOptions::default())
        .await
        .unwrap();
    let follow = {
        let journal = Journal::open(store.clone(), io.clone(), &id).await.unwrap();
        tokio::spawn(async move {
            let mut applier = Applier::new();
            let mut applied = 0u64;
            while let Some(batch) = follower.next_batch().await.unwrap() {
                let events: Vec<_> = batch
                    .iter()
                    .map(|(pos, e)| (pos.entry_tid, event::decode(&e.data).unwrap().0))
                    .collect();
                applied += applier.apply(&replica, &events).await.unwrap();
                let last = batch.last().unwrap().0;
                journal.commit("mirror", last).await.unwrap();
            }
            let peak = follower.peak_bytes();
            follower.close().await;
            replica.close().await.unwrap();
            (applied, peak)
        })
    };

    let snaps = write_for(&primary, 10).await;
    primary.flush().await.unwrap();
    let end = journal.last_position().await.unwrap().unwrap();
    // Wait until the follower has applied the last entry, then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = journal.header().await.unwrap();
        let at = h.clients["mirror"].commit_position.map(|p| p.entry_tid);
        if at >= Some(end.entry_tid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower fell behind: {at:?} of {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.stop();
    let (applied, peak) = follow.await.unwrap();
    primary.close().await.unwrap();
    assert!(applied > 100, "only {applied} events applied");
    assert!(peak <= (4 << 20) + (1 << 20), "held {peak} bytes");

    assert!(snaps >= 3, "{snaps} snapshots");
    assert_eq!(
        read_all(&images, "replica", None).await,
        read_all(&images, "primary", None).await
    );
    for n in 0..snaps {
        let name = format!("s{n}");
        assert_eq!(
            read_all(&images, "replica", Some(name.clone())).await,
            read_all(&images, "primary", Some(name.clone())).await,
            "snapshot {name}"
        );
    }
    let replica = images
        .open("replica", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert!(replica.header().metadata.contains_key("round"));
    replica.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_backlog_is_read_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(rbdx_objstore_dir::DirStore::open(dir.path()).unwrap());
    let pool = store.pool_create("rbd").await.unwrap();
    let io = IoCtx::new(pool);
    let options = JournalOptions {
        order: 24,
        splay_width: 4,
        ..JournalOptions::default()
    };
    Journal::create(&store, &io, "big", options).await.unwrap();
    let journal = Journal::open_for_append(store.clone(), io.clone(), "big")
        .await
        .unwrap();
    let entry = Bytes::from(vec![0x42u8; 1 << 20]);
    let appends: Vec<_> = (0..1024).map(|_| journal.append(entry.clone())).collect();
    for a in appends {
        a.await.unwrap();
    }
    drop(journal);

    let budget = 16 << 20;
    let options = FollowOptions {
        budget,
        poll: Duration::from_millis(20),
        gap_grace: Duration::from_millis(200),
    };
    let mut follower = Follower::open(store.clone(), io.clone(), "big", None, options)
        .await
        .unwrap();
    let mut next = 0u64;
    let mut bytes = 0u64;
    while next < 1024 {
        let batch = tokio::time::timeout(Duration::from_secs(30), follower.next_batch())
            .await
            .expect("the backlog is read without waiting")
            .unwrap()
            .unwrap();
        for (pos, e) in batch {
            assert_eq!(pos.entry_tid, next, "in order, none lost");
            next += 1;
            bytes += e.data.len() as u64;
        }
    }
    assert_eq!(bytes, 1 << 30);
    assert!(
        follower.peak_bytes() <= budget + (2 << 20),
        "held {} bytes with a budget of {budget}",
        follower.peak_bytes()
    );
    follower.close().await;
}

/// Writes the frame of entry `tid` (tag 0) as the only entry of journal data object `objno`.
async fn put_entry(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    journal: &Journal,
    objno: u64,
    tid: u64,
) {
    let frame = rbdx_journal::entry::Entry {
        tag_tid: 0,
        entry_tid: tid,
        data: Bytes::from(vec![tid as u8; 100]),
    }
    .encode();
    let oid = format!("{}{objno}", journal.prefix());
    store
        .operate(
            io,
            &oid,
            &WriteOp::new().write(0, frame),
            &SnapContext::empty(),
        )
        .await
        .unwrap();
}

/// An empty journal "j" of splay width 4 in a new in-memory store.
async fn empty_journal() -> (Arc<dyn ObjectStore>, IoCtx, Journal) {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let options = JournalOptions {
        splay_width: 4,
        ..JournalOptions::default()
    };
    Journal::create(&store, &io, "j", options).await.unwrap();
    let journal = Journal::open(store.clone(), io.clone(), "j").await.unwrap();
    (store, io, journal)
}

/// A follower of journal "j" with no position, polling every 20 ms.
async fn from_the_start(store: &Arc<dyn ObjectStore>, io: &IoCtx, gap_grace: Duration) -> Follower {
    let options = FollowOptions {
        poll: Duration::from_millis(20),
        gap_grace,
        ..FollowOptions::default()
    };
    Follower::open(store.clone(), io.clone(), "j", None, options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_from_the_start_waits_for_the_first_entry_when_a_later_one_lands_first() {
    let (store, io, journal) = empty_journal().await;
    // Entry 1 (object 1) is visible before entry 0 (object 0): appends to the objects of a
    // set run side by side.
    put_entry(&store, &io, &journal, 1, 1).await;
    let mut follower = from_the_start(&store, &io, Duration::from_secs(30)).await;
    let first = tokio::spawn(async move {
        let batch = follower.next_batch().await.unwrap().unwrap();
        follower.close().await;
        batch
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished(),
        "entry 1 was returned while entry 0 was missing"
    );
    put_entry(&store, &io, &journal, 0, 0).await;
    let batch = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("entry 0 is read once it lands")
        .unwrap();
    let tids: Vec<u64> = batch.iter().map(|(p, _)| p.entry_tid).collect();
    assert_eq!(tids, [0, 1]);
    assert_eq!(batch[0].1.data, Bytes::from(vec![0u8; 100]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_from_the_start_goes_on_without_a_first_entry_that_never_lands() {
    let (store, io, journal) = empty_journal().await;
    put_entry(&store, &io, &journal, 1, 1).await;
    put_entry(&store, &io, &journal, 2, 2).await;
    let mut follower = from_the_start(&store, &io, Duration::from_millis(300)).await;
    let start = Instant::now();
    let batch = tokio::time::timeout(Duration::from_secs(10), follower.next_batch())
        .await
        .expect("the missing entry is given up after the grace period")
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    let tids: Vec<u64> = batch.iter().map(|(p, _)| p.entry_tid).collect();
    assert_eq!(tids, [1, 2]);
    follower.close().await;
}
