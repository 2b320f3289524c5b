//! Image behaviour on the in-memory store: I/O, striping, object map, snapshots, resize,
//! removal rules and the exclusive-lock hand-over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{
    CreateOptions, ErrorKind, Features, Image, Images, ObjectMap, ObjectState, OpenOptions, names,
};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, ObjectStoreExt as _};

const MIB: u64 = 1 << 20;

async fn setup() -> Images {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    Images::new(store, IoCtx::new(pool))
}

fn no_progress(_: u64, _: u64) {}

fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect::<Vec<u8>>()
        .into()
}

async fn head_map(images: &Images, image: &Image) -> ObjectMap {
    let oid = names::object_map_object(image.id(), None);
    let bytes = images
        .store()
        .read(images.io_ctx(), &oid, 0, None)
        .await
        .unwrap();
    ObjectMap::decode(&bytes).unwrap()
}

#[tokio::test]
async fn writes_read_back_across_objects_and_unwritten_bytes_are_zero() {
    let images = setup().await;
    images
        .create("a", &CreateOptions::new(64 * 1024).with_order(12))
        .await
        .unwrap();
    let image = images.open("a", OpenOptions::default()).await.unwrap();
    let data = pattern(7, 10_000);
    image.write(3000, data.clone()).await.unwrap();
    assert_eq!(image.read(3000, 10_000).await.unwrap(), data);
    assert!(
        image
            .read(20_000, 4096)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    let err = image.read(60_000, 10_000).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = image
        .write(64 * 1024, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    image.close().await.unwrap();
}

#[tokio::test]
async fn fancy_striping_places_units_round_robin() {
    let images = setup().await;
    let opts = CreateOptions::new(48 * 1024)
        .with_order(12)
        .with_striping(1024, 3);
    images.create("s", &opts).await.unwrap();
    let image = images.open("s", OpenOptions::default()).await.unwrap();
    assert!(image.header().features.contains(Features::STRIPINGV2));
    // Image bytes 1024..2048 are the first stripe unit of object 1.
    image.write(1024, pattern(1, 1024)).await.unwrap();
    let oid = names::data_object(&image.header().object_prefix, 1);
    let stored = images
        .store()
        .read(images.io_ctx(), &oid, 0, None)
        .await
        .unwrap();
    assert_eq!(stored, pattern(1, 1024));
    let data = pattern(9, 30_000);
    image.write(5000, data.clone()).await.unwrap();
    assert_eq!(image.read(5000, 30_000).await.unwrap(), data);
    image.close().await.unwrap();
}

#[tokio::test]
async fn object_map_tracks_writes_and_removals() {
    let images = setup().await;
    images
        .create("m", &CreateOptions::new(16 * MIB).with_order(20))
        .await
        .unwrap();
    let image = images.open("m", OpenOptions::default()).await.unwrap();
    image
        .write(MIB + 5, Bytes::from_static(b"abc"))
        .await
        .unwrap();
    image.write(3 * MIB, pattern(2, 4096)).await.unwrap();
    let map = head_map(&images, &image).await;
    let states: Vec<ObjectState> = map.iter().collect();
    assert_eq!(states[1], ObjectState::Exists);
    assert_eq!(states[3], ObjectState::Exists);
    assert_eq!(states.iter().filter(|s| s.may_exist()).count(), 2);
    image.discard(MIB, MIB).await.unwrap();
    let map = head_map(&images, &image).await;
    assert_eq!(map.get(1), ObjectState::Nonexistent);
    let oid = names::data_object(&image.header().object_prefix, 1);
    assert!(!images.store().exists(images.io_ctx(), &oid).await.unwrap());
    // A partial discard zeroes inside the object and keeps it.
    image.discard(3 * MIB + 10, 100).await.unwrap();
    assert_eq!(head_map(&images, &image).await.get(3), ObjectState::Exists);
    let back = image.read(3 * MIB, 4096).await.unwrap();
    assert!(back[10..110].iter().all(|&b| b == 0));
    assert_eq!(back[110], pattern(2, 4096)[110]);
    image.close().await.unwrap();
}

#[tokio::test]
async fn snapshots_keep_old_data_and_rollback_restores_it() {
    let images = setup().await;
    images
        .create("snap", &CreateOptions::new(8 * MIB).with_order(20))
        .await
        .unwrap();
    let image = images.open("snap", OpenOptions::default()).await.unwrap();
    image.write(0, pattern(1, 8192)).await.unwrap();
    image.snap_create("one").await.unwrap();
    // fast-diff: what existed before the snapshot is now clean.
    assert_eq!(
        head_map(&images, &image).await.get(0),
        ObjectState::ExistsClean
    );
    image.write(0, pattern(2, 8192)).await.unwrap();
    image.write(5 * MIB, pattern(3, 100)).await.unwrap();
    assert_eq!(head_map(&images, &image).await.get(0), ObjectState::Exists);
    let at_one = images
        .open("snap", OpenOptions::default().with_snap(Some("one".into())))
        .await
        .unwrap();
    assert_eq!(at_one.read(0, 8192).await.unwrap(), pattern(1, 8192));
    assert!(
        at_one
            .read(5 * MIB, 100)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    let err = at_one.write(0, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    at_one.close().await.unwrap();

    image.snap_rollback("one", &no_progress).await.unwrap();
    assert_eq!(image.read(0, 8192).await.unwrap(), pattern(1, 8192));
    assert!(
        image
            .read(5 * MIB, 100)
            .await
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(
        head_map(&images, &image).await.get(5),
        ObjectState::Nonexistent
    );

    let err = image.snap_create("one").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    image.snap_set_protection("one", true).await.unwrap();
    assert_eq!(
        image.snap_remove("one").await.unwrap_err().kind(),
        ErrorKind::Busy
    );
    image.snap_set_protection("one", false).await.unwrap();
    image.snap_rename("one", "uno").await.unwrap();
    image.snap_remove("uno").await.unwrap();
    assert!(image.snapshots().await.unwrap().is_empty());
    image.close().await.unwrap();
}

#[tokio::test]
async fn snapshot_limit_is_enforced() {
    let images = setup().await;
    images.create("l", &CreateOptions::new(MIB)).await.unwrap();
    let image = images.open("l", OpenOptions::default()).await.unwrap();
    image.snap_set_limit(Some(1)).await.unwrap();
    image.snap_create("a").await.unwrap();
    let err = image.snap_create("b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    image.snap_set_limit(None).await.unwrap();
    image.snap_create("b").await.unwrap();
    image.close().await.unwrap();
}

#[tokio::test]
async fn shrinking_needs_permission_and_drops_the_tail() {
    let images = setup().await;
    images
        .create("r", &CreateOptions::new(4 * MIB).with_order(20))
        .await
        .unwrap();
    let image = images.open("r", OpenOptions::default()).await.unwrap();
    image
        .write(0, pattern(5, (4 * MIB) as usize))
        .await
        .unwrap();
    let err = image.resize(MIB + 100, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    image.resize(MIB + 100, true).await.unwrap();
    assert_eq!(image.size(), MIB + 100);
    image.resize(4 * MIB, false).await.unwrap();
    let back = image.read(0, 4 * MIB).await.unwrap();
    assert_eq!(
        back[..(MIB + 100) as usize],
        pattern(5, (4 * MIB) as usize)[..(MIB + 100) as usize]
    );
    assert!(back[(MIB + 100) as usize..].iter().all(|&b| b == 0));
    let map = head_map(&images, &image).await;
    assert_eq!(map.len(), 4);
    assert_eq!(map.get(2), ObjectState::Nonexistent);
    image.close().await.unwrap();
}

#[tokio::test]
async fn removal_is_refused_with_snapshots_or_watchers() {
    let images = setup().await;
    images.create("x", &CreateOptions::new(MIB)).await.unwrap();
    let image = images.open("x", OpenOptions::default()).await.unwrap();
    image.write(0, pattern(1, 100)).await.unwrap();
    let err = images.remove("x", &no_progress).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    image.snap_create("s").await.unwrap();
    image.close().await.unwrap();
    let err = images.remove("x", &no_progress).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotEmpty);
    let image = images.open("x", OpenOptions::default()).await.unwrap();
    image.snap_remove("s").await.unwrap();
    image.close().await.unwrap();
    images.remove("x", &no_progress).await.unwrap();
    assert!(images.list().await.unwrap().is_empty());
    let left: Vec<String> =
        futures::TryStreamExt::try_collect(images.store().list_objects(images.io_ctx(), ""))
            .await
            .unwrap();
    assert_eq!(left, vec!["rbd_directory".to_owned()]);
}

#[tokio::test]
async fn names_are_unique_and_renames_move_them() {
    let images = setup().await;
    images.create("a", &CreateOptions::new(MIB)).await.unwrap();
    let err = images
        .create("a", &CreateOptions::new(MIB))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    images.create("b", &CreateOptions::new(MIB)).await.unwrap();
    assert_eq!(
        images.rename("a", "b").await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    images.rename("a", "c").await.unwrap();
    let names: Vec<String> = images.list().await.unwrap().into_keys().collect();
    assert_eq!(names, vec!["b", "c"]);
    assert_eq!(
        images
            .open("a", OpenOptions::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_second_writer_gets_the_lock_handed_over() {
    let images = setup().await;
    images.create("h", &CreateOptions::new(MIB)).await.unwrap();
    let first = images.open("h", OpenOptions::default()).await.unwrap();
    let second = images.open("h", OpenOptions::default()).await.unwrap();
    first.write(0, Bytes::from_static(b"first")).await.unwrap();
    second
        .write(0, Bytes::from_static(b"second"))
        .await
        .unwrap();
    // The snapshot taken through the second handle is seen by the first one's writes.
    second.snap_create("s").await.unwrap();
    first.write(0, Bytes::from_static(b"FIRST!")).await.unwrap();
    let at_s = images
        .open("h", OpenOptions::default().with_snap(Some("s".into())))
        .await
        .unwrap();
    assert_eq!(at_s.read(0, 6).await.unwrap(), "second");
    assert_eq!(second.read(0, 6).await.unwrap(), "FIRST!");
    for image in [first, second, at_s] {
        image.close().await.unwrap();
    }
}

#[tokio::test]
async fn compare_and_write_reports_the_first_differing_offset() {
    let images = setup().await;
    images.create("c", &CreateOptions::new(MIB)).await.unwrap();
    let image = images.open("c", OpenOptions::default()).await.unwrap();
    image
        .write(100, Bytes::from_static(b"abcdef"))
        .await
        .unwrap();
    image
        .compare_and_write(100, Bytes::from_static(b"abc"), Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    let err = image
        .compare_and_write(100, Bytes::from_static(b"xyZ"), Bytes::from_static(b"123"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch);
    assert!(err.to_string().contains("offset 102"), "{err}");
    assert_eq!(image.read(100, 6).await.unwrap(), "xyzdef");
    image.close().await.unwrap();
}

#[tokio::test]
async fn write_same_repeats_the_pattern() {
    let images = setup().await;
    images
        .create("w", &CreateOptions::new(MIB).with_order(16))
        .await
        .unwrap();
    let image = images.open("w", OpenOptions::default()).await.unwrap();
    image.write_same(1000, 300_000, b"ab").await.unwrap();
    let back = image.read(1000, 300_000).await.unwrap();
    assert!(back.chunks(2).all(|c| c == b"ab"));
    let err = image.write_same(0, 3, b"ab").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    image.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_several_objects_are_all_in_the_object_map() {
    // The embedded store yields at every operation, so the writes really interleave.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(rbdx_objstore_dir::DirStore::open(dir.path()).unwrap());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(store, IoCtx::new(pool));
    images
        .create("cw", &CreateOptions::new(5_000_000).with_order(20))
        .await
        .unwrap();
    let image = images.open("cw", OpenOptions::default()).await.unwrap();
    // The first writes race with taking the lock and loading the object map.
    let (a, b, c) = tokio::join!(
        image.write(0, pattern(1, 1 << 20)),
        image.write(4 << 20, pattern(2, 100_000)),
        image.write(4_900_000, pattern(3, 100_000))
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let map = head_map(&images, &image).await;
    let written: Vec<u64> = (0..map.len()).filter(|&i| map.get(i).may_exist()).collect();
    assert_eq!(written, vec![0, 4]);
    image.close().await.unwrap();
}
