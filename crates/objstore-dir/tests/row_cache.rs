//! Reads through one handle stay exact while another handle (another process's view of the
//! same store) keeps changing, removing and recreating the objects the first one reads: the
//! head rows a handle remembers for small reads never stand in for a newer version.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt};
use rbdx_objstore_dir::DirStore;

use common::Rng;

const OBJECT: usize = 64 << 10;
const BLOCK: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_change_made_through_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let reader = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(reader.pool_create("rbd").await.unwrap());
    let writer = DirStore::open(dir.path()).unwrap();
    let names = ["a", "b", "c"];
    let mut model: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    for round in 0..600u32 {
        let i = rng.below(names.len());
        let name = names[i];
        let fill = (round % 251) as u8 + 1;
        // Writes come from either handle, so both the writer's forgetting and the
        // version check of a read are exercised.
        let by = if rng.below(4) == 0 { &reader } else { &writer };
        match rng.below(10) {
            0 if model[i].is_some() => {
                by.remove(&io, name).await.unwrap();
                model[i] = None;
            }
            1 => {
                let len = BLOCK * (1 + rng.below(OBJECT / BLOCK));
                by.write_full(&io, name, Bytes::from(vec![fill; len]))
                    .await
                    .unwrap();
                model[i] = Some(vec![fill; len]);
            }
            _ => {
                let at = BLOCK * rng.below(OBJECT / BLOCK);
                by.write(&io, name, at as u64, Bytes::from(vec![fill; BLOCK]))
                    .await
                    .unwrap();
                let data = model[i].get_or_insert_with(Vec::new);
                if data.len() < at + BLOCK {
                    data.resize(at + BLOCK, 0);
                }
                data[at..at + BLOCK].fill(fill);
            }
        }
        for (j, name) in names.iter().enumerate() {
            let got = reader.read(&io, name, 0, Some(OBJECT as u64)).await;
            match &model[j] {
                None => assert!(got.is_err(), "round {round}: {name} was removed"),
                Some(want) => {
                    assert_eq!(&got.unwrap()[..], &want[..], "round {round}: {name}");
                    let at = BLOCK * rng.below(want.len() / BLOCK);
                    let block = reader
                        .read(&io, name, at as u64, Some(BLOCK as u64))
                        .await
                        .unwrap();
                    assert_eq!(
                        &block[..],
                        &want[at..at + BLOCK],
                        "round {round}: {name}@{at}"
                    );
                }
            }
        }
    }
}
