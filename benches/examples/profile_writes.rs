//! Runs one store workload in a loop for profiling (`perf record`); not part of the suite.

use std::time::Instant;

use bytes::Bytes;
use rbdx_benches::bench_dir;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt};
use rbdx_objstore_dir::DirStore;

fn main() {
    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "small".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let dir = bench_dir("profile");
        let store = DirStore::open(dir.join("store")).unwrap_or_else(|e| panic!("{e}"));
        let io = IoCtx::new(
            store
                .pool_create("p")
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let big = Bytes::from(vec![1u8; 4 << 20]);
        for i in 0..64 {
            store
                .write_full(&io, &format!("o{i}"), big.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let small = Bytes::from(vec![2u8; 4096]);
        if mode == "plainread4" {
            let plain = rbdx_benches::PlainFile::create(&bench_dir("profile-plain"), 64 << 22);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for lane in 0..4u64 {
                    let plain = &plain;
                    scope.spawn(move || {
                        for i in 0..1000u64 {
                            let n = lane * 1000 + i;
                            let mut buf = vec![0u8; 4 << 20];
                            plain.pread(&mut buf, (n % 64) << 22);
                        }
                    });
                }
            });
            let el = start.elapsed();
            println!("plainread4: 4000 ops in {el:?}: {:?}/op", el / 4000);
            return;
        }
        if mode == "read4" {
            let store = std::sync::Arc::new(store);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for lane in 0..4u64 {
                let (store, io) = (store.clone(), io.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..1000u64 {
                        let n = lane * 1000 + i;
                        let data = store
                            .read(&io, &format!("o{}", n % 64), 0, None)
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        assert_eq!(data.len(), 4 << 20);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap_or_else(|e| panic!("{e}"));
            }
            let el = start.elapsed();
            println!("read4: 4000 ops in {el:?}: {:?}/op", el / 4000);
            return;
        }
        if mode == "big4" {
            let store = std::sync::Arc::new(store);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for lane in 0..4u64 {
                let (store, io, big) = (store.clone(), io.clone(), big.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..250u64 {
                        let n = lane * 250 + i;
                        store
                            .write(&io, &format!("o{}", n % 64), 0, big.clone())
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap_or_else(|e| panic!("{e}"));
            }
            let el = start.elapsed();
            println!("big4: 1000 ops in {el:?}: {:?}/op", el / 1000);
            return;
        }
        if mode == "small16" {
            let store = std::sync::Arc::new(store);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for lane in 0..16u64 {
                let (store, io, small) = (store.clone(), io.clone(), small.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..2000u64 {
                        let n = lane * 2000 + i;
                        store
                            .write(
                                &io,
                                &format!("o{}", n % 64),
                                (n * 7 % 1024) * 4096,
                                small.clone(),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap_or_else(|e| panic!("{e}"));
            }
            let el = start.elapsed();
            println!("small16: 32000 ops in {el:?}: {:?}/op", el / 32000);
            return;
        }
        let start = Instant::now();
        let n: u64 = std::env::var("N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if mode == "small" { 20000 } else { 500 });
        for i in 0..n {
            if mode == "small" {
                store
                    .write(
                        &io,
                        &format!("o{}", i % 64),
                        (i * 7 % 1024) * 4096,
                        small.clone(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            } else {
                store
                    .write(&io, &format!("o{}", i % 64), 0, big.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let el = start.elapsed();
        println!("{mode}: {n} ops in {el:?}: {:?}/op", el / n as u32);
    });
}
