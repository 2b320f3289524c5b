//! kill -9 of `rbdx gateway serve` while two `remote` clients apply random multi-step batches,
//! 30 times: every acknowledged batch is present, no batch is half applied, and the clients
//! reconnect by themselves when the gateway is back.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Rbdx;
use common::gateway::Gateway;
use rbdx_objstore::testkit::batches::{BatchGenerator, CRASH_OBJECTS, crash_object};
use rbdx_objstore::testkit::model::ObjectImage;
use rbdx_objstore::{ErrorKind, IoCtx, ObjectStore, SnapContext};
use rbdx_peer::{RemoteConfig, RemoteStore};

const ROUNDS: u64 = 30;

/// One client's objects as the test expects them, and the batch whose outcome is unknown.
struct Writer {
    store: Arc<RemoteStore>,
    io: IoCtx,
    generator: BatchGenerator,
    model: Vec<ObjectImage>,
    acked: u64,
}

/// Applies batches until `stop`; returns the batch cut off by the crash, if one was.
async fn write_until(w: &mut Writer, stop: &AtomicBool) -> Option<(u64, rbdx_objstore::WriteOp)> {
    while !stop.load(Ordering::SeqCst) {
        let (object, op) = w.generator.next_batch();
        match w
            .store
            .operate(&w.io, &crash_object(object), &op, &SnapContext::empty())
            .await
        {
            Ok(_) => {
                assert!(
                    w.model[object as usize].apply(&op),
                    "the model refused a batch the store took"
                );
                w.acked += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::VersionMismatch
                        | ErrorKind::NotFound
                        | ErrorKind::AlreadyExists
                        | ErrorKind::ComparisonFailed
                ) =>
            {
                assert!(
                    !w.model[object as usize].clone().apply(&op),
                    "the store refused {op:?}: {e}"
                );
                w.acked += 1;
            }
            Err(e) => {
                eprintln!("batch {} cut off: {e}", w.acked);
                return Some((object, op));
            }
        }
    }
    None
}

async fn load(store: &dyn ObjectStore, io: &IoCtx) -> Vec<ObjectImage> {
    let mut out = Vec::new();
    for index in 0..CRASH_OBJECTS {
        out.push(
            ObjectImage::load(store, io, &crash_object(index), None)
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateways_leave_whole_batches_and_clients_reconnect() {
    let site = Rbdx::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap().to_string();
    drop(free);
    let mut gateway = Some(Gateway::start(
        &site,
        Some(&address),
        &["--session-grace", "5"],
    ));
    let conf = site
        .run(&[
            "gateway",
            "key",
            "create",
            "test",
            "--profile",
            "rw",
            "--format",
            "json",
        ])
        .ok()
        .json();
    let cfg = || {
        let mut c = RemoteConfig::new(
            &address,
            conf["fingerprint"].as_str().unwrap(),
            "client.test",
            conf["key"].as_str().unwrap(),
        )
        .unwrap();
        c.reconnect_timeout = Duration::from_secs(30);
        c
    };
    let mut writers = Vec::new();
    for n in 0..2u64 {
        let store = Arc::new(RemoteStore::connect(cfg()).await.unwrap());
        let pool = store.pool_lookup("rbd").await.unwrap().id;
        let io = IoCtx::with_namespace(pool, format!("client{n}"));
        store.namespace_create(&io).await.unwrap();
        writers.push(Writer {
            store,
            io,
            generator: BatchGenerator::new(0xc0de + n),
            model: vec![ObjectImage::default(); CRASH_OBJECTS as usize],
            acked: 0,
        });
    }
    let mut rng = common::Lcg(99);
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for mut w in writers.drain(..) {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let cut = write_until(&mut w, &stop).await;
                (w, cut)
            }));
        }
        tokio::time::sleep(Duration::from_millis(50 + rng.next(300))).await;
        gateway.take().unwrap().kill9();
        stop.store(true, Ordering::SeqCst);
        gateway = Some(Gateway::start(
            &site,
            Some(&address),
            &["--session-grace", "5"],
        ));
        for task in tasks {
            let (mut w, cut) = task.await.unwrap();
            let actual = load(&*w.store, &w.io).await;
            for (index, seen) in actual.iter().enumerate() {
                let expected = &w.model[index];
                let interrupted =
                    cut.as_ref()
                        .filter(|(o, _)| *o as usize == index)
                        .map(|(_, op)| {
                            let mut m = expected.clone();
                            m.apply(op);
                            m
                        });
                assert!(
                    seen == expected || interrupted.as_ref() == Some(seen),
                    "round {round}: {} is neither as after the {} acknowledged batches nor as \
                     after the interrupted one",
                    crash_object(index as u64),
                    w.acked
                );
            }
            w.model = actual;
            writers.push(w);
        }
    }
    let total: u64 = writers.iter().map(|w| w.acked).sum();
    eprintln!("{ROUNDS} rounds, {total} batches acknowledged");
    assert!(total > ROUNDS, "the clients hardly wrote: {total} batches");
}
