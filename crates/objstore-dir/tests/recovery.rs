//! Recovery of the `dir` backend from a process that dies at the two critical points of a
//! write: after preparing new files but before the commit, and after the commit but before
//! its redo intent is applied to the data file.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rbdx_objstore::{
    IoCtx, ObjectStore, ObjectStoreExt, ObjectWrite, PoolId, SnapContext, WriteOp,
};
use rbdx_objstore_dir::DirStore;

mod common;
use common::{child_command, child_spec};

const CHILD_ENV: &str = "RBDX_RECOVERY_CHILD";

/// Runs `op` (`patch`, `replace`, `append` or `pieces`) in a child that dies at `point`.
fn run_child(dir: &Path, pool: PoolId, op: &str, point: &str) {
    let status = child_command("recovery_child", CHILD_ENV, dir, pool, op)
        .env("RBDX_DIR_FAILPOINT", point)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die at the failpoint");
}

/// The child: applies one write, which aborts the process at the failpoint.
#[test]
fn recovery_child() {
    let Some((dir, pool, op)) = child_spec(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = DirStore::open(dir).unwrap();
        let io = IoCtx::new(pool);
        match op.as_str() {
            "append" => store
                .write(&io, "obj", 16384, Bytes::from(vec![b'A'; 200_000]))
                .await
                .unwrap(),
            "pieces" => store
                .operate(&io, "obj", &pieces_op(), &SnapContext::empty())
                .await
                .unwrap(),
            "patch" => store
                .write(&io, "obj", 4096, Bytes::from(vec![b'N'; 4096]))
                .await
                .unwrap(),
            "group" => {
                let outcomes = store.operate_group(&group(&io)).await;
                outcomes.into_iter().map(Result::unwrap).sum()
            }
            _ => store
                .write_full(&io, "obj", Bytes::from(vec![b'R'; 100_000]))
                .await
                .unwrap(),
        };
    });
    std::process::exit(0);
}

/// A group as the journal gives one: an entry appended to one object, and a 4 KiB patch of
/// another.
fn group(io: &IoCtx) -> Vec<ObjectWrite> {
    let write = |oid: &str, offset: u64, byte: u8| ObjectWrite {
        io: io.clone(),
        oid: oid.to_owned(),
        op: WriteOp::new().write(offset, Bytes::from(vec![byte; 4096])),
        snapc: SnapContext::empty(),
    };
    vec![write("entries", 16384, b'E'), write("obj", 4096, b'N')]
}

/// An append in pieces past the 16 KiB object's end, as a journal writes entries whose data
/// it does not copy (a small header first): 44 `h`, 200,000 `A`, 28 `h`, 200,000 `A`, 16 `t`
/// (together too large to be an in-place change).
fn pieces() -> Vec<(u8, usize)> {
    vec![
        (b'h', 44),
        (b'A', 200_000),
        (b'h', 28),
        (b'A', 200_000),
        (b't', 16),
    ]
}

fn pieces_op() -> WriteOp {
    let mut op = WriteOp::new();
    let mut at = 16384;
    for (byte, len) in pieces() {
        op = op.write(at, Bytes::from(vec![byte; len]));
        at += len as u64;
    }
    op
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("pools")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path)
            } else {
                out.push(path)
            }
        }
    }
    out
}

fn count(dir: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("meta.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn setup(dir: &Path) -> (DirStore, IoCtx) {
    let store = DirStore::open(dir).unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    store
        .write_full(&io, "obj", Bytes::from(vec![b'O'; 16384]))
        .await
        .unwrap();
    (store, io)
}

/// Reads `obj` and `entries` (its length only; `None` if absent).
async fn both(store: &DirStore, io: &IoCtx) -> (Vec<u8>, Option<usize>) {
    let obj = store.read(io, "obj", 0, None).await.unwrap().to_vec();
    let entries = match store.read(io, "entries", 0, None).await {
        Ok(data) => Some(data.len()),
        Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => None,
        Err(e) => panic!("{e}"),
    };
    (obj, entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_committed_whole_or_not_at_all_across_a_death() {
    let mut patched = vec![b'O'; 16384];
    patched[4096..8192].fill(b'N');
    for (point, expect) in [
        ("before-commit", (vec![b'O'; 16384], Some(16384))),
        ("after-commit", (patched, Some(16384 + 4096))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (store, io) = setup(dir.path()).await;
        store
            .write_full(&io, "entries", Bytes::from(vec![b'e'; 16384]))
            .await
            .unwrap();
        run_child(dir.path(), io.pool(), "group", point);
        assert_eq!(both(&store, &io).await, expect, "{point}: readers");
        let reopened = DirStore::open(dir.path()).unwrap();
        assert_eq!(both(&reopened, &io).await, expect, "{point}: reopened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_after_commit_is_seen_by_readers_and_replayed_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, io) = setup(dir.path()).await;
    run_child(dir.path(), io.pool(), "patch", "after-commit");
    let mut expect = vec![b'O'; 16384];
    expect[4096..8192].fill(b'N');
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM objects WHERE intent IS NOT NULL"
        ),
        1,
        "the intent is still recorded"
    );
    assert_eq!(
        store.read(&io, "obj", 0, None).await.unwrap(),
        expect,
        "readers apply the recorded intent"
    );

    let reopened = DirStore::open(dir.path()).unwrap();
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM objects WHERE intent IS NOT NULL"
        ),
        0,
        "reopening replays and drops it"
    );
    assert_eq!(reopened.read(&io, "obj", 0, None).await.unwrap(), expect);
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM clients"),
        2,
        "the dead session is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_before_commit_changes_nothing_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, io) = setup(dir.path()).await;
    let before = data_files(dir.path());
    run_child(dir.path(), io.pool(), "replace", "before-commit");
    assert_eq!(
        data_files(dir.path()).len(),
        before.len() + 1,
        "the child's new file is left behind"
    );
    assert_eq!(
        store.read(&io, "obj", 0, None).await.unwrap(),
        vec![b'O'; 16384]
    );

    let reopened = DirStore::open(dir.path()).unwrap();
    assert_eq!(
        data_files(dir.path()),
        before,
        "reopening deletes the uncommitted file"
    );
    assert_eq!(
        reopened.read(&io, "obj", 0, None).await.unwrap(),
        vec![b'O'; 16384]
    );
    reopened
        .write(&io, "obj", 0, Bytes::from_static(b"ok"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_deletes_replaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let (store, io) = setup(dir.path()).await;
    for round in 0..5u8 {
        store
            .write_full(&io, "obj", Bytes::from(vec![round; 8192]))
            .await
            .unwrap();
    }
    assert!(
        data_files(dir.path()).len() > 1,
        "replaced files wait for a flush"
    );
    store.flush().await.unwrap();
    assert_eq!(data_files(dir.path()).len(), 1);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM garbage"), 0);
    assert_eq!(
        store.read(&io, "obj", 0, None).await.unwrap(),
        vec![4u8; 8192]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_file_or_a_missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = DirStore::open(&file).unwrap_err();
    assert_eq!(err.kind(), rbdx_objstore::ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("not a directory"), "{err}");
    let missing = dir.path().join("missing");
    let opts = rbdx_objstore_dir::DirOptions::default().with_create(false);
    let err = DirStore::open_opts(&missing, opts).unwrap_err();
    assert_eq!(err.kind(), rbdx_objstore::ErrorKind::NotFound);
    assert!(!missing.exists(), "nothing is created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_before_an_append_commits_leaves_nothing_readers_or_growth_can_see() {
    for op in ["append", "pieces"] {
        death_before_append_commit(op).await;
    }
}

async fn death_before_append_commit(op: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (store, io) = setup(dir.path()).await;
    run_child(dir.path(), io.pool(), op, "before-commit");
    let files = data_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "{op}: the append went into the object's file"
    );
    assert!(
        std::fs::metadata(&files[0]).unwrap().len() > 16384,
        "the child wrote past the committed end before it died"
    );
    let reopened = DirStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.read(&io, "obj", 0, None).await.unwrap(),
        vec![b'O'; 16384],
        "the uncommitted append is not visible"
    );
    // Growing by a small write past a gap: the gap reads as zeros, not the dead append.
    reopened
        .write(&io, "obj", 20_000, Bytes::from_static(b"x"))
        .await
        .unwrap();
    let data = reopened.read(&io, "obj", 0, None).await.unwrap();
    assert_eq!(data.len(), 20_001);
    assert!(data[16384..20_000].iter().all(|&b| b == 0));
    // Growing by a truncate: zeros too.
    reopened
        .operate(
            &io,
            "obj",
            &rbdx_objstore::WriteOp::new().truncate(100_000),
            &rbdx_objstore::SnapContext::empty(),
        )
        .await
        .unwrap();
    let data = reopened.read(&io, "obj", 0, None).await.unwrap();
    assert!(data[20_001..].iter().all(|&b| b == 0));
    // A committed append reads back, with a gap before it as zeros.
    reopened
        .write(&io, "obj", 150_000, Bytes::from(vec![b'B'; 100_000]))
        .await
        .unwrap();
    let data = reopened.read(&io, "obj", 0, None).await.unwrap();
    assert_eq!(data.len(), 250_000);
    assert!(data[100_000..150_000].iter().all(|&b| b == 0));
    assert!(data[150_000..].iter().all(|&b| b == b'B'));
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_pieces_goes_into_the_objects_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, io) = setup(dir.path()).await;
    let before = data_files(dir.path());
    store
        .operate(&io, "obj", &pieces_op(), &SnapContext::empty())
        .await
        .unwrap();
    assert_eq!(
        data_files(dir.path()),
        before,
        "written past the end of the same file, not copied into a new one"
    );
    let data = store.read(&io, "obj", 0, None).await.unwrap();
    let mut expect = vec![b'O'; 16384];
    for (byte, len) in pieces() {
        expect.extend(vec![byte; len]);
    }
    assert_eq!(data, expect);
}
