//! Contention, crashes and cross-process watch and lock behaviour.
//!
//! The `processes_*` cases use child processes killed with SIGKILL when the harness has a
//! spawner, and tasks with their own sessions, cancelled, when it has not.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::testkit::batches::{BatchGenerator, CRASH_OBJECTS, crash_object};
use crate::testkit::child::{Peer, Role, increment};
use crate::testkit::model::ObjectImage;
use crate::testkit::rng::Rng;
use crate::testkit::{Fixture, Harness, eventually, fails, ok};
use crate::{ErrorKind, IoCtx, LockKind, LockOptions, ObjectStore, ObjectStoreExt, SnapId};

async fn counter(store: &dyn ObjectStore, io: &IoCtx, oid: &str) -> u64 {
    let map = ok(store.omap_get_by_keys(io, oid, &["n"]).await);
    let text = map
        .get("n")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    text.parse()
        .unwrap_or_else(|_| panic!("counter holds '{text}'"))
}

/// Sessions racing read-modify-write cycles with version assertions lose no update.
pub async fn concurrent_sessions_increment_with_version_retries(h: &dyn Harness) {
    let fx = Fixture::new(h, "race").await;
    let io = fx.io.clone();
    ok(fx.store.write_full(&io, "counter", Bytes::new()).await);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = h.connect().await;
        let io = io.clone();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0;
            for _ in 0..150 {
                retries += ok(increment(&*store, &io, "counter").await);
            }
            retries
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("incrementer: {e}"));
    }
    assert_eq!(counter(&*fx.store, &io, "counter").await, 450);
    fx.cleanup().await;
}

/// Two processes each increment one omap counter with version assertions; none is lost.
pub async fn processes_increment_one_counter(h: &dyn Harness) {
    let fx = Fixture::new(h, "counter").await;
    let io = fx.io.clone();
    let count = h.capabilities().counter_increments;
    ok(fx.store.write_full(&io, "counter", Bytes::new()).await);
    let role = Role::Counter {
        pool: fx.pool,
        oid: "counter".to_owned(),
        count,
    };
    let first = Peer::start(h, role.clone()).await;
    let second = Peer::start(h, role).await;
    first.wait_success().await;
    second.wait_success().await;
    assert_eq!(counter(&*fx.store, &io, "counter").await, 2 * count);
    fx.cleanup().await;
}

async fn load_all(store: &dyn ObjectStore, io: &IoCtx, snap: Option<SnapId>) -> Vec<ObjectImage> {
    let mut out = Vec::new();
    for index in 0..CRASH_OBJECTS {
        out.push(ok(
            ObjectImage::load(store, io, &crash_object(index), snap).await
        ));
    }
    out
}

/// A writer killed at random moments (SIGKILL for processes) during random multi-step
/// batches never leaves a mix: after reopening, every object is exactly as after the last
/// acknowledged batch or, for the object the interrupted batch targeted, as after that batch;
/// snapshots taken between rounds keep their content.
pub async fn processes_killed_mid_batch_leave_whole_batches(h: &dyn Harness) {
    let fx = Fixture::new(h, "crash").await;
    let io = fx.io.clone();
    let rounds = h.capabilities().crash_rounds;
    let base_seed = 0x5eed_0000;
    let mut rng = Rng::new(base_seed);
    let mut live: Vec<SnapId> = Vec::new();
    let mut at_snap: BTreeMap<SnapId, Vec<ObjectImage>> = BTreeMap::new();
    for round in 0..rounds {
        let store = h.connect().await;
        let before = load_all(&*store, &io, None).await;
        if round % 2 == 0 {
            let snap = ok(store.snap_create(fx.pool).await);
            live.push(snap);
            at_snap.insert(snap, before.clone());
            if live.len() > 2 {
                let old = live.remove(0);
                ok(store.snap_remove(fx.pool, old).await);
                at_snap.remove(&old);
            }
        }
        drop(store);

        let seed = base_seed + round;
        let role = Role::CrashWriter {
            pool: fx.pool,
            seed,
            snaps: live.clone(),
        };
        let mut peer = Peer::start(h, role).await;
        let wait_acks = rng.range(0, 25);
        for _ in 0..wait_acks {
            peer.expect("acked", Duration::from_secs(60)).await;
        }
        let delay = if wait_acks == 0 {
            rng.range(0, 60_000)
        } else {
            rng.range(0, 3_000)
        };
        tokio::time::sleep(Duration::from_micros(delay)).await;
        peer.kill().await;
        let mut acked = 0u64;
        while let Some(line) = peer.next_line().await {
            if let Some(index) = line.strip_prefix("acked ") {
                acked = index.trim().parse::<u64>().unwrap_or(0) + 1;
            }
        }
        acked = acked.max(wait_acks);

        let store = h.connect().await;
        let actual = load_all(&*store, &io, None).await;
        let mut expect = before;
        let mut generator = BatchGenerator::new(seed);
        for _ in 0..acked {
            let (object, op) = generator.next_batch();
            expect[object as usize].apply(&op);
        }
        let (next_object, next_op) = generator.next_batch();
        let mut interrupted = expect[next_object as usize].clone();
        interrupted.apply(&next_op);
        for index in 0..CRASH_OBJECTS as usize {
            let fine = actual[index] == expect[index]
                || (index as u64 == next_object && actual[index] == interrupted);
            assert!(
                fine,
                "round {round} (seed {seed}, {acked} batches acknowledged): object {} is \
                 neither as after the acknowledged batches nor as after the interrupted one",
                crash_object(index as u64)
            );
        }
        for (snap, images) in &at_snap {
            let seen = load_all(&*store, &io, Some(*snap)).await;
            assert_eq!(
                &seen, images,
                "round {round}: content at snapshot {snap} changed"
            );
        }
    }
    fx.cleanup().await;
}

/// A watcher in another process answers notifies; once it is killed it is no longer listed
/// and no longer answers.
pub async fn processes_notify_each_other(h: &dyn Harness) {
    let fx = Fixture::new(h, "pnotify").await;
    let io = fx.io.clone();
    let grace = h.capabilities().dead_session_grace;
    ok(fx
        .store
        .write_full(&io, "hdr", Bytes::from_static(b"h"))
        .await);
    let mut peer = Peer::start(
        h,
        Role::Watcher {
            pool: fx.pool,
            oid: "hdr".to_owned(),
        },
    )
    .await;
    let ready = peer.expect("ready", Duration::from_secs(60)).await;
    let mut words = ready.split(' ').map(|w| w.parse::<u64>().unwrap_or(0));
    let (client, cookie) = (words.next().unwrap_or(0), words.next().unwrap_or(0));
    let watchers = ok(fx.store.list_watchers(&io, "hdr").await);
    assert!(
        watchers
            .iter()
            .any(|w| w.client.id.0 == client && w.cookie == cookie),
        "{watchers:?}"
    );

    let result = ok(fx
        .store
        .notify(
            &io,
            "hdr",
            Bytes::from_static(b"ping"),
            Duration::from_secs(10),
        )
        .await);
    assert_eq!(result.acks.len(), 1, "{result:?}");
    assert_eq!(result.acks[0].watcher.client.id.0, client);
    assert_eq!(result.acks[0].reply, "pong:ping");
    peer.expect("notified", Duration::from_secs(10)).await;

    peer.kill().await;
    let store = &fx.store;
    eventually(
        grace + Duration::from_secs(5),
        "killed watcher still listed",
        async || {
            ok(store.list_watchers(&io, "hdr").await)
                .iter()
                .all(|w| w.client.id.0 != client)
        },
    )
    .await;
    let result = ok(fx
        .store
        .notify(
            &io,
            "hdr",
            Bytes::from_static(b"again"),
            Duration::from_millis(500),
        )
        .await);
    assert!(result.acks.is_empty(), "{result:?}");
    fx.cleanup().await;
}

/// A lock held by another process excludes this one; once that process is killed its hold is
/// reported dead, can be broken, and the lock taken.
pub async fn processes_break_dead_holders_lock(h: &dyn Harness) {
    let fx = Fixture::new(h, "plock").await;
    let io = fx.io.clone();
    let grace = h.capabilities().dead_session_grace;
    let role = Role::LockHolder {
        pool: fx.pool,
        oid: "obj".to_owned(),
        name: "L".to_owned(),
        cookie: "held".to_owned(),
    };
    let mut peer = Peer::start(h, role).await;
    let holder = peer
        .expect("ready", Duration::from_secs(60))
        .await
        .parse::<u64>()
        .unwrap_or(0);
    let mine = LockOptions::new("L", LockKind::Exclusive, "mine");
    fails(fx.store.lock_opts(&io, "obj", &mine).await, ErrorKind::Busy);
    let info = ok(fx.store.lock_info(&io, "obj", "L").await);
    assert_eq!(info.lockers.len(), 1);
    assert_eq!(info.lockers[0].client.id.0, holder);
    assert!(info.lockers[0].alive);

    peer.kill().await;
    let store = &fx.store;
    eventually(
        grace + Duration::from_secs(5),
        "killed holder still looks alive",
        async || !ok(store.lock_info(&io, "obj", "L").await).lockers[0].alive,
    )
    .await;
    fails(fx.store.lock_opts(&io, "obj", &mine).await, ErrorKind::Busy);
    let holder_id = crate::ClientId(holder);
    ok(fx
        .store
        .lock_break(&io, "obj", "L", holder_id, "held")
        .await);
    ok(fx.store.lock_opts(&io, "obj", &mine).await);
    fx.cleanup().await;
}
