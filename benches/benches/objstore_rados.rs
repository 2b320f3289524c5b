//! Object-store benchmarks of the `rados` backend on the Ceph cluster named by
//! `RBDX_BENCH_CEPH_CONF`, in a pool made for the run and removed after it. The same cases as
//! the `dir` benchmark (`<case>/rados`); `cargo xtask bench objstore --backend rados` runs
//! `rados bench` with the same object sizes and concurrency in the same run and prints both.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rbdx_benches::cases::{OBJECT, StoreCases, runtime};
use rbdx_objstore::{IoCtx, ObjectStore};
use rbdx_objstore_rados::{RadosConfig, RadosStore};

fn objstore_rados(c: &mut Criterion) {
    let conf = std::env::var("RBDX_BENCH_CEPH_CONF")
        .unwrap_or_else(|_| panic!("RBDX_BENCH_CEPH_CONF must name the cluster's ceph.conf"));
    let rt = runtime();
    let pool = format!("rbdx-bench-{}", std::process::id());
    let (store, cases) = rt.block_on(async {
        let store = RadosStore::connect(RadosConfig::from_ceph_conf(conf))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let io = IoCtx::new(
            store
                .pool_create(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let cases = StoreCases::prepare(Arc::new(store.clone()), io).await;
        (store, cases)
    });

    for (name, depth) in [("write-4m", 4), ("read-4m", 4)] {
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Bytes(OBJECT as u64))
            .sample_size(20);
        group.bench_function("rados", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    if name == "write-4m" {
                        cases.write_4m(iters, depth).await
                    } else {
                        cases.read_4m(iters, depth).await
                    }
                })
            })
        });
        group.finish();
    }
    for depth in [1u64, 16] {
        let mut group = c.benchmark_group(format!("randwrite-4k-qd{depth}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("rados", |b| {
            b.iter_custom(|iters| rt.block_on(cases.randwrite_4k(iters, depth)))
        });
        group.finish();
    }
    let mut group = c.benchmark_group("omap-batch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rados", |b| {
        b.iter_custom(|iters| rt.block_on(cases.omap_batch(iters, 16)))
    });
    group.finish();
    drop(cases);
    rt.block_on(store.pool_remove(&pool))
        .unwrap_or_else(|e| panic!("{e}"));
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = objstore_rados
}
criterion_main!(benches);
