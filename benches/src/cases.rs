//! The object-store cases every backend benchmark runs, timed by the caller (criterion's
//! `iter_custom`): whole 4 MiB object writes and reads, 4 KiB writes at random offsets, and
//! small metadata batches, each with a given number of operations in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, SnapContext, WriteOp};

use crate::Offsets;

/// Size of the objects written and read.
pub const OBJECT: usize = 4 << 20;
/// Number of objects the cases work on.
pub const OBJECTS: u64 = 64;

/// Returns the name of benchmark object `i`.
pub fn oid(i: u64) -> String {
    format!("rbd_data.bench.{i:016x}")
}

/// Returns the runtime the benchmarks drive stores with.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// Runs `iters` calls of `op(i)` with `depth` in flight and returns the elapsed time.
pub async fn drive<F, Fut>(iters: u64, depth: u64, op: F) -> Duration
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
pub fn drive_blocking<F>(iters: u64, depth: u64, op: F) -> Duration
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

/// A store with the benchmark objects in place, and the cases run on it.
#[derive(Debug, Clone)]
pub struct StoreCases {
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
    data: Bytes,
    small: Bytes,
}

fn check<T>(result: rbdx_objstore::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

impl StoreCases {
    /// Writes the [`OBJECTS`] objects of [`OBJECT`] bytes each into `io` and flushes.
    pub async fn prepare(store: Arc<dyn ObjectStore>, io: IoCtx) -> StoreCases {
        let data = Bytes::from(vec![0xa5u8; OBJECT]);
        for i in 0..OBJECTS {
            check(store.write_full(&io, &oid(i), data.clone()).await);
        }
        check(store.flush().await);
        StoreCases {
            store,
            io,
            data,
            small: Bytes::from(vec![0x3cu8; 4096]),
        }
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whole-object writes over the existing objects.
    pub async fn write_4m(&self, iters: u64, depth: u64) -> Duration {
        let me = self.clone();
        drive(iters, depth, move |i| {
            let me = me.clone();
            async move {
                check(me.store.write(&me.io, &oid(i % OBJECTS), 0, me.data).await);
            }
        })
        .await
    }

    /// Whole-object reads.
    pub async fn read_4m(&self, iters: u64, depth: u64) -> Duration {
        let me = self.clone();
        drive(iters, depth, move |i| {
            let me = me.clone();
            async move {
                let got = check(me.store.read(&me.io, &oid(i % OBJECTS), 0, None).await);
                assert_eq!(got.len(), OBJECT);
            }
        })
        .await
    }

    /// 4 KiB writes at random aligned offsets of the objects.
    pub async fn randwrite_4k(&self, iters: u64, depth: u64) -> Duration {
        let me = self.clone();
        drive(iters, depth, move |i| {
            let me = me.clone();
            async move {
                let (object, offset) = random_4k(i);
                check(me.store.write(&me.io, &oid(object), offset, me.small).await);
            }
        })
        .await
    }

    /// Batches setting two omap keys and one xattr on header-like objects.
    pub async fn omap_batch(&self, iters: u64, depth: u64) -> Duration {
        let me = self.clone();
        drive(iters, depth, move |i| {
            let me = me.clone();
            async move {
                let op = WriteOp::new()
                    .omap_set([
                        ("object_map_state", format!("{i}")),
                        ("flags", "0".to_owned()),
                    ])
                    .xattr_set("lock.tag", Bytes::from_static(b"internal"));
                let header = format!("rbd_header.{}", i % OBJECTS);
                check(
                    me.store
                        .operate(&me.io, &header, &op, &SnapContext::empty())
                        .await,
                );
            }
        })
        .await
    }
}

/// The object and offset of random 4 KiB write `i` (the same sequence for every store).
pub fn random_4k(i: u64) -> (u64, u64) {
    let mut rng = Offsets::new(i.wrapping_mul(0x9e37_79b9) + 7);
    let object = rng.below(OBJECTS);
    (object, rng.below(OBJECT as u64 / 4096) * 4096)
}
