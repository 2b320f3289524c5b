//! Round trips through the exchange formats: export format 2 into a new image, chains of
//! export-diff / import-diff, merge-diff, and the refusals that leave the target unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{CreateOptions, Image, Images, OpenOptions, Protection};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
use rbdx_snapdiff::import::{self, ImportOptions};
use rbdx_snapdiff::wire::Version;
use rbdx_snapdiff::{DiffOptions, export, merge};

const SIZE: u64 = 512 * 1024;

async fn images() -> Images {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    Images::new(store, IoCtx::new(pool))
}

fn fill(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add((i % 247) as u8) | 1)
            .collect::<Vec<u8>>(),
    )
}

/// Makes `src` with snapshots s1 (protected), s2 and s3, a resize and image metadata.
async fn source(images: &Images) -> Image {
    images
        .create("src", &CreateOptions::new(SIZE).with_order(16))
        .await
        .unwrap();
    let img = images.open("src", OpenOptions::default()).await.unwrap();
    img.write(1000, fill(1, 100_000)).await.unwrap();
    img.write(300_000, fill(2, 70_000)).await.unwrap();
    img.snap_create("s1").await.unwrap();
    img.snap_set_protection("s1", true).await.unwrap();
    img.write(50_000, fill(3, 4096)).await.unwrap();
    img.discard(300_000, 65536).await.unwrap();
    img.snap_create("s2").await.unwrap();
    img.resize(SIZE + 200_000, false).await.unwrap();
    img.write(SIZE + 10, fill(4, 9000)).await.unwrap();
    img.snap_create("s3").await.unwrap();
    img.write_zeroes(0, 20_000).await.unwrap();
    img.write(400_000, fill(5, 123)).await.unwrap();
    img.metadata_set("conf_rbd_cache", Bytes::from_static(b"false"))
        .await
        .unwrap();
    img
}

async fn content(images: &Images, name: &str, snap: Option<&str>) -> Bytes {
    let img = images
        .open(
            name,
            OpenOptions::default().with_snap(snap.map(str::to_owned)),
        )
        .await
        .unwrap();
    let data = img.read(0, img.size()).await.unwrap();
    img.close().await.unwrap();
    data
}

async fn view(images: &Images, name: &str, snap: Option<&str>) -> Image {
    images
        .open(
            name,
            OpenOptions::default().with_snap(snap.map(str::to_owned)),
        )
        .await
        .unwrap()
}

async fn export_diff(images: &Images, snap: Option<&str>, from: Option<&str>) -> Vec<u8> {
    let img = view(images, "src", snap).await;
    let mut out = Vec::new();
    export::export_diff(
        &img,
        &DiffOptions::default().with_from_snap(from.map(str::to_owned)),
        Version::V1,
        &mut out,
        &|_, _| {},
    )
    .await
    .unwrap();
    img.close().await.unwrap();
    out
}

async fn import_diff(target: &Image, diff: &[u8]) -> rbdx_image::Result<()> {
    let summary = import::validate(diff)?;
    import::check_target(target, &summary)?;
    import::apply_diff(target, std::io::Cursor::new(diff.to_vec()), 4096, &|_| {}).await?;
    Ok(())
}

#[tokio::test]
async fn export_format_2_round_trip_keeps_every_snapshot_and_property() {
    let images = images().await;
    let src = source(&images).await;
    let mut stream = Vec::new();
    export::export_image(&src, &mut stream, &|_, _| {})
        .await
        .unwrap();
    assert!(stream.starts_with(b"rbd image v2\n"));
    import::import_image(
        &images,
        "copy",
        std::io::Cursor::new(stream.clone()),
        &ImportOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    for snap in [Some("s1"), Some("s2"), Some("s3"), None] {
        assert!(
            content(&images, "src", snap).await == content(&images, "copy", snap).await,
            "{snap:?} differs"
        );
    }
    let copy = view(&images, "copy", None).await;
    let snaps = copy.snapshots().await.unwrap();
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s1", "s2", "s3"]);
    assert_eq!(snaps[0].protection, Protection::Protected);
    assert_eq!(snaps[1].protection, Protection::Unprotected);
    assert_eq!(snaps[2].size, SIZE + 200_000);
    assert_eq!(copy.layout().order(), 16);
    assert_eq!(
        copy.metadata_get("conf_rbd_cache").await.unwrap(),
        Bytes::from_static(b"false")
    );
    copy.close().await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn export_diff_chain_rebuilds_every_snapshot_on_another_image() {
    let images = images().await;
    let src = source(&images).await;
    images
        .create("dst", &CreateOptions::new(SIZE).with_order(16))
        .await
        .unwrap();
    let dst = view(&images, "dst", None).await;
    let chain = [
        (Some("s1"), None),
        (Some("s2"), Some("s1")),
        (Some("s3"), Some("s2")),
        (None, Some("s3")),
    ];
    for (to, from) in chain {
        let diff = export_diff(&images, to, from).await;
        import_diff(&dst, &diff).await.unwrap();
    }
    for snap in [Some("s1"), Some("s2"), Some("s3"), None] {
        assert!(
            content(&images, "src", snap).await == content(&images, "dst", snap).await,
            "{snap:?} differs"
        );
    }
    // The diffs hold only what changed: the s1 -> s2 diff is small.
    let small = export_diff(&images, Some("s2"), Some("s1")).await;
    assert!(small.len() < 150_000, "{} bytes", small.len());
    dst.close().await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn merged_diffs_apply_like_the_two_in_turn() {
    let images = images().await;
    let src = source(&images).await;
    let first = export_diff(&images, Some("s2"), None).await;
    let second = export_diff(&images, Some("s3"), Some("s2")).await;
    let mut merged = Vec::new();
    merge::merge_diff(&first[..], &second[..], &mut merged).unwrap();
    let summary = import::validate(&merged[..]).unwrap();
    assert_eq!(summary.from, None);
    assert_eq!(summary.to.as_deref(), Some("s3"));
    images
        .create("m", &CreateOptions::new(SIZE).with_order(16))
        .await
        .unwrap();
    let m = view(&images, "m", None).await;
    import_diff(&m, &merged).await.unwrap();
    assert!(content(&images, "m", Some("s3")).await == content(&images, "src", Some("s3")).await);
    let third = export_diff(&images, Some("s3"), Some("s1")).await;
    let mut out = Vec::new();
    assert!(merge::merge_diff(&first[..], &third[..], &mut out).is_err());
    m.close().await.unwrap();
    src.close().await.unwrap();
}

#[tokio::test]
async fn bad_diffs_are_refused_and_the_target_is_unchanged() {
    let images = images().await;
    let src = source(&images).await;
    images
        .create("t", &CreateOptions::new(SIZE).with_order(16))
        .await
        .unwrap();
    let t = view(&images, "t", None).await;
    t.write(0, fill(9, 5000)).await.unwrap();
    let before = content(&images, "t", None).await;
    // From a snapshot the target does not have.
    let diff = export_diff(&images, Some("s2"), Some("s1")).await;
    let err = import_diff(&t, &diff).await.unwrap_err();
    assert!(err.to_string().contains("s1"), "{err}");
    // Truncated, wrong banner, unknown tag.
    let full = export_diff(&images, Some("s1"), None).await;
    assert!(import_diff(&t, &full[..full.len() - 10]).await.is_err());
    let mut bad = full.clone();
    bad[0] = b'x';
    assert!(import_diff(&t, &bad).await.is_err());
    // An extent past the size the diff declares.
    let mut w = rbdx_snapdiff::wire::DiffWriter::new(Vec::new(), Version::V1).unwrap();
    w.header(None, Some("x"), None, 4096).unwrap();
    w.write(4000, &[1u8; 200]).unwrap();
    let past = w.end().unwrap();
    let err = import_diff(&t, &past).await.unwrap_err();
    assert!(err.to_string().contains("past the image size"), "{err}");
    assert!(content(&images, "t", None).await == before);
    assert!(t.snapshots().await.unwrap().is_empty());
    // A broken export-format-2 stream creates nothing.
    let mut stream = Vec::new();
    export::export_image(&src, &mut stream, &|_, _| {})
        .await
        .unwrap();
    let cut = stream[..stream.len() / 2].to_vec();
    assert!(
        import::import_image(
            &images,
            "broken",
            std::io::Cursor::new(cut),
            &ImportOptions::default(),
            &|_| {}
        )
        .await
        .is_err()
    );
    assert!(images.open("broken", OpenOptions::default()).await.is_err());
    t.close().await.unwrap();
    src.close().await.unwrap();
}
