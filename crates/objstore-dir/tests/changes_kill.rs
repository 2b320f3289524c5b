//! Writers killed with SIGKILL at any moment, including between their commit and the end of
//! their mark on the shared change counters, never make another process's remembered head
//! rows stand in for what the store holds: after every kill, a long-lived handle reads the
//! same bytes as a fresh one, and no read it made meanwhile was torn.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, PoolId};
use rbdx_objstore_dir::DirStore;

use common::{Child, Rng, child_command, child_spec};

const CHILD_ENV: &str = "RBDX_CHANGES_CHILD";
const NAMES: [&str; 3] = ["a", "b", "c"];
const BLOCK: usize = 4096;
const BLOCKS: usize = 32;
const ROUNDS: u64 = 12;

fn spawn_child(dir: &Path, pool: PoolId, seed: u64, failpoint: Option<&str>) -> Child {
    let mut cmd = child_command("writer_child", CHILD_ENV, dir, pool, &seed.to_string());
    if let Some(point) = failpoint {
        cmd.env("RBDX_DIR_FAILPOINT", point);
    }
    Child(cmd.spawn().unwrap())
}

/// The child: writes whole blocks, each filled with one byte, until it is killed.
#[test]
fn writer_child() {
    let Some((dir, pool, seed)) = child_spec(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = DirStore::open(dir).unwrap();
        let io = IoCtx::new(pool);
        let mut rng = Rng(seed.parse::<u64>().unwrap() | 1);
        loop {
            let name = NAMES[rng.below(NAMES.len())];
            let block = rng.below(BLOCKS);
            let fill = (rng.next() % 255) as u8 + 1;
            store
                .write(
                    &io,
                    name,
                    (block * BLOCK) as u64,
                    Bytes::from(vec![fill; BLOCK]),
                )
                .await
                .unwrap();
        }
    });
}

/// Asserts that every block of `data` holds one byte value (no write was half seen).
fn assert_whole_blocks(data: &[u8], what: &str) {
    for (i, block) in data.chunks(BLOCK).enumerate() {
        assert!(
            block.iter().all(|b| *b == block[0]),
            "{what}: block {i} is torn"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_rows_survive_writers_killed_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let reader = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(reader.pool_create("rbd").await.unwrap());
    for name in NAMES {
        reader
            .write_full(&io, name, Bytes::from(vec![1u8; BLOCK * BLOCKS]))
            .await
            .unwrap();
    }
    let mut rng = Rng(0x51ed_270b_3a4c_d9e1);
    for round in 0..ROUNDS {
        // Every fourth child dies right after a commit, before it unmarks its stripes.
        let failpoint = (round % 4 == 3).then_some("after-commit");
        let mut child = spawn_child(dir.path(), io.pool(), rng.next(), failpoint);
        let until = Instant::now() + Duration::from_millis(30 + rng.next() % 120);
        while Instant::now() < until {
            for name in NAMES {
                let data = reader.read(&io, name, 0, None).await.unwrap();
                assert_whole_blocks(&data, &format!("round {round}: {name} while written"));
                let block = (rng.below(BLOCKS) * BLOCK) as u64;
                let one = reader
                    .read(&io, name, block, Some(BLOCK as u64))
                    .await
                    .unwrap();
                assert_whole_blocks(&one, &format!("round {round}: {name}@{block}"));
            }
        }
        child.kill();
        let fresh = DirStore::open(dir.path()).unwrap();
        for name in NAMES {
            let want = fresh.read(&io, name, 0, None).await.unwrap();
            for _ in 0..2 {
                let got = reader.read(&io, name, 0, None).await.unwrap();
                assert_eq!(got, want, "round {round}: {name} after the writer died");
            }
            let block = rng.below(BLOCKS) * BLOCK;
            let got = reader
                .read(&io, name, block as u64, Some(BLOCK as u64))
                .await
                .unwrap();
            assert_eq!(
                &got[..],
                &want[block..block + BLOCK],
                "round {round}: {name}@{block}"
            );
        }
    }
}
