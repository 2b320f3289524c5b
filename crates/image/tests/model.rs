//! Model-based property test: random sequences of writes, discards, zeroing, resizes,
//! snapshot creates/removes/rollbacks, clones and flattens, checked after every step against a
//! plain in-memory model of each image and each snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use rbdx_image::{CreateOptions, Image, Images, OpenOptions};
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};

const SIZE: u64 = 256 * 1024;
const ORDER: u8 = 16;

#[derive(Debug, Clone)]
enum Op {
    Write {
        image: usize,
        offset: u64,
        len: u64,
        seed: u8,
    },
    Discard {
        image: usize,
        offset: u64,
        len: u64,
    },
    Zero {
        image: usize,
        offset: u64,
        len: u64,
    },
    Resize {
        image: usize,
        size: u64,
    },
    SnapCreate {
        image: usize,
    },
    SnapRemove {
        image: usize,
        snap: usize,
    },
    Rollback {
        image: usize,
        snap: usize,
    },
    Clone {
        image: usize,
        snap: usize,
    },
    Flatten {
        image: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let image = 0usize..4;
    let extent = (0..SIZE, 1u64..100_000);
    prop_oneof![
        4 => (image.clone(), extent.clone(), any::<u8>())
            .prop_map(|(image, (offset, len), seed)| Op::Write { image, offset, len, seed }),
        2 => (image.clone(), extent.clone()).prop_map(|(image, (offset, len))| Op::Discard { image, offset, len }),
        1 => (image.clone(), extent).prop_map(|(image, (offset, len))| Op::Zero { image, offset, len }),
        1 => (image.clone(), 1u64..(2 * SIZE)).prop_map(|(image, size)| Op::Resize { image, size }),
        2 => image.clone().prop_map(|image| Op::SnapCreate { image }),
        1 => (image.clone(), 0usize..4).prop_map(|(image, snap)| Op::SnapRemove { image, snap }),
        1 => (image.clone(), 0usize..4).prop_map(|(image, snap)| Op::Rollback { image, snap }),
        1 => (image.clone(), 0usize..4).prop_map(|(image, snap)| Op::Clone { image, snap }),
        1 => image.prop_map(|image| Op::Flatten { image }),
    ]
}

/// What an image should contain.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    head: Vec<u8>,
    /// Snapshot name -> (content, protected).
    snaps: BTreeMap<String, (Vec<u8>, bool)>,
    /// How many clones use each snapshot.
    children: BTreeMap<String, usize>,
    /// The (image index, snapshot) this image was cloned from, while still linked.
    parent: Option<(usize, String)>,
}

fn fill(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 249) as u8) | 1)
        .collect()
}

fn clip(offset: u64, len: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 {
        return None;
    }
    let offset = offset % size;
    Some((offset, len.min(size - offset)))
}

struct World {
    images: Images,
    open: Vec<Image>,
    models: Vec<Model>,
    counter: usize,
}

impl World {
    async fn new(striped: bool) -> World {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let pool = store.pool_create("rbd").await.unwrap();
        let images = Images::new(store, IoCtx::new(pool));
        let mut opts = CreateOptions::new(SIZE).with_order(ORDER);
        if striped {
            opts = opts.with_striping(16 * 1024, 3);
        }
        images.create("img0", &opts).await.unwrap();
        let image = images.open("img0", OpenOptions::default()).await.unwrap();
        World {
            images,
            open: vec![image],
            models: vec![Model {
                name: "img0".into(),
                head: vec![0; SIZE as usize],
                snaps: BTreeMap::new(),
                children: BTreeMap::new(),
                parent: None,
            }],
            counter: 0,
        }
    }

    async fn apply(&mut self, op: &Op) {
        let pick = |i: usize, n: usize| i % n;
        match *op {
            Op::Write {
                image,
                offset,
                len,
                seed,
            } => {
                let i = pick(image, self.open.len());
                let size = self.models[i].head.len() as u64;
                let Some((offset, len)) = clip(offset, len, size) else {
                    return;
                };
                let data = fill(seed, len);
                self.open[i]
                    .write(offset, Bytes::from(data.clone()))
                    .await
                    .unwrap();
                self.models[i].head[offset as usize..(offset + len) as usize]
                    .copy_from_slice(&data);
            }
            Op::Discard { image, offset, len } | Op::Zero { image, offset, len } => {
                let i = pick(image, self.open.len());
                let size = self.models[i].head.len() as u64;
                let Some((offset, len)) = clip(offset, len, size) else {
                    return;
                };
                if matches!(op, Op::Discard { .. }) {
                    self.open[i].discard(offset, len).await.unwrap();
                } else {
                    self.open[i].write_zeroes(offset, len).await.unwrap();
                }
                self.models[i].head[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Resize { image, size } => {
                let i = pick(image, self.open.len());
                self.open[i].resize(size, true).await.unwrap();
                self.models[i].head.resize(size as usize, 0);
            }
            Op::SnapCreate { image } => {
                let i = pick(image, self.open.len());
                self.counter += 1;
                let name = format!("s{}", self.counter);
                self.open[i].snap_create(&name).await.unwrap();
                let head = self.models[i].head.clone();
                self.models[i].snaps.insert(name, (head, false));
            }
            Op::SnapRemove { image, snap } => {
                let i = pick(image, self.open.len());
                let Some(name) = self.nth_snap(i, snap) else {
                    return;
                };
                if self.models[i].children.get(&name).copied().unwrap_or(0) > 0 {
                    return;
                }
                if self.models[i].snaps[&name].1 {
                    self.open[i]
                        .snap_set_protection(&name, false)
                        .await
                        .unwrap();
                }
                self.open[i].snap_remove(&name).await.unwrap();
                self.models[i].snaps.remove(&name);
            }
            Op::Rollback { image, snap } => {
                let i = pick(image, self.open.len());
                let Some(name) = self.nth_snap(i, snap) else {
                    return;
                };
                self.open[i].snap_rollback(&name, &|_, _| {}).await.unwrap();
                self.models[i].head = self.models[i].snaps[&name].0.clone();
            }
            Op::Clone { image, snap } => {
                if self.open.len() >= 4 {
                    return;
                }
                let i = pick(image, self.open.len());
                let Some(name) = self.nth_snap(i, snap) else {
                    return;
                };
                if !self.models[i].snaps[&name].1 {
                    self.open[i].snap_set_protection(&name, true).await.unwrap();
                    self.models[i].snaps.get_mut(&name).unwrap().1 = true;
                }
                let child = format!("img{}", self.open.len());
                self.images
                    .clone_from(&self.open[i], &name, &child, &CreateOptions::default())
                    .await
                    .unwrap();
                self.open.push(
                    self.images
                        .open(&child, OpenOptions::default())
                        .await
                        .unwrap(),
                );
                *self.models[i].children.entry(name.clone()).or_default() += 1;
                self.models.push(Model {
                    name: child,
                    head: self.models[i].snaps[&name].0.clone(),
                    snaps: BTreeMap::new(),
                    children: BTreeMap::new(),
                    parent: Some((i, name)),
                });
            }
            Op::Flatten { image } => {
                let i = pick(image, self.open.len());
                // A head flattened before keeps no parent even where its snapshots still
                // keep one: flattening it again is refused ("not a clone"), as with rbd.
                if self.open[i].header().parent.is_none() {
                    return;
                }
                let Some((p, snap)) = self.models[i].parent.take() else {
                    return;
                };
                self.open[i].flatten(&|_, _| {}).await.unwrap();
                // Snapshots that see a different part of the parent than the head keep it.
                let header = self.open[i].header();
                if header.snapshots.values().any(|s| s.parent.is_some()) {
                    self.models[i].parent = Some((p, snap));
                } else {
                    *self.models[p].children.get_mut(&snap).unwrap() -= 1;
                }
            }
        }
    }

    fn nth_snap(&self, i: usize, n: usize) -> Option<String> {
        let snaps = &self.models[i].snaps;
        if snaps.is_empty() {
            return None;
        }
        snaps.keys().nth(n % snaps.len()).cloned()
    }

    async fn check(&self, step: usize, op: &Op) {
        for (image, model) in self.open.iter().zip(&self.models) {
            assert_eq!(
                image.size(),
                model.head.len() as u64,
                "step {step} {op:?}: size of {}",
                model.name
            );
            let got = image.read(0, image.size()).await.unwrap();
            assert!(
                got == model.head,
                "step {step} {op:?}: head of {} differs",
                model.name
            );
            for (snap, (content, _)) in &model.snaps {
                let at = self
                    .images
                    .open(
                        &model.name,
                        OpenOptions::default().with_snap(Some(snap.clone())),
                    )
                    .await
                    .unwrap();
                let got = at.read(0, at.size()).await.unwrap();
                at.close().await.unwrap();
                assert!(
                    got == *content,
                    "step {step} {op:?}: {}@{snap} differs",
                    model.name
                );
            }
        }
    }
}

fn run(ops: Vec<Op>, striped: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut world = World::new(striped).await;
        for (step, op) in ops.iter().enumerate() {
            world.apply(op).await;
            world.check(step, op).await;
        }
        for image in world.open {
            image.close().await.unwrap();
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn images_and_snapshots_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, false);
    }

    #[test]
    fn striped_images_match_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        run(ops, true);
    }
}
