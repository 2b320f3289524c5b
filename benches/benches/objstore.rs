//! Object-store benchmarks: the `dir` backend next to plain `pwrite`/`pread` on one
//! preallocated file in the same directory, with the same access pattern and concurrency.
//!
//! Cases (each `<case>/dir` and `<case>/plain`; `cargo xtask bench objstore` prints the table):
//! - `write-4m`: whole 4 MiB objects written over 64 existing objects (MB/s).
//! - `read-4m`: whole 4 MiB objects read (MB/s).
//! - `randwrite-4k-qd1`, `randwrite-4k-qd16`: 4 KiB writes at random aligned offsets of 64
//!   existing 4 MiB objects, one and sixteen in flight (IOPS).
//! - `omap-batch`: `operate` batches setting two omap keys and one xattr on 64 objects,
//!   sixteen in flight (ops/s; no plain-file equivalent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbdx_benches::{Offsets, PlainFile, bench_dir};
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, SnapContext, WriteOp};
use rbdx_objstore_dir::DirStore;

const OBJECT: usize = 4 << 20;
const OBJECTS: u64 = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn oid(i: u64) -> String {
    format!("rbd_data.bench.{i:016x}")
}

/// Runs `iters` calls of `op(i)` with `depth` in flight and returns the elapsed time.
async fn drive<F, Fut>(iters: u64, depth: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..depth {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = lane;
            while i < iters {
                op(i).await;
                i += depth;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("bench task: {e}"));
    }
    start.elapsed()
}

/// Runs `iters` calls of the blocking `op(i)` on `depth` threads.
fn drive_blocking<F>(iters: u64, depth: u64, op: F) -> Duration
where
    F: Fn(u64) + Send + Sync,
{
    let start = Instant::now();
    std::thread::scope(|scope| {
        for lane in 0..depth {
            let op = &op;
            scope.spawn(move || {
                let mut i = lane;
                while i < iters {
                    op(i);
                    i += depth;
                }
            });
        }
    });
    start.elapsed()
}

fn objstore(c: &mut Criterion) {
    let rt = runtime();
    let dir = bench_dir("objstore");
    let store = Arc::new(DirStore::open(dir.join("store")).unwrap_or_else(|e| panic!("open: {e}")));
    let io = rt
        .block_on(store.pool_create("bench"))
        .map(IoCtx::new)
        .unwrap_or_else(|e| panic!("{e}"));
    let data = Bytes::from(vec![0xa5u8; OBJECT]);
    rt.block_on(async {
        for i in 0..OBJECTS {
            store
                .write_full(&io, &oid(i), data.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let plain = PlainFile::create(&dir, OBJECTS * OBJECT as u64);

    let mut group = c.benchmark_group("write-4m");
    group
        .throughput(Throughput::Bytes(OBJECT as u64))
        .sample_size(20);
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| {
            let (store, io, data) = (store.clone(), io.clone(), data.clone());
            rt.block_on(drive(iters, 4, move |i| {
                let (store, io, data) = (store.clone(), io.clone(), data.clone());
                async move {
                    store
                        .write(&io, &oid(i % OBJECTS), 0, data)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }))
        })
    });
    group.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            drive_blocking(iters, 4, |i| {
                plain.pwrite(&data, (i % OBJECTS) * OBJECT as u64)
            })
        })
    });
    group.finish();
    rt.block_on(store.flush()).unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("read-4m");
    group
        .throughput(Throughput::Bytes(OBJECT as u64))
        .sample_size(20);
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| {
            let (store, io) = (store.clone(), io.clone());
            rt.block_on(drive(iters, 4, move |i| {
                let (store, io) = (store.clone(), io.clone());
                async move {
                    let got = store
                        .read(&io, &oid(i % OBJECTS), 0, None)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(got.len(), OBJECT);
                }
            }))
        })
    });
    group.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            drive_blocking(iters, 4, |i| {
                let mut buf = vec![0u8; OBJECT];
                plain.pread(&mut buf, (i % OBJECTS) * OBJECT as u64);
            })
        })
    });
    group.finish();

    for depth in [1u64, 16] {
        let mut group = c.benchmark_group(format!("randwrite-4k-qd{depth}"));
        group.throughput(Throughput::Elements(1));
        let small = Bytes::from(vec![0x3cu8; 4096]);
        group.bench_function("dir", |b| {
            b.iter_custom(|iters| {
                let (store, io, small) = (store.clone(), io.clone(), small.clone());
                rt.block_on(drive(iters, depth, move |i| {
                    let (store, io, small) = (store.clone(), io.clone(), small.clone());
                    async move {
                        let mut rng = Offsets::new(i.wrapping_mul(0x9e37_79b9) + 7);
                        let object = rng.below(OBJECTS);
                        let offset = rng.below(OBJECT as u64 / 4096) * 4096;
                        store
                            .write(&io, &oid(object), offset, small)
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }))
            })
        });
        group.bench_function("plain", |b| {
            b.iter_custom(|iters| {
                drive_blocking(iters, depth, |i| {
                    let mut rng = Offsets::new(i.wrapping_mul(0x9e37_79b9) + 7);
                    let object = rng.below(OBJECTS);
                    let offset = rng.below(OBJECT as u64 / 4096) * 4096;
                    plain.pwrite(&small, object * OBJECT as u64 + offset);
                })
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group("omap-batch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| {
            let (store, io) = (store.clone(), io.clone());
            rt.block_on(drive(iters, 16, move |i| {
                let (store, io) = (store.clone(), io.clone());
                async move {
                    let op = WriteOp::new()
                        .omap_set([
                            ("object_map_state", format!("{i}")),
                            ("flags", "0".to_owned()),
                        ])
                        .xattr_set("lock.tag", Bytes::from_static(b"internal"));
                    store
                        .operate(
                            &io,
                            &format!("rbd_header.{}", i % OBJECTS),
                            &op,
                            &SnapContext::empty(),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }))
        })
    });
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = objstore
}
criterion_main!(benches);
