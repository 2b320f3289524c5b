//! Groups of writes to several objects (`operate_group`): committed together, in order, and
//! never a write without the ones before it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use rbdx_objstore::{
    ErrorKind, IoCtx, MemoryStore, ObjectStore, ObjectStoreExt, ObjectWrite, SnapContext, WriteOp,
};
use rbdx_objstore_dir::DirStore;

mod common;
use common::{child_command, child_spec};

const CHILD_ENV: &str = "RBDX_GROUPS_CHILD";

fn write(io: &IoCtx, oid: &str, op: WriteOp) -> ObjectWrite {
    ObjectWrite {
        io: io.clone(),
        oid: oid.to_owned(),
        op,
        snapc: SnapContext::empty(),
    }
}

fn patch(offset: u64, byte: u8) -> WriteOp {
    WriteOp::new().write(offset, Bytes::from(vec![byte; 4096]))
}

async fn exists(store: &dyn ObjectStore, io: &IoCtx, oid: &str) -> bool {
    match store.stat(io, oid).await {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("{e}"),
    }
}

/// Runs the checks on `store`, whose pool `io` holds nothing yet.
async fn groups_keep_their_promises(store: &dyn ObjectStore, io: &IoCtx) {
    store
        .write_full(io, "a", Bytes::from(vec![b'a'; 8192]))
        .await
        .unwrap();
    // Every write applied, each object's version moved on.
    let before = store.stat(io, "a").await.unwrap().version;
    let outcomes = store
        .operate_group(&[
            write(io, "a", patch(0, b'A')),
            write(io, "b", patch(4096, b'B')),
        ])
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(*outcomes[0].as_ref().unwrap() > before);
    let a = store.read(io, "a", 0, None).await.unwrap();
    assert!(a[..4096].iter().all(|&b| b == b'A') && a[4096..].iter().all(|&b| b == b'a'));
    let b = store.read(io, "b", 0, None).await.unwrap();
    assert!(b[..4096].iter().all(|&b| b == 0) && b[4096..].iter().all(|&b| b == b'B'));

    // The failures below are found while planning: the `dir` store gives such a group back
    // and applies it in turn, so these check the order rules, not a rolled-back commit.
    // The first write fails: nothing after it is applied.
    let outcomes = store
        .operate_group(&[
            write(
                io,
                "a",
                WriteOp::new()
                    .assert_version(1_000_000)
                    .write(0, Bytes::from_static(b"x")),
            ),
            write(io, "c", patch(0, b'C')),
        ])
        .await;
    assert_eq!(
        outcomes[0].as_ref().unwrap_err().kind(),
        ErrorKind::VersionMismatch
    );
    assert!(outcomes[1].is_err());
    assert!(
        !exists(store, io, "c").await,
        "a write after a failed one was applied"
    );
    assert_eq!(store.read(io, "a", 0, Some(1)).await.unwrap(), "A");

    // The last write fails: what came before it is applied, in order.
    let outcomes = store
        .operate_group(&[
            write(io, "d", patch(0, b'D')),
            write(
                io,
                "absent",
                WriteOp::new()
                    .assert_exists()
                    .write(0, Bytes::from_static(b"x")),
            ),
        ])
        .await;
    assert!(outcomes[0].is_ok());
    assert_eq!(
        outcomes[1].as_ref().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(exists(store, io, "d").await);
    assert!(!exists(store, io, "absent").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dir_store_commits_groups_and_keeps_their_promises() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    assert!(store.commits_groups());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    groups_keep_their_promises(&store, &io).await;
}

#[tokio::test]
async fn a_store_that_applies_groups_in_turn_keeps_the_same_promises() {
    let store = MemoryStore::new();
    assert!(!store.commits_groups());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    groups_keep_their_promises(&store, &io).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_single_writes_from_many_tasks_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(DirStore::open(dir.path()).unwrap());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            let (store, io) = (store.clone(), io.clone());
            tokio::spawn(async move {
                for i in 0..32u64 {
                    let byte = (t * 32 + i) as u8 | 1;
                    if i % 2 == 0 {
                        let group = [
                            write(
                                &io,
                                &format!("log{t}"),
                                WriteOp::new().write(i * 4096, Bytes::from(vec![byte; 4096])),
                            ),
                            write(&io, &format!("obj{}", i % 4), patch(t * 4096, byte)),
                        ];
                        for outcome in store.operate_group(&group).await {
                            outcome.unwrap();
                        }
                    } else {
                        store
                            .operate(
                                &io,
                                &format!("obj{}", i % 4),
                                &patch(t * 4096, byte),
                                &SnapContext::empty(),
                            )
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for t in 0..16u64 {
        let log = store.read(&io, &format!("log{t}"), 0, None).await.unwrap();
        for i in (0..32u64).step_by(2) {
            let byte = (t * 32 + i) as u8 | 1;
            let at = (i * 4096) as usize;
            assert!(
                log[at..at + 4096].iter().all(|&b| b == byte),
                "log{t} entry {i}"
            );
        }
        // Each task's last write to each object is its own.
        for o in 0..4u64 {
            let last = (0..32u64).rev().find(|i| i % 4 == o).unwrap();
            let byte = (t * 32 + last) as u8 | 1;
            let obj = store
                .read(&io, &format!("obj{o}"), t * 4096, Some(4096))
                .await
                .unwrap();
            assert!(obj.iter().all(|&b| b == byte), "obj{o} at task {t}");
        }
    }
}

/// The child: with the store failing `victim`'s new file (`fill`) or row (`row`), runs groups
/// with `victim` in them and checks their outcomes.
#[test]
fn failing_group_child() {
    let Some((dir, pool, step)) = child_spec(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = DirStore::open(dir).unwrap();
        let io = IoCtx::new(pool);
        let version = store.stat(&io, "a").await.unwrap().version;
        // `a` asserts its version: had the failed commit kept `a`'s write, the write applied
        // again in turn would fail.
        let outcomes = store
            .operate_group(&[
                write(
                    &io,
                    "a",
                    WriteOp::new()
                        .assert_version(version)
                        .write(0, Bytes::from(vec![b'A'; 4096])),
                ),
                write(&io, "victim", patch(0, b'V')),
            ])
            .await;
        assert!(outcomes[0].is_ok(), "{step}: {outcomes:?}");
        let e = outcomes[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{step}: {e}");
        // The victim first: nothing after it is applied.
        let outcomes = store
            .operate_group(&[
                write(&io, "victim", patch(0, b'V')),
                write(&io, "b", patch(0, b'B')),
            ])
            .await;
        assert!(outcomes.iter().all(Result::is_err), "{step}: {outcomes:?}");
    });
    std::process::exit(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_fails_while_it_commits_is_applied_in_turn_without_its_failed_part() {
    for step in ["fill", "row"] {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
        store
            .write_full(&io, "a", Bytes::from(vec![b'a'; 8192]))
            .await
            .unwrap();
        let status = child_command(
            "failing_group_child",
            CHILD_ENV,
            dir.path(),
            io.pool(),
            step,
        )
        .env("RBDX_DIR_FAILPOINT", format!("fail-{step}:victim"))
        .status()
        .unwrap();
        assert!(status.success(), "{step}: the child's checks failed");
        for store in [store, DirStore::open(dir.path()).unwrap()] {
            let a = store.read(&io, "a", 0, None).await.unwrap();
            assert_eq!(a.len(), 8192, "{step}");
            assert!(
                a[..4096].iter().all(|&b| b == b'A') && a[4096..].iter().all(|&b| b == b'a'),
                "{step}: a"
            );
            assert!(!exists(&store, &io, "victim").await, "{step}: victim");
            assert!(!exists(&store, &io, "b").await, "{step}: b");
        }
    }
}
