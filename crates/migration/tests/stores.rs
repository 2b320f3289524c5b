//! One process, several stores with different settings: two `dir` stores and a `memory`
//! store, each with its own drivers (journals laid out differently), a live migration in one,
//! deep copies from one to the next and an import-only migration from a native source in
//! another store; every view is compared byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_format_native as _;
use rbdx_image::{Cluster, CreateOptions, Features, Image, Images, OpenOptions};
use rbdx_journal::{JournalOptions, RbdxJournals};
use rbdx_migration::{ExecuteOptions, ImageCopyOptions, Migration, Opener, PrepareOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
use rbdx_source::{Clusters, OpenContext, Registry};

/// Stores by cluster name, as the rbdx tools resolve `cluster_name`.
struct Named(BTreeMap<String, Arc<dyn ObjectStore>>);

#[async_trait]
impl Clusters for Named {
    async fn store(
        &self,
        name: Option<&str>,
        _client: Option<&str>,
    ) -> rbdx_source::Result<Arc<dyn ObjectStore>> {
        let name = name.unwrap_or("here");
        self.0.get(name).cloned().ok_or_else(|| {
            rbdx_source::Error::new(
                rbdx_source::ErrorKind::NotFound,
                format!("no cluster {name}"),
            )
        })
    }
}

/// A store with its drivers: journals with `splay_width` objects per set, and sources opened
/// with the other stores reachable by name.
struct Site {
    cluster: Cluster,
    migration: Migration,
    images: Images,
}

async fn site(
    store: Arc<dyn ObjectStore>,
    splay_width: u64,
    others: &[(&str, Arc<dyn ObjectStore>)],
) -> Site {
    let pool = match store.pool_lookup("rbd").await {
        Ok(p) => p.id,
        Err(_) => store.pool_create("rbd").await.unwrap(),
    };
    let mut names: BTreeMap<String, Arc<dyn ObjectStore>> = others
        .iter()
        .map(|(n, s)| ((*n).to_owned(), s.clone()))
        .collect();
    names.insert("here".into(), store.clone());
    let ctx = OpenContext::new(Arc::new(Registry::builtin())).with_clusters(Arc::new(Named(names)));
    let opener = Arc::new(Opener::new(ctx));
    let journals = RbdxJournals {
        options: JournalOptions {
            splay_width,
            ..JournalOptions::default()
        },
    };
    let cluster = Cluster::new(store)
        .with_journals(Arc::new(journals))
        .with_sources(opener.clone());
    Site {
        images: Images::new(cluster.clone(), IoCtx::new(pool)),
        migration: Migration::new(cluster.clone(), opener),
        cluster,
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

async fn views(images: &Images, name: &str) -> Vec<Vec<u8>> {
    let mut out = vec![read_all(images, name, None).await];
    for s in ["s1", "s2"] {
        out.push(read_all(images, name, Some(s)).await);
    }
    out
}

async fn write(image: &Image, seed: u8) {
    for n in 0..24u64 {
        let offset = (n * 7919 * 4096 + u64::from(seed) * 8192) % (12 << 20);
        image
            .write(offset, Bytes::from(vec![seed.wrapping_add(n as u8); 4096]))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_dir_stores_and_a_memory_store_in_one_process() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a: Arc<dyn ObjectStore> =
        Arc::new(rbdx_objstore_dir::DirStore::open(dirs.0.path()).unwrap());
    let b: Arc<dyn ObjectStore> =
        Arc::new(rbdx_objstore_dir::DirStore::open(dirs.1.path()).unwrap());
    let m: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let site_a = site(a.clone(), 4, &[]).await;
    let site_b = site(b.clone(), 8, &[("a", a.clone())]).await;
    let site_m = site(m.clone(), 2, &[("b", b.clone())]).await;

    // A journaling image with two snapshots in A; each store's journals follow its settings.
    let journaled = CreateOptions::new(12 << 20)
        .with_order(20)
        .with_features(Features::DEFAULT.with(Features::JOURNALING));
    site_a.images.create("vm", &journaled).await.unwrap();
    site_b.images.create("other", &journaled).await.unwrap();
    let vm = site_a
        .images
        .open("vm", OpenOptions::default())
        .await
        .unwrap();
    write(&vm, 1).await;
    vm.snap_create("s1").await.unwrap();
    write(&vm, 2).await;
    vm.snap_create("s2").await.unwrap();
    write(&vm, 3).await;
    let id_a = vm.id().to_owned();
    vm.close().await.unwrap();
    let splay = |store: &Arc<dyn ObjectStore>, images: &Images, id: String| {
        let (store, io) = (store.clone(), images.io_ctx().clone());
        async move {
            rbdx_journal::Journal::open(store, io, &id)
                .await
                .unwrap()
                .meta()
                .splay_width
        }
    };
    assert_eq!(splay(&a, &site_a.images, id_a).await, 4);
    let id_b = site_b.images.lookup("other").await.unwrap();
    assert_eq!(splay(&b, &site_b.images, id_b).await, 8);
    let want = views(&site_a.images, "vm").await;

    // A live migration inside A, to another layout.
    let prepare = PrepareOptions {
        create: CreateOptions::default().with_order(21),
        ..PrepareOptions::default()
    };
    site_a
        .migration
        .prepare_live(&site_a.images, "vm", &site_a.images, "vm2", &prepare)
        .await
        .unwrap();
    let run = ExecuteOptions::default();
    site_a
        .migration
        .execute(&site_a.images, "vm2", &run, &|_, _| {})
        .await
        .unwrap();
    site_a
        .migration
        .commit(&site_a.images, "vm2", false, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(views(&site_a.images, "vm2").await, want);

    // A deep copy from A into B, then from B into the memory store.
    let copy = |from: &str| ImageCopyOptions {
        snapshots: true,
        source_cluster: Some(from.to_owned()),
        ..ImageCopyOptions::default()
    };
    for (src, dst, from) in [(&site_a, &site_b, "a"), (&site_b, &site_m, "b")] {
        let resumed = dst
            .migration
            .prepare_copy(&src.images, "vm2", &dst.images, "vm2", &copy(from))
            .await
            .unwrap();
        assert!(!resumed);
        dst.migration
            .execute(&dst.images, "vm2", &run, &|_, _| {})
            .await
            .unwrap();
        dst.migration
            .commit(&dst.images, "vm2", false, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(views(&dst.images, "vm2").await, want);
    }

    // An import-only migration into the memory store from a native source in A.
    let spec = r#"{"type":"native","cluster_name":"a","pool_name":"rbd","image_name":"vm2","snap_name":"s2"}"#;
    let site_m2 = site(m.clone(), 2, &[("a", a.clone())]).await;
    site_m2
        .migration
        .prepare_import(
            spec,
            "import".into(),
            &site_m2.images,
            "imported",
            &PrepareOptions::default(),
        )
        .await
        .unwrap();
    site_m2
        .migration
        .execute(&site_m2.images, "imported", &run, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(
        read_all(&site_m2.images, "imported", None).await,
        want[2],
        "the head of an import at s2 is s2"
    );
    // The stores stay apart: nothing of A's images shows up in B or the memory store.
    assert!(site_b.images.lookup("vm").await.is_err());
    assert!(site_m.cluster.store().pool_lookup("rbd").await.is_ok());
}
