//! Clones on the in-memory store: reads through to the parent, copy-up, discards, flatten,
//! the children registry and the rules protecting a parent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{CreateOptions, ErrorKind, Image, Images, OpenOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};

const MIB: u64 = 1 << 20;

fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 253) as u8))
        .collect::<Vec<u8>>()
        .into()
}

fn no_progress(_: u64, _: u64) {}

/// A parent `base` (4 MiB of data in 1 MiB objects) with protected snapshot `gold`, and a
/// clone `child` of it.
async fn family() -> (Images, Image, Image) {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(store, IoCtx::new(pool));
    images
        .create("base", &CreateOptions::new(8 * MIB).with_order(20))
        .await
        .unwrap();
    let base = images.open("base", OpenOptions::default()).await.unwrap();
    base.write(0, pattern(1, (4 * MIB) as usize)).await.unwrap();
    base.snap_create("gold").await.unwrap();
    base.snap_set_protection("gold", true).await.unwrap();
    images
        .clone_from(&base, "gold", "child", &CreateOptions::default())
        .await
        .unwrap();
    let child = images.open("child", OpenOptions::default()).await.unwrap();
    (images, base, child)
}

/// Snapshot `s` of `child`, protected, and its clone `grandchild`, open.
async fn grandchild(images: &Images, child: &Image) -> Image {
    child.snap_create("s").await.unwrap();
    child.snap_set_protection("s", true).await.unwrap();
    images
        .clone_from(child, "s", "grandchild", &CreateOptions::default())
        .await
        .unwrap();
    images
        .open("grandchild", OpenOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_clone_reads_its_parent_and_copies_up_on_write() {
    let (_images, base, child) = family().await;
    assert_eq!(child.size(), 8 * MIB);
    assert_eq!(
        child.read(0, 4 * MIB).await.unwrap(),
        pattern(1, (4 * MIB) as usize)
    );
    // Writing into an object keeps the parent's bytes around the write.
    child
        .write(MIB + 10, Bytes::from_static(b"child"))
        .await
        .unwrap();
    let mut expected = pattern(1, (4 * MIB) as usize).to_vec();
    expected[(MIB + 10) as usize..(MIB + 15) as usize].copy_from_slice(b"child");
    assert_eq!(child.read(0, 4 * MIB).await.unwrap(), expected);
    // The parent head changing later does not reach the clone (it reads the snapshot).
    base.write(0, pattern(9, 100)).await.unwrap();
    assert_eq!(child.read(0, 100).await.unwrap(), pattern(1, 100));
    // Discarding a whole object of the clone reads zeros, not the parent.
    child.discard(2 * MIB, MIB).await.unwrap();
    assert!(
        child
            .read(2 * MIB, MIB)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        child.read(3 * MIB, 10).await.unwrap(),
        pattern(1, (4 * MIB) as usize).slice((3 * MIB) as usize..(3 * MIB + 10) as usize)
    );
    child.close().await.unwrap();
    base.close().await.unwrap();
}

#[tokio::test]
async fn parents_are_protected_while_they_have_children() {
    let (images, base, child) = family().await;
    let kids = base.children("gold").await.unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].image, "child");
    let err = base.snap_set_protection("gold", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    base.snap_create("loose").await.unwrap();
    let err = images
        .clone_from(&base, "loose", "c2", &CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let info = child.parent_info().await.unwrap().unwrap();
    assert_eq!(
        (info.image.as_str(), info.snapshot.as_str(), info.overlap),
        ("base", "gold", 8 * MIB)
    );
    // Removing the clone frees the parent snapshot.
    child.close().await.unwrap();
    images.remove("child", &no_progress).await.unwrap();
    assert!(base.children("gold").await.unwrap().is_empty());
    base.snap_set_protection("gold", false).await.unwrap();
    base.close().await.unwrap();
}

#[tokio::test]
async fn deep_flatten_detaches_the_clone_and_its_snapshots() {
    let (images, base, child) = family().await;
    child.write(0, Bytes::from_static(b"mine")).await.unwrap();
    child.snap_create("c1").await.unwrap();
    child
        .write(2 * MIB, Bytes::from_static(b"later"))
        .await
        .unwrap();
    child.flatten(&no_progress).await.unwrap();
    assert!(child.parent_info().await.unwrap().is_none());
    assert!(base.children("gold").await.unwrap().is_empty());
    base.snap_set_protection("gold", false).await.unwrap();
    base.snap_remove("gold").await.unwrap();
    // The parent's data is gone from the parent, and still in the clone and its snapshot.
    let mut expected = pattern(1, (4 * MIB) as usize).to_vec();
    expected[..4].copy_from_slice(b"mine");
    let at_c1 = images
        .open("child", OpenOptions::default().with_snap(Some("c1".into())))
        .await
        .unwrap();
    assert_eq!(at_c1.read(0, 4 * MIB).await.unwrap(), expected);
    expected[(2 * MIB) as usize..(2 * MIB + 5) as usize].copy_from_slice(b"later");
    assert_eq!(child.read(0, 4 * MIB).await.unwrap(), expected);
    assert!(
        child
            .read(4 * MIB, 4 * MIB)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    at_c1.close().await.unwrap();
    child.close().await.unwrap();
    base.close().await.unwrap();
}

#[tokio::test]
async fn clones_of_clones_read_through_the_chain() {
    let (images, base, child) = family().await;
    child.write(5 * MIB, pattern(7, 1000)).await.unwrap();
    let grandchild = grandchild(&images, &child).await;
    assert_eq!(grandchild.read(0, 1000).await.unwrap(), pattern(1, 1000));
    assert_eq!(
        grandchild.read(5 * MIB, 1000).await.unwrap(),
        pattern(7, 1000)
    );
    // Shrinking the grandchild cuts the overlap; growing again shows zeros there.
    grandchild.resize(MIB, true).await.unwrap();
    grandchild.resize(8 * MIB, false).await.unwrap();
    assert!(
        grandchild
            .read(5 * MIB, 1000)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(grandchild.read(0, 1000).await.unwrap(), pattern(1, 1000));
    for image in [grandchild, child, base] {
        image.close().await.unwrap();
    }
}

#[tokio::test]
async fn rollback_of_a_clone_lets_the_parent_show_through_again() {
    let (_images, base, child) = family().await;
    child.snap_create("fresh").await.unwrap();
    child.write(0, pattern(5, 4096)).await.unwrap();
    child.snap_rollback("fresh", &no_progress).await.unwrap();
    assert_eq!(child.read(0, 4096).await.unwrap(), pattern(1, 4096));
    child.close().await.unwrap();
    base.close().await.unwrap();
}

#[tokio::test]
async fn an_open_grandchild_reads_right_after_its_parent_is_flattened() {
    let (images, base, child) = family().await;
    let grandchild = grandchild(&images, &child).await;
    // The grandchild's handle opens its parent (child@s) and child@s's parent (base@gold).
    assert_eq!(grandchild.read(0, 1000).await.unwrap(), pattern(1, 1000));
    // A deep flatten gives child@s its own copy and drops its parent link, so base@gold has
    // no children left and may go.
    child.flatten(&no_progress).await.unwrap();
    base.snap_set_protection("gold", false).await.unwrap();
    base.snap_remove("gold").await.unwrap();
    assert_eq!(
        grandchild.read(0, 4 * MIB).await.unwrap(),
        pattern(1, (4 * MIB) as usize)
    );
    for image in [grandchild, child, base] {
        image.close().await.unwrap();
    }
}
