//! Requests that one task makes one after another, without waiting for each, are committed in
//! the order they were made, whether they run on the caller's thread (a small request finding
//! the writer idle) or on the writer thread (a large one, or any request made while another
//! waits there), and with other commands for the thread (flushes) made between them.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, SnapContext, WriteOp};
use rbdx_objstore_dir::DirStore;

use common::Rng;

const SPAN: usize = 512 << 10;

/// A write of `len` bytes of `fill` at `at`, or an omap change (no data).
#[derive(Clone, Debug)]
enum Step {
    Write(usize, usize, u8),
    Omap(u8),
}

impl Step {
    fn random(rng: &mut Rng, fill: u8) -> Step {
        let len = match rng.below(10) {
            0 => return Step::Omap(fill),
            // Larger than what runs on the caller's thread.
            1 | 2 => (96 << 10) + 512 * rng.below(192),
            _ => 512 * (1 + rng.below(64)),
        };
        Step::Write(rng.below(SPAN - len), len, fill)
    }

    fn op(&self) -> WriteOp {
        match self {
            Step::Write(at, len, fill) => {
                WriteOp::new().write(*at as u64, Bytes::from(vec![*fill; *len]))
            }
            Step::Omap(fill) => {
                WriteOp::new().omap_set([("k".to_owned(), Bytes::from(vec![*fill]))])
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_in_order_are_committed_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let mut model = vec![7u8; SPAN];
    store
        .write_full(&io, "obj", Bytes::from(model.clone()))
        .await
        .unwrap();
    let mut omap = 0u8;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut large = 0;
    for round in 0..40u32 {
        let steps: Vec<Step> = (0..32u32)
            .map(|n| Step::random(&mut rng, ((round * 32 + n) % 251) as u8 + 1))
            .collect();
        large += steps
            .iter()
            .filter(|s| matches!(s, Step::Write(_, len, _) if *len > 64 << 10))
            .count();
        let ops: Vec<WriteOp> = steps.iter().map(Step::op).collect();
        let snapc = SnapContext::empty();
        // `join_all` first polls every future in order: each request is made then. A flush
        // after every eighth request puts other commands for the thread between them.
        let mut requests: Vec<Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>>> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let (store, io, snapc) = (&store, &io, &snapc);
            requests.push(Box::pin(async move {
                Some(store.operate(io, "obj", op, snapc).await.unwrap())
            }));
            if n % 8 == 7 {
                requests.push(Box::pin(async move {
                    store.flush().await.unwrap();
                    None
                }));
            }
        }
        let versions = futures::future::join_all(requests).await;
        let mut last = 0;
        for (n, (version, step)) in versions.into_iter().flatten().zip(&steps).enumerate() {
            assert!(
                version > last,
                "round {round}: request {n} ({step:?}) got version {version} after {last}"
            );
            last = version;
            match step {
                Step::Write(at, len, fill) => model[*at..at + len].fill(*fill),
                Step::Omap(fill) => omap = *fill,
            }
        }
        let got = store.read(&io, "obj", 0, None).await.unwrap();
        assert!(got.as_ref() == model.as_slice(), "round {round}: data");
        let stat = store.stat(&io, "obj").await.unwrap();
        assert_eq!(stat.version, last, "round {round}");
    }
    assert!(large > 0);
    let values = store.omap_get_by_keys(&io, "obj", &["k"]).await.unwrap();
    assert_eq!(values.get("k").map(|v| v.to_vec()), Some(vec![omap]));
}
