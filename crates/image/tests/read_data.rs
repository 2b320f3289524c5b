//! `Image::read_data`: the data of a range as runs, without holes or zero blocks, equal to
//! what `Image::read` returns once the runs are laid over zeros; through a clone's parent and
//! at snapshots too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{CreateOptions, Image, Images, OpenOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};

const MIB: u64 = 1 << 20;

async fn images() -> Images {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    Images::new(store, IoCtx::new(pool))
}

/// Checks that the runs of `[offset, offset + length)` are in order, hold no all-zero 4 KiB
/// block, and laid over zeros give exactly `read`; returns their total length.
async fn check_runs(image: &Image, offset: u64, length: u64) -> u64 {
    let runs = image.read_data(offset, length).await.unwrap();
    let mut laid = vec![0u8; length as usize];
    let mut last_end = offset;
    for (at, data) in &runs {
        assert!(*at >= last_end, "runs overlap or are out of order");
        last_end = at + data.len() as u64;
        assert!(last_end <= offset + length);
        let start = (at - offset) as usize;
        laid[start..start + data.len()].copy_from_slice(data);
    }
    assert!(laid == image.read(offset, length).await.unwrap());
    runs.iter().map(|(_, d)| d.len() as u64).sum()
}

#[tokio::test]
async fn runs_hold_exactly_the_data_of_the_head_snapshots_and_a_parent() {
    let images = images().await;
    images
        .create("base", &CreateOptions::new(4 * MIB).with_order(20))
        .await
        .unwrap();
    let base = images.open("base", OpenOptions::default()).await.unwrap();
    base.write(0, Bytes::from(vec![1u8; MIB as usize]))
        .await
        .unwrap();
    base.snap_create("gold").await.unwrap();
    base.snap_set_protection("gold", true).await.unwrap();
    images
        .clone_from(&base, "gold", "child", &CreateOptions::default())
        .await
        .unwrap();
    let child = images.open("child", OpenOptions::default()).await.unwrap();
    // Data, an explicit zero block inside data, and a write into the parent's range.
    let mut block = vec![7u8; 64 << 10];
    block[8192..12288].fill(0);
    child
        .write(2 * MIB + 4096, Bytes::from(block))
        .await
        .unwrap();
    child
        .write(100, Bytes::from_static(b"over the parent"))
        .await
        .unwrap();
    child.snap_create("s").await.unwrap();
    child.discard(2 * MIB, MIB).await.unwrap();

    assert_eq!(check_runs(&child, 0, 4 * MIB).await, MIB);
    // The snapshot still has the 60 KiB of non-zero blocks at 2 MiB.
    let snap = images
        .open("child", OpenOptions::default().with_snap(Some("s".into())))
        .await
        .unwrap();
    assert_eq!(check_runs(&snap, 0, 4 * MIB).await, MIB + (60 << 10));
    assert_eq!(check_runs(&snap, 2 * MIB, MIB).await, 60 << 10);
    // An unaligned range inside one object.
    check_runs(&snap, 2 * MIB + 5000, 70_000).await;
}
