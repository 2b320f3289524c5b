//! `Image::allocation`: holes and data from the object map, from the store without one, at
//! snapshots, and through a clone's parent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{Allocation, CreateOptions, Features, Images, OpenOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};

const MIB: u64 = 1 << 20;

fn run(offset: u64, length: u64, data: bool) -> Allocation {
    Allocation {
        offset,
        length,
        data,
    }
}

async fn images() -> Images {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    Images::new(store, IoCtx::new(pool))
}

#[tokio::test]
async fn holes_follow_the_object_map_or_the_store_at_the_head_and_at_snapshots() {
    let images = images().await;
    let without_map = Features::DEFAULT
        .without(Features::OBJECT_MAP)
        .without(Features::FAST_DIFF);
    for (name, features) in [("mapped", Features::DEFAULT), ("unmapped", without_map)] {
        let opts = CreateOptions::new(8 * MIB)
            .with_order(20)
            .with_features(features);
        images.create(name, &opts).await.unwrap();
        let image = images.open(name, OpenOptions::default()).await.unwrap();
        image
            .write(MIB + 5, Bytes::from_static(b"one"))
            .await
            .unwrap();
        image
            .write(5 * MIB, Bytes::from(vec![9u8; 2 * MIB as usize]))
            .await
            .unwrap();
        image.snap_create("s1").await.unwrap();
        image.discard(5 * MIB, MIB).await.unwrap();

        let head = vec![
            run(0, MIB, false),
            run(MIB, MIB, true),
            run(2 * MIB, 4 * MIB, false),
            run(6 * MIB, MIB, true),
            run(7 * MIB, MIB, false),
        ];
        assert_eq!(image.allocation(0, 8 * MIB).await.unwrap(), head, "{name}");
        // A reader that does not hold the lock sees the same.
        let other = images
            .open(name, OpenOptions::default().with_read_only(true))
            .await
            .unwrap();
        assert_eq!(other.allocation(0, 8 * MIB).await.unwrap(), head, "{name}");
        // Ranges inside objects are cut to the range.
        assert_eq!(
            image.allocation(MIB / 2, 2 * MIB).await.unwrap(),
            vec![
                run(MIB / 2, MIB / 2, false),
                run(MIB, MIB, true),
                run(2 * MIB, MIB / 2, false)
            ]
        );
        let snap = images
            .open(name, OpenOptions::default().with_snap(Some("s1".into())))
            .await
            .unwrap();
        assert_eq!(
            snap.allocation(0, 8 * MIB).await.unwrap(),
            vec![
                run(0, MIB, false),
                run(MIB, MIB, true),
                run(2 * MIB, 3 * MIB, false),
                run(5 * MIB, 2 * MIB, true),
                run(7 * MIB, MIB, false),
            ],
            "{name}"
        );
        assert!(image.allocation(7 * MIB, 2 * MIB).await.is_err());
    }
}

#[tokio::test]
async fn a_clone_shows_its_parents_allocation_where_it_has_no_object() {
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
    child.resize(6 * MIB, false).await.unwrap();
    child
        .write(3 * MIB, Bytes::from_static(b"x"))
        .await
        .unwrap();
    child
        .write(5 * MIB, Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(
        child.allocation(0, 6 * MIB).await.unwrap(),
        vec![
            run(0, MIB, true),
            run(MIB, 2 * MIB, false),
            run(3 * MIB, MIB, true),
            run(4 * MIB, MIB, false),
            run(5 * MIB, MIB, true),
        ]
    );
}

#[tokio::test]
async fn exact_allocation_finds_holes_inside_objects_and_keeps_the_parent_below_absent_ones() {
    let images = images().await;
    images
        .create("base", &CreateOptions::new(4 * MIB).with_order(20))
        .await
        .unwrap();
    let base = images.open("base", OpenOptions::default()).await.unwrap();
    base.write(64 << 10, Bytes::from(vec![1u8; 4096]))
        .await
        .unwrap();
    base.write(MIB + 8192, Bytes::from(vec![2u8; 4096]))
        .await
        .unwrap();
    base.snap_create("gold").await.unwrap();
    base.snap_set_protection("gold", true).await.unwrap();
    assert_eq!(
        base.allocation_exact(0, 2 * MIB).await.unwrap(),
        vec![
            run(0, 64 << 10, false),
            run(64 << 10, 4096, true),
            run((64 << 10) + 4096, MIB + 8192 - (64 << 10) - 4096, false),
            run(MIB + 8192, 4096, true),
            run(MIB + 12288, MIB - 12288, false),
        ]
    );
    images
        .clone_from(&base, "gold", "child", &CreateOptions::default())
        .await
        .unwrap();
    let child = images.open("child", OpenOptions::default()).await.unwrap();
    child
        .write(2 * MIB + 4096, Bytes::from(vec![3u8; 4096]))
        .await
        .unwrap();
    // Object 0 is absent in the child: the parent's exact extents show through. Object 1 is
    // the parent's until the child writes it; object 2 holds the child's write only.
    assert_eq!(
        child.allocation_exact(0, 3 * MIB).await.unwrap(),
        vec![
            run(0, 64 << 10, false),
            run(64 << 10, 4096, true),
            run((64 << 10) + 4096, MIB + 8192 - (64 << 10) - 4096, false),
            run(MIB + 8192, 4096, true),
            run(MIB + 12288, MIB + 4096 - 12288, false),
            run(2 * MIB + 4096, 4096, true),
            run(2 * MIB + 8192, MIB - 8192, false),
        ]
    );
    // The object-granular answer calls each existing object data in full.
    assert_eq!(
        child.allocation(2 * MIB, MIB).await.unwrap(),
        vec![run(2 * MIB, MIB, true)]
    );
    let snap = images
        .open(
            "base",
            OpenOptions::default().with_snap(Some("gold".into())),
        )
        .await
        .unwrap();
    assert_eq!(
        snap.allocation_exact(MIB, MIB).await.unwrap(),
        vec![
            run(MIB, 8192, false),
            run(MIB + 8192, 4096, true),
            run(MIB + 12288, MIB - 12288, false),
        ]
    );
}
