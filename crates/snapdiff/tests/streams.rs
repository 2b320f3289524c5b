//! The diff streams on their own, as a network peer uses them: records of one image applied to
//! another without a file between, a huge sparse image diffed window by window, and a
//! consumer that stops reading part way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{CreateOptions, Image, Images, OpenOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
use rbdx_snapdiff::import::apply_records;
use rbdx_snapdiff::{DiffOptions, DiffRecord, diff_extents, diff_records};

async fn images() -> Images {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    Images::new(store, IoCtx::new(pool))
}

fn fill(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
            .collect::<Vec<u8>>(),
    )
}

async fn open(images: &Images, name: &str, snap: Option<&str>) -> Image {
    images
        .open(
            name,
            OpenOptions::default().with_snap(snap.map(str::to_owned)),
        )
        .await
        .unwrap()
}

async fn content(images: &Images, name: &str, snap: Option<&str>) -> Bytes {
    let img = open(images, name, snap).await;
    let data = img.read(0, img.size()).await.unwrap();
    img.close().await.unwrap();
    data
}

#[tokio::test]
async fn records_of_each_snapshot_rebuild_the_chain_on_another_image() {
    let images = images().await;
    let size = 3 << 20;
    let striped = CreateOptions::new(size)
        .with_order(20)
        .with_striping(64 << 10, 4);
    images.create("src", &striped).await.unwrap();
    let src = open(&images, "src", None).await;
    src.write(5000, fill(1, 300_000)).await.unwrap();
    src.write(2_000_000, fill(2, 70_000)).await.unwrap();
    src.snap_create("a").await.unwrap();
    src.discard(0, 1 << 20).await.unwrap();
    src.write(1_500_000, fill(3, 4096)).await.unwrap();
    src.snap_create("b").await.unwrap();
    src.resize(size + 100_000, false).await.unwrap();
    src.write(size + 10, fill(4, 9000)).await.unwrap();
    src.write_zeroes(2_010_000, 30_000).await.unwrap();
    src.close().await.unwrap();

    images
        .create("dst", &CreateOptions::new(1 << 20))
        .await
        .unwrap();
    let dst = open(&images, "dst", None).await;
    let mut from: Option<&str> = None;
    for to in [Some("a"), Some("b"), None] {
        let view = open(&images, "src", to).await;
        let options = DiffOptions::default().with_from_snap(from.map(str::to_owned));
        let applied = apply_records(&dst, &mut diff_records(&view, &options), 4096, &|_| {})
            .await
            .unwrap();
        view.close().await.unwrap();
        assert_eq!(applied.snapshot.as_deref(), to);
        from = to;
    }
    dst.close().await.unwrap();
    for snap in [Some("a"), Some("b"), None] {
        assert!(
            content(&images, "src", snap).await == content(&images, "dst", snap).await,
            "{snap:?} differs"
        );
    }
}

#[tokio::test]
async fn a_sparse_tebibyte_image_streams_only_its_written_extents() {
    let images = images().await;
    images
        .create("big", &CreateOptions::new(1 << 40))
        .await
        .unwrap();
    let img = open(&images, "big", None).await;
    let spots = [0u64, 17 << 30, (1 << 40) - 8192];
    for (i, at) in spots.iter().enumerate() {
        img.write(*at, fill(i as u8, 8192)).await.unwrap();
    }
    let options = DiffOptions::default();
    let extents: Vec<_> = diff_extents(&img, &options).try_collect().await.unwrap();
    // A store may report zeros inside an object as data (the sparse-read contract), so the
    // extents cover the written spots and stay within the objects that hold them.
    let data: Vec<_> = extents.iter().filter(|e| e.data).collect();
    assert_eq!(data.len(), spots.len(), "{data:?}");
    for (e, at) in data.iter().zip(spots) {
        assert!(e.offset <= at && at + 8192 <= e.end(), "{e:?} misses {at}");
        assert!(e.length <= 4 << 20, "{e:?}");
    }
    let records: Vec<DiffRecord> = diff_records(&img, &options).try_collect().await.unwrap();
    // Reading the extents finds the holes again: only the written bytes go as data.
    let (mut written, mut covered) = (0, 0);
    for r in &records {
        match r {
            DiffRecord::Data { data, .. } => {
                written += data.len() as u64;
                covered += data.len() as u64;
            }
            DiffRecord::Zero { length, .. } => covered += length,
            _ => {}
        }
    }
    assert_eq!(written, 3 * 8192);
    assert_eq!(covered, extents.iter().map(|e| e.length).sum::<u64>());
    assert_eq!(records.first(), Some(&DiffRecord::Size(1 << 40)));
    assert_eq!(records.last(), Some(&DiffRecord::End));
    img.close().await.unwrap();
}

#[tokio::test]
async fn a_consumer_may_stop_part_way_and_the_image_stays_usable() {
    let images = images().await;
    images
        .create("src", &CreateOptions::new(64 << 20).with_order(20))
        .await
        .unwrap();
    let img = open(&images, "src", None).await;
    for i in 0..64u64 {
        img.write(i << 20, fill(i as u8, 65536)).await.unwrap();
    }
    let options = DiffOptions::default();
    let mut records = diff_records(&img, &options);
    let mut seen = 0;
    while let Some(record) = records.next().await {
        if matches!(record.unwrap(), DiffRecord::Data { .. }) {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    drop(records);
    img.write(0, fill(9, 4096)).await.unwrap();
    assert_eq!(img.read(0, 4096).await.unwrap(), fill(9, 4096));
    img.close().await.unwrap();
}
