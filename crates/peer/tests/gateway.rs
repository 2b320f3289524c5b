//! The gateway and the `remote` backend together: sessions that survive dropped connections
//! without applying anything twice, keys and their profiles, refusals.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::TestGateway;
use rbdx_objstore::{ErrorKind, IoCtx, MemoryStore, ObjectStore, ReadOp, SnapContext, WriteOp};
use rbdx_peer::{Keys, Profile, RemoteConfig, RemoteStore};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay between clients and the gateway that can cut every connection at once.
struct Relay {
    address: String,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cut = Arc::new(cut);
        let cuts = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {
                            let _ = client.shutdown().await;
                        }
                    }
                });
            }
        });
        Relay { address, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn pool(store: &RemoteStore) -> IoCtx {
    IoCtx::new(store.pool_create("rbd").await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_by_a_dropped_connection_are_applied_exactly_once() {
    // Connections are cut every 150 ms, handshakes too: the session must outlast the retries.
    let gw = TestGateway::start_with(Arc::new(MemoryStore::new()), Duration::from_secs(60));
    let relay = Relay::start(gw.endpoint.clone()).await;
    let mut cfg = gw.config();
    cfg.endpoint = relay.address.clone();
    let store = Arc::new(RemoteStore::connect(cfg).await.unwrap());
    let io = pool(&store).await;
    let watch = store.watch(&io, "rbd_children").await;
    assert!(watch.is_err_and(|e| e.kind() == ErrorKind::NotFound));
    store
        .operate(
            &io,
            "w",
            &WriteOp::new().create(true),
            &SnapContext::empty(),
        )
        .await
        .unwrap();
    let mut watch = store.watch(&io, "w").await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let cutter = tokio::spawn({
        let done = done.clone();
        async move {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                relay.cut_all();
            }
        }
    });
    // Exclusive creates fail with AlreadyExists if applied twice; appends of a counter with
    // a version assertion fail with a mismatch.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let io = io.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let op = WriteOp::new()
                    .create(true)
                    .write(0, Bytes::from(format!("{t}-{i}")));
                store
                    .operate(&io, &format!("o.{t}.{i}"), &op, &SnapContext::empty())
                    .await
                    .unwrap_or_else(|e| panic!("create o.{t}.{i}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    cutter.await.unwrap();
    let page = store
        .list_objects_opts(
            &io,
            &rbdx_objstore::ListOptions::default().with_prefix("o."),
        )
        .await
        .unwrap();
    assert_eq!(page.names.len(), 480);
    assert!(store.resumed() > 0, "no connection was cut");
    eprintln!("the session was resumed {} times", store.resumed());

    // The session survived: the watch set up before the cuts still gets notifications.
    let other = RemoteStore::connect(gw.config()).await.unwrap();
    let notifier = tokio::spawn(async move {
        other
            .notify(&io, "w", Bytes::from_static(b"hi"), Duration::from_secs(5))
            .await
            .unwrap()
    });
    let Some(rbdx_objstore::WatchEvent::Notify(n)) = watch.next().await else {
        panic!("the watch was lost");
    };
    assert_eq!(n.payload, "hi");
    n.ack(Bytes::from_static(b"back"));
    let result = notifier.await.unwrap();
    assert_eq!(result.acks.len(), 1);
    assert_eq!(result.acks[0].reply, "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_and_a_removed_key_loses_its_sessions() {
    let cluster = MemoryStore::new();
    let admin: Arc<dyn ObjectStore> = Arc::new(cluster.connect());
    let gw = TestGateway::start(Arc::new(cluster));
    let keys = Keys::new(admin.clone());
    let rw = RemoteStore::connect(gw.config()).await.unwrap();
    let io = pool(&rw).await;
    rw.pool_create("other").await.unwrap();
    let op = WriteOp::new().write(0, Bytes::from_static(b"data"));
    rw.operate(&io, "obj", &op, &SnapContext::empty())
        .await
        .unwrap();

    // Wrong secret, unknown name, wrong fingerprint.
    let wrong = RemoteConfig::new(
        &gw.endpoint,
        &gw.fingerprint,
        "client.test",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let err = RemoteStore::connect(wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let unknown = RemoteConfig::new(&gw.endpoint, &gw.fingerprint, "nobody", &gw.key).unwrap();
    let err = RemoteStore::connect(unknown).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    let fp = format!("sha256:{}", "0".repeat(64));
    let pinned = RemoteConfig::new(&gw.endpoint, &fp, "client.test", &gw.key).unwrap();
    let err = RemoteStore::connect(pinned).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("not the configured fingerprint"),
        "{err}"
    );

    // A read-only key limited to pool rbd.
    let ro = keys
        .create("reader", Profile::Ro, vec!["rbd".into()])
        .await
        .unwrap();
    let cfg = RemoteConfig::new(&gw.endpoint, &gw.fingerprint, &ro.name, &ro.secret).unwrap();
    let reader = RemoteStore::connect(cfg).await.unwrap();
    let data = reader
        .read_op(&io, "obj", &ReadOp::new().read(0, None), None)
        .await
        .unwrap();
    assert_eq!(data.outputs.len(), 1);
    let err = reader
        .operate(&io, "obj", &op, &SnapContext::empty())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("needs the capability rw"), "{err}");
    let pools = reader.pool_list().await.unwrap();
    assert_eq!(
        pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["rbd"]
    );
    let err = reader.pool_lookup("other").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // The gateway's own records are out of reach, even of an rw key.
    assert!(
        rw.config_key_list()
            .await
            .unwrap()
            .iter()
            .all(|k| !k.starts_with("rbdx/gateway/"))
    );
    let err = rw
        .config_key_get(&format!("rbdx/gateway/key/{}", ro.name))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);

    // Removing the key cuts the open session; it cannot come back.
    keys.remove(&ro.name).await.unwrap();
    let mut refused = None;
    for _ in 0..50 {
        match reader.pool_list().await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the removed key still works");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    // Nothing changed for others.
    assert_eq!(rw.pool_list().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_foreign_endpoints_fail_fast_with_their_kind() {
    let gw = TestGateway::start(Arc::new(MemoryStore::new()));
    // Nothing listens.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = free.local_addr().unwrap().to_string();
    drop(free);
    let cfg = RemoteConfig::new(&closed, &gw.fingerprint, "client.test", &gw.key).unwrap();
    let started = std::time::Instant::now();
    let err = RemoteStore::connect(cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(err.errno(), 111);
    // A service that is not a gateway.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let cfg = RemoteConfig::new(&http_addr, &gw.fingerprint, "client.test", &gw.key).unwrap();
    let err = RemoteStore::connect(cfg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(err.errno(), 71);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A plain (not TLS) peer frame gets a plain Error frame saying so.
    let mut plain = TcpStream::connect(&gw.endpoint).await.unwrap();
    let hello = rbdx_peer::frame::Frame::new(rbdx_peer::frame::FrameType::Hello, 0, Bytes::new());
    let wire = rbdx_peer::frame::encode(&hello, false).unwrap();
    plain.write_all(&wire).await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer)
        .await
        .unwrap();
    let frame = rbdx_peer::frame::decode(&answer).unwrap();
    assert_eq!(frame.kind, rbdx_peer::frame::FrameType::Error);
    let e = rbdx_peer::message::decode_fatal(frame.payload).unwrap();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.to_string().contains("TLS"), "{e}");
    // The gateway serves on.
    let store = RemoteStore::connect(gw.config()).await.unwrap();
    assert!(store.pool_list().await.unwrap().is_empty());
}
