//! Staged and recycled files under SIGKILL: a child creates, replaces, overwrites and removes
//! objects, writing the content of new and replaced ones ahead of the commit (staged files), and flushes so that the files
//! it releases are recycled and taken again, until it is killed at a random moment. Neither
//! a long-lived handle reading meanwhile nor a fresh handle after each kill may see an object
//! other than whole (one fill byte, the hole between its pieces intact), and every recycled
//! file must be empty.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{ErrorKind, IoCtx, ObjectStore, ObjectStoreExt, PoolId, SnapContext, WriteOp};
use rbdx_objstore_dir::DirStore;

use common::{Child, Rng, child_command, child_spec};

const CHILD_ENV: &str = "RBDX_STAGED_CHILD";
const NAMES: [&str; 6] = ["o0", "o1", "o2", "o3", "o4", "o5"];
/// Each object: a piece at 0 and a piece at `GAP_END`, a hole between.
const PIECE: usize = 512 << 10;
const GAP_END: usize = 1 << 20;
const SIZE: usize = GAP_END + PIECE;
const ROUNDS: u64 = 10;

fn spawn_child(dir: &Path, pool: PoolId, seed: u64) -> Child {
    Child(
        child_command("staging_child", CHILD_ENV, dir, pool, &seed.to_string())
            .spawn()
            .unwrap(),
    )
}

/// The writes that give an object filled with `fill`, after `start` (which empties it).
fn content(start: WriteOp, fill: u8) -> WriteOp {
    start
        .write(0, Bytes::from(vec![fill; PIECE]))
        .write(GAP_END as u64, Bytes::from(vec![fill; PIECE]))
}

/// The child: creates, replaces and removes objects, flushing now and then, until killed.
#[test]
fn staging_child() {
    let Some((dir, pool, seed)) = child_spec(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = DirStore::open(dir).unwrap();
        let io = IoCtx::new(pool);
        let mut rng = Rng(seed.parse::<u64>().unwrap() | 1);
        let snapc = SnapContext::empty();
        for n in 0u64.. {
            let name = NAMES[rng.below(NAMES.len())];
            let fill = (rng.next() % 255) as u8 + 1;
            let op = match rng.below(4) {
                0 => content(WriteOp::new().create(true), fill),
                1 => content(WriteOp::new().create(false).truncate(0), fill),
                // Not staged: the writer fills it, from the old file when there is one.
                2 => content(WriteOp::new(), fill),
                _ => WriteOp::new().remove(),
            };
            match store.operate(&io, name, &op, &snapc).await {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => {}
                Err(e) => panic!("{name}: {e}"),
            }
            if n % 8 == 7 {
                store.flush().await.unwrap();
            }
        }
    });
}

/// Asserts that `data` is a whole object: one fill byte in both pieces, zeros between.
fn assert_whole(data: &[u8], what: &str) {
    assert_eq!(data.len(), SIZE, "{what}: size");
    let fill = data[0];
    assert_ne!(fill, 0, "{what}: first piece is zeros");
    assert!(
        data[..PIECE].iter().all(|b| *b == fill),
        "{what}: first piece torn"
    );
    assert!(
        data[PIECE..GAP_END].iter().all(|b| *b == 0),
        "{what}: the hole holds data"
    );
    assert!(
        data[GAP_END..].iter().all(|b| *b == fill),
        "{what}: second piece differs from the first"
    );
}

/// Reads every object and checks each that exists.
async fn check_all(store: &DirStore, io: &IoCtx, what: &str) {
    for name in NAMES {
        match store.read(io, name, 0, None).await {
            Ok(data) => assert_whole(&data, &format!("{what}: {name}")),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("{what}: {name}: {e}"),
        }
    }
}

/// Asserts that every file in the store's recycled directory is empty.
fn assert_recycled_empty(dir: &Path, what: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("recycled")) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        assert_eq!(len, 0, "{what}: recycled {:?} holds data", entry.path());
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_and_recycled_files_survive_kills_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let reader = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(reader.pool_create("rbd").await.unwrap());
    let mut rng = Rng(0x2b99_2ddf_a232_49d7);
    let mut recycled_seen = 0;
    let mut round = 0;
    // A loaded machine may start the child too slowly to recycle anything in ten short
    // rounds: up to thirty more, each longer, until some file was recycled.
    while round < ROUNDS || (recycled_seen == 0 && round < 4 * ROUNDS) {
        let mut child = spawn_child(dir.path(), io.pool(), rng.next());
        let extra = round.saturating_sub(ROUNDS) * 100;
        let until = Instant::now() + Duration::from_millis(80 + rng.next() % 200 + extra);
        while Instant::now() < until {
            check_all(&reader, &io, &format!("round {round}, while written")).await;
        }
        child.kill();
        let fresh = DirStore::open(dir.path()).unwrap();
        check_all(&fresh, &io, &format!("round {round}, after the kill")).await;
        check_all(&reader, &io, &format!("round {round}, long-lived handle")).await;
        recycled_seen += assert_recycled_empty(dir.path(), &format!("round {round}"));
        drop(fresh);
        round += 1;
    }
    assert!(
        recycled_seen > 0,
        "no file was ever recycled: the test does not exercise recycling"
    );
}
