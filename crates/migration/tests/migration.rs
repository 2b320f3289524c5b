//! Migration on the in-memory store: live between pools (snapshots, a clone parent, writes
//! during the migration), import-only from raw files with snapshots, abort.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_format_raw as _;
use rbdx_image::migration::MigrationState;
use rbdx_image::{Cluster, CreateOptions, ErrorKind, Image, Images, OpenOptions};
use rbdx_migration::{ExecuteOptions, Migration, Opener, PrepareOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
use rbdx_source::{OpenContext, Registry};
use rbdx_stream_file as _;

const MIB: u64 = 1 << 20;

fn pattern(seed: u8, len: u64) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect::<Vec<u8>>()
        .into()
}

struct Setup {
    store: Arc<dyn ObjectStore>,
    a: Images,
    b: Images,
    migration: Migration,
}

async fn setup() -> Setup {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let opener = Arc::new(Opener::new(OpenContext::new(Arc::new(Registry::builtin()))));
    let cluster = Cluster::new(store.clone()).with_sources(opener.clone());
    let a = Images::new(
        cluster.clone(),
        IoCtx::new(store.pool_create("a").await.unwrap()),
    );
    let b = Images::new(
        cluster.clone(),
        IoCtx::new(store.pool_create("b").await.unwrap()),
    );
    Setup {
        migration: Migration::new(cluster, opener),
        store,
        a,
        b,
    }
}

async fn read_all(images: &Images, name: &str, snap: Option<&str>) -> Vec<u8> {
    let image = images
        .open(
            name,
            OpenOptions::default()
                .with_read_only(true)
                .with_snap(snap.map(str::to_owned)),
        )
        .await
        .unwrap();
    let data = image.read(0, image.size()).await.unwrap().to_vec();
    image.close().await.unwrap();
    data
}

/// Contents of an image: the head and each snapshot by name.
async fn contents(images: &Images, name: &str, snaps: &[&str]) -> Vec<Vec<u8>> {
    let mut out = vec![read_all(images, name, None).await];
    for s in snaps {
        out.push(read_all(images, name, Some(s)).await);
    }
    out
}

/// A 12 MiB image in 1 MiB objects with two snapshots and a different head.
async fn source(images: &Images, name: &str) -> Image {
    images
        .create(name, &CreateOptions::new(12 * MIB).with_order(20))
        .await
        .unwrap();
    let image = images.open(name, OpenOptions::default()).await.unwrap();
    image.write(0, pattern(1, 3 * MIB)).await.unwrap();
    image.write(8 * MIB, pattern(2, MIB)).await.unwrap();
    image.snap_create("s1").await.unwrap();
    image.write(MIB + 7, pattern(3, 100)).await.unwrap();
    image.discard(8 * MIB, MIB).await.unwrap();
    image.write(10 * MIB, pattern(4, MIB / 2)).await.unwrap();
    image.snap_create("s2").await.unwrap();
    image.write(2 * MIB, pattern(5, MIB)).await.unwrap();
    image.discard(0, MIB).await.unwrap();
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_between_pools_keeps_every_snapshot_and_client_writes() {
    let s = setup().await;
    let src = source(&s.a, "disk").await;
    src.close().await.unwrap();
    let before = contents(&s.a, "disk", &["s1", "s2"]).await;

    let report = s
        .migration
        .prepare_live(&s.a, "disk", &s.b, "moved", &PrepareOptions::default())
        .await
        .unwrap();
    assert_eq!(report.size, 12 * MIB);
    assert_eq!(report.snapshots.len(), 2);
    assert_eq!(
        s.a.lookup("disk").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(contents(&s.b, "moved", &["s1", "s2"]).await, before);
    let status = s.migration.status(&s.b, "moved").await.unwrap().unwrap();
    assert_eq!(status.spec.state, MigrationState::Prepared);
    assert!(
        s.migration
            .verify(&s.b, "moved", &|_, _| {})
            .await
            .unwrap()
            .is_empty()
    );

    // A client writes into an object not copied yet: copy-up keeps the rest and history.
    let dst = s.b.open("moved", OpenOptions::default()).await.unwrap();
    dst.write(10 * MIB + 5, Bytes::from_static(b"client"))
        .await
        .unwrap();
    dst.close().await.unwrap();
    let mut expected = before.clone();
    expected[0][(10 * MIB + 5) as usize..(10 * MIB + 11) as usize].copy_from_slice(b"client");
    assert_eq!(contents(&s.b, "moved", &["s1", "s2"]).await, expected);

    let err = s
        .migration
        .commit(&s.b, "moved", false, &|_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not executed"), "{err}");

    let seen = std::sync::Mutex::new(Vec::new());
    s.migration
        .execute(&s.b, "moved", &ExecuteOptions::default(), &|done, total| {
            seen.lock().unwrap().push((done, total));
        })
        .await
        .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.last().is_some_and(|(d, t)| d == t && *t > 0),
        "{seen:?}"
    );
    let status = s.migration.status(&s.b, "moved").await.unwrap().unwrap();
    assert_eq!(status.spec.state, MigrationState::Executed);
    assert_eq!(status.progress.unwrap().percent(), 100);
    assert_eq!(contents(&s.b, "moved", &["s1", "s2"]).await, expected);
    let diffs = s.migration.verify(&s.b, "moved", &|_, _| {}).await.unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(
        (
            diffs[0].snapshot.as_deref(),
            diffs[0].offset,
            diffs[0].length
        ),
        (None, 10 * MIB, 4096)
    );

    s.migration
        .commit(&s.b, "moved", false, &|_, _| {})
        .await
        .unwrap();
    assert!(s.migration.status(&s.b, "moved").await.unwrap().is_none());
    assert!(s.a.trash_list().await.unwrap().is_empty());
    assert_eq!(contents(&s.b, "moved", &["s1", "s2"]).await, expected);
    let dst = s.b.open("moved", OpenOptions::default()).await.unwrap();
    let check = dst.object_map_check(&|_, _| {}).await.unwrap();
    assert!(
        check.missing.is_empty() && check.unreadable.is_empty(),
        "{check:?}"
    );
    dst.close().await.unwrap();
    let _ = s.store;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_puts_the_source_back_writable() {
    let s = setup().await;
    source(&s.a, "disk").await.close().await.unwrap();
    let before = contents(&s.a, "disk", &["s1", "s2"]).await;
    // Same name, new layout: the destination takes the name while the source is trashed.
    let options = PrepareOptions {
        create: CreateOptions::default().with_order(22),
        ..PrepareOptions::default()
    };
    s.migration
        .prepare_live(&s.a, "disk", &s.a, "disk", &options)
        .await
        .unwrap();
    let dst = s.a.open("disk", OpenOptions::default()).await.unwrap();
    assert_eq!(dst.layout().order(), 22);
    dst.write(0, Bytes::from_static(b"lost")).await.unwrap();
    dst.close().await.unwrap();
    s.migration.abort(&s.a, "disk", &|_, _| {}).await.unwrap();
    assert_eq!(contents(&s.a, "disk", &["s1", "s2"]).await, before);
    let src = s.a.open("disk", OpenOptions::default()).await.unwrap();
    assert_eq!(src.layout().order(), 20);
    src.write(0, Bytes::from_static(b"mine")).await.unwrap();
    src.close().await.unwrap();
    assert!(s.a.trash_list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_keep_their_parent_or_flatten() {
    let s = setup().await;
    s.a.create("base", &CreateOptions::new(4 * MIB).with_order(20))
        .await
        .unwrap();
    let base = s.a.open("base", OpenOptions::default()).await.unwrap();
    base.write(0, pattern(9, 4 * MIB)).await.unwrap();
    base.snap_create("gold").await.unwrap();
    base.snap_set_protection("gold", true).await.unwrap();
    for name in ["c1", "c2"] {
        s.a.clone_from(&base, "gold", name, &CreateOptions::default())
            .await
            .unwrap();
        let c = s.a.open(name, OpenOptions::default()).await.unwrap();
        c.write(MIB, pattern(7, 10)).await.unwrap();
        c.close().await.unwrap();
    }
    let expected = read_all(&s.a, "c1", None).await;
    for (name, flatten) in [("c1", false), ("c2", true)] {
        let options = PrepareOptions {
            flatten,
            ..PrepareOptions::default()
        };
        let moved = format!("{name}-moved");
        s.migration
            .prepare_live(&s.a, name, &s.b, &moved, &options)
            .await
            .unwrap();
        s.migration
            .execute(&s.b, &moved, &ExecuteOptions::default(), &|_, _| {})
            .await
            .unwrap();
        s.migration
            .commit(&s.b, &moved, false, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(read_all(&s.b, &moved, None).await, expected, "{name}");
        let image = s.b.open(&moved, OpenOptions::default()).await.unwrap();
        assert_eq!(image.header().parent.is_some(), !flatten, "{name}");
        image.close().await.unwrap();
    }
    // Only the unflattened one still uses gold.
    assert_eq!(base.children("gold").await.unwrap().len(), 1);
    base.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_only_from_raw_files_with_snapshots() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, seed) in [11u8, 12, 13].iter().enumerate() {
        let path = dir.path().join(format!("v{i}.raw"));
        let mut data = vec![0u8; (5 * MIB) as usize];
        let at = i as u64 * MIB;
        data[at as usize..(at + MIB) as usize].copy_from_slice(&pattern(*seed, MIB));
        // Sparse files: the holes are reported as such and never copied.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(5 * MIB).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &pattern(*seed, MIB), at).unwrap();
        files.push((path, data));
    }
    let stream = |p: &std::path::Path| serde_json::json!({"type": "file", "file_path": p});
    let spec = serde_json::json!({
        "type": "raw",
        "stream": stream(&files[2].0),
        "snapshots": [
            {"type": "raw", "name": "first", "stream": stream(&files[0].0)},
            {"type": "raw", "name": "second", "stream": stream(&files[1].0)},
        ]
    })
    .to_string();
    let report = s
        .migration
        .prepare_import(
            &spec,
            "raw".into(),
            &s.b,
            "imported",
            &PrepareOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.allocated, MIB);
    let want: Vec<Vec<u8>> = vec![files[2].1.clone(), files[0].1.clone(), files[1].1.clone()];
    assert_eq!(contents(&s.b, "imported", &["first", "second"]).await, want);
    s.migration
        .execute(&s.b, "imported", &ExecuteOptions::default(), &|_, _| {})
        .await
        .unwrap();
    s.migration
        .commit(&s.b, "imported", false, &|_, _| {})
        .await
        .unwrap();
    // The files may go now.
    drop(dir);
    assert_eq!(contents(&s.b, "imported", &["first", "second"]).await, want);
    let err = s
        .migration
        .prepare_import(
            &spec,
            "raw".into(),
            &s.b,
            "imported",
            &PrepareOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}
