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
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbdx_benches::cases::{OBJECT, OBJECTS, StoreCases, drive_blocking, random_4k, runtime};
use rbdx_benches::{PlainFile, bench_dir};
use rbdx_objstore::{IoCtx, ObjectStore};
use rbdx_objstore_dir::DirStore;

fn objstore(c: &mut Criterion) {
    let rt = runtime();
    let dir = bench_dir("objstore");
    let store = DirStore::open(dir.join("store")).unwrap_or_else(|e| panic!("open: {e}"));
    let cases = rt.block_on(async {
        let io = IoCtx::new(
            store
                .pool_create("bench")
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        StoreCases::prepare(Arc::new(store), io).await
    });
    let plain = PlainFile::create(&dir, OBJECTS * OBJECT as u64);
    let data = vec![0xa5u8; OBJECT];

    let mut group = c.benchmark_group("write-4m");
    group
        .throughput(Throughput::Bytes(OBJECT as u64))
        .sample_size(20);
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| rt.block_on(cases.write_4m(iters, 4)))
    });
    group.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            drive_blocking(iters, 4, |i| {
                plain.pwrite(&data, (i % OBJECTS) * OBJECT as u64)
            })
        })
    });
    group.finish();
    rt.block_on(cases.store().flush())
        .unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("read-4m");
    group
        .throughput(Throughput::Bytes(OBJECT as u64))
        .sample_size(20);
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| rt.block_on(cases.read_4m(iters, 4)))
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

    let small = vec![0x3cu8; 4096];
    for depth in [1u64, 16] {
        let mut group = c.benchmark_group(format!("randwrite-4k-qd{depth}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("dir", |b| {
            b.iter_custom(|iters| rt.block_on(cases.randwrite_4k(iters, depth)))
        });
        group.bench_function("plain", |b| {
            b.iter_custom(|iters| {
                drive_blocking(iters, depth, |i| {
                    let (object, offset) = random_4k(i);
                    plain.pwrite(&small, object * OBJECT as u64 + offset);
                })
            })
        });
        group.finish();
    }

    let mut group = c.benchmark_group("omap-batch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dir", |b| {
        b.iter_custom(|iters| rt.block_on(cases.omap_batch(iters, 16)))
    });
    group.finish();
    drop(cases);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = objstore
}
criterion_main!(benches);
