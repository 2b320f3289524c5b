//! Property test: after random writes, discards, zeroing, resizes and snapshots, for every pair
//! of points (creation or a snapshot, then a later snapshot or the head), applying the diff to
//! the older point gives exactly the newer one; whole-object diffs cover the exact ones; and
//! the same holds with fast-diff off and with invalid object maps (the store fallback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use rbdx_image::{CreateOptions, Features, Image, Images, OpenOptions};
use rbdx_objstore::{ExtentSet, IoCtx, MemoryStore, ObjectStore};
use rbdx_snapdiff::{DiffOptions, Extent, Method};

const SIZE: u64 = 256 * 1024;
const ORDER: u8 = 16;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: u64, seed: u8 },
    Discard { offset: u64, len: u64 },
    Zero { offset: u64, len: u64 },
    Resize { size: u64 },
    Snap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SIZE, 1u64..80_000, any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => (0..SIZE, 1u64..150_000).prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => (0..SIZE, 1u64..50_000).prop_map(|(offset, len)| Op::Zero { offset, len }),
        1 => (SIZE / 4..2 * SIZE).prop_map(|size| Op::Resize { size }),
        3 => Just(Op::Snap),
    ]
}

/// How the image keeps its maps.
#[derive(Debug, Clone, Copy)]
enum Maps {
    FastDiff,
    ObjectMapOnly,
    None,
}

fn fill(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8) | 1)
        .collect()
}

/// Runs `ops` on a fresh image; returns the image (open at its head) and the content of every
/// snapshot (in order) and of the head.
async fn build(ops: &[Op], maps: Maps, striped: bool) -> (Images, Image, Vec<(String, Vec<u8>)>) {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(store, IoCtx::new(pool));
    let features = match maps {
        Maps::FastDiff => Features::DEFAULT,
        Maps::ObjectMapOnly => Features(Features::DEFAULT.0 & !Features::FAST_DIFF.0),
        Maps::None => Features::LAYERING,
    };
    let mut opts = CreateOptions::new(SIZE)
        .with_order(ORDER)
        .with_features(features);
    if striped {
        opts = opts.with_striping(16 * 1024, 3);
    }
    images.create("img", &opts).await.unwrap();
    let image = images.open("img", OpenOptions::default()).await.unwrap();
    let mut head = vec![0u8; SIZE as usize];
    let mut points = Vec::new();
    for op in ops {
        let size = head.len() as u64;
        match *op {
            Op::Write { offset, len, seed } => {
                let offset = offset % size;
                let len = len.min(size - offset);
                let data = fill(seed, len);
                image
                    .write(offset, Bytes::from(data.clone()))
                    .await
                    .unwrap();
                head[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Op::Discard { offset, len } | Op::Zero { offset, len } => {
                let offset = offset % size;
                let len = len.min(size - offset);
                if matches!(op, Op::Discard { .. }) {
                    image.discard(offset, len).await.unwrap();
                } else {
                    image.write_zeroes(offset, len).await.unwrap();
                }
                head[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Resize { size } => {
                image.resize(size, true).await.unwrap();
                head.resize(size as usize, 0);
            }
            Op::Snap => {
                let name = format!("s{}", points.len());
                image.snap_create(&name).await.unwrap();
                points.push((name, head.clone()));
            }
        }
    }
    points.push(("HEAD".to_owned(), head));
    (images, image, points)
}

/// Applies `diff` to `older` (resized to `size`) reading data from `newer`.
fn apply(older: &[u8], newer: &[u8], extents: &[Extent], size: u64) -> Vec<u8> {
    let mut out = older.to_vec();
    out.resize(size as usize, 0);
    for e in extents {
        let range = e.offset as usize..e.end() as usize;
        if e.data {
            out[range.clone()].copy_from_slice(&newer[range]);
        } else {
            out[range].fill(0);
        }
    }
    out
}

async fn check_all_pairs(ops: Vec<Op>, maps: Maps, striped: bool) {
    let (images, image, points) = build(&ops, maps, striped).await;
    for (t, (to_name, to_content)) in points.iter().enumerate() {
        let view = if to_name == "HEAD" {
            image.clone()
        } else {
            images
                .open(
                    "img",
                    OpenOptions::default().with_snap(Some(to_name.clone())),
                )
                .await
                .unwrap()
        };
        for f in 0..=t {
            let (from, older): (Option<String>, Vec<u8>) = if f == 0 {
                (None, Vec::new())
            } else {
                (Some(points[f - 1].0.clone()), points[f - 1].1.clone())
            };
            let exact =
                rbdx_snapdiff::diff(&view, &DiffOptions::default().with_from_snap(from.clone()))
                    .await
                    .unwrap();
            assert_eq!(exact.size, to_content.len() as u64);
            let got = apply(&older, to_content, &exact.extents, exact.size);
            assert!(
                got == *to_content,
                "{from:?} -> {to_name} ({maps:?}, method {:?}): applying {:?} does not give the newer point",
                exact.method,
                exact.extents
            );
            let whole = rbdx_snapdiff::diff(
                &view,
                &DiffOptions::default()
                    .with_from_snap(from.clone())
                    .with_whole_object(true),
            )
            .await
            .unwrap();
            let covered = ExtentSet::from_extents(
                whole
                    .extents
                    .iter()
                    .map(|e| rbdx_objstore::Extent::new(e.offset, e.length)),
            );
            for e in &exact.extents {
                assert!(
                    covered.contains_range(e.offset, e.length),
                    "{from:?} -> {to_name}: whole-object diff misses {e:?}"
                );
            }
            let got = apply(&older, to_content, &whole.extents, whole.size);
            assert!(
                got == *to_content,
                "{from:?} -> {to_name}: whole-object diff wrong"
            );
            let expected_method = match maps {
                Maps::FastDiff => Method::FastDiff,
                Maps::ObjectMapOnly => Method::ObjectMap,
                Maps::None => Method::Store,
            };
            assert_eq!(exact.method, expected_method);
        }
        if to_name != "HEAD" {
            view.close().await.unwrap();
        }
    }
    image.close().await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn diffs_applied_to_the_older_point_give_the_newer_one(
        ops in proptest::collection::vec(op(), 1..40),
        striped in any::<bool>(),
    ) {
        runtime().block_on(check_all_pairs(ops, Maps::FastDiff, striped));
    }

    #[test]
    fn diffs_without_fast_diff_or_without_maps_are_as_exact(
        ops in proptest::collection::vec(op(), 1..30),
        with_map in any::<bool>(),
    ) {
        let maps = if with_map { Maps::ObjectMapOnly } else { Maps::None };
        runtime().block_on(check_all_pairs(ops, maps, false));
    }
}

#[tokio::test]
async fn a_clone_diffed_from_creation_includes_what_its_parent_shows() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let pool = store.pool_create("rbd").await.unwrap();
    let images = Images::new(store, IoCtx::new(pool));
    let opts = CreateOptions::new(SIZE).with_order(ORDER);
    images.create("parent", &opts).await.unwrap();
    let parent = images.open("parent", OpenOptions::default()).await.unwrap();
    parent
        .write(10_000, Bytes::from(fill(7, 150_000)))
        .await
        .unwrap();
    parent.snap_create("base").await.unwrap();
    parent.snap_set_protection("base", true).await.unwrap();
    images
        .clone_from(&parent, "base", "child", &CreateOptions::new(SIZE))
        .await
        .unwrap();
    let child = images.open("child", OpenOptions::default()).await.unwrap();
    child
        .write(70_000, Bytes::from(fill(9, 5_000)))
        .await
        .unwrap();
    child.discard(140_000, 70_000).await.unwrap();
    let expected = child.read(0, SIZE).await.unwrap();

    let full = rbdx_snapdiff::diff(&child, &DiffOptions::default())
        .await
        .unwrap();
    assert!(apply(&[], &expected, &full.extents, full.size) == expected);
    let own = rbdx_snapdiff::diff(&child, &DiffOptions::default().with_include_parent(false))
        .await
        .unwrap();
    let own_bytes: u64 = own
        .extents
        .iter()
        .filter(|e| e.data)
        .map(|e| e.length)
        .sum();
    let full_bytes: u64 = full
        .extents
        .iter()
        .filter(|e| e.data)
        .map(|e| e.length)
        .sum();
    assert!(own_bytes < full_bytes, "{own:?} vs {full:?}");
    child.close().await.unwrap();
    parent.close().await.unwrap();
}
