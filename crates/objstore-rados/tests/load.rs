//! One session with far more operations in flight than it runs at once: every operation
//! completes (no deadlock between the call limit and the calls that open I/O contexts or
//! explain errors) and every object reads back as written.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rbdx_objstore::{ErrorKind, IoCtx, ObjectStore, ObjectStoreExt, PoolId};
use rbdx_objstore_rados::{RadosConfig, RadosStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_operations_in_flight_all_complete() {
    let Some(conf) = common::ceph_conf() else {
        return;
    };
    let store = Arc::new(
        RadosStore::connect(RadosConfig::from_ceph_conf(conf))
            .await
            .unwrap(),
    );
    let name = format!("load-{}", std::process::id());
    let pool = store.pool_create(&name).await.unwrap();
    let io = IoCtx::new(pool);
    let missing = IoCtx::new(PoolId(i64::MAX as u64 - 11));
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let (store, io, missing) = (store.clone(), io.clone(), missing.clone());
        tasks.push(tokio::spawn(async move {
            let oid = format!("obj.{i}");
            let data = Bytes::from(i.to_le_bytes().repeat(1024));
            store.write_full(&io, &oid, data.clone()).await.unwrap();
            assert_eq!(store.read(&io, &oid, 0, None).await.unwrap(), data);
            if i % 10 == 0 {
                let err = store.read(&missing, &oid, 0, None).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotFound);
            }
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("operations stuck: a deadlock between calls in flight");
    store.pool_remove(&name).await.unwrap();
}
