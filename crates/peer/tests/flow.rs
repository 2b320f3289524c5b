//! Flow control: a client that sends requests and never reads the answers cannot make the
//! gateway buffer more than its window; other sessions go on meanwhile.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestGateway;
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, ReadOp, SnapContext, WriteOp};
use rbdx_peer::RemoteStore;
use rbdx_peer::conn::FrameReader;
use rbdx_peer::frame::{self, Frame, FrameType};
use rbdx_peer::handshake::{self, Challenge, EXPORTER_LABEL, Hello, Side};
use rbdx_peer::message::Request;
use rbdx_peer::tls::{self, Pinned};
use tokio::io::AsyncWriteExt;

fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_grow_the_gateway_past_its_window() {
    let gw = TestGateway::start(Arc::new(MemoryStore::new()));
    let store = RemoteStore::connect(gw.config()).await.unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let object = Bytes::from(vec![0x5a; 4 << 20]);
    store
        .operate(
            &io,
            "big",
            &WriteOp::new().write_full(object),
            &SnapContext::empty(),
        )
        .await
        .unwrap();

    // A raw client: TLS, the handshake, then reads of the whole 4 MiB object, never reading
    // what comes back.
    let cfg = gw.config();
    let tcp = tokio::net::TcpStream::connect(&gw.endpoint).await.unwrap();
    let pinned = Arc::new(Pinned::new(cfg.fingerprint.clone()));
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(pinned).unwrap());
    let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
    let tls_stream = connector.connect(name, tcp).await.unwrap();
    let mut exporter = [0u8; 32];
    tls_stream
        .get_ref()
        .1
        .export_keying_material(&mut exporter, EXPORTER_LABEL, None)
        .unwrap();
    let (read, mut write) = tokio::io::split(tls_stream);
    let mut reader = FrameReader::new(read);
    let nonce = [9u8; 32];
    let hello = Hello {
        min_version: 1,
        max_version: 1,
        key_name: cfg.name.clone(),
        nonce,
        resume: None,
        compress: false,
    };
    let send = |f: Frame| frame::encode(&f, false).unwrap();
    write
        .write_all(&send(Frame::new(FrameType::Hello, 0, hello.encode())))
        .await
        .unwrap();
    let challenge = Challenge::decode(reader.next().await.unwrap().payload).unwrap();
    let proof = handshake::proof(
        &cfg.secret,
        Side::Client,
        &exporter,
        &cfg.name,
        &nonce,
        &challenge.nonce,
    );
    write
        .write_all(&send(Frame::new(FrameType::Auth, 0, proof.to_vec())))
        .await
        .unwrap();
    let welcome = reader.next().await.unwrap();
    assert_eq!(welcome.kind, FrameType::Welcome);

    let before = resident();
    let read_all = Request::Read {
        io: io.clone(),
        oid: "big".into(),
        op: ReadOp::new().read(0, None),
        snap: None,
    }
    .encode();
    // 400 answers of 4 MiB would be 1.6 GB if the gateway buffered them; then 1 MiB requests
    // (200 MiB) that no socket buffer can hold once the gateway stops reading.
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        let filler =
            Request::ConfigKeySet("filler".into(), Bytes::from(vec![1u8; 1 << 20])).encode();
        for id in 1..=REQUESTS {
            let body = if id <= 400 {
                read_all.clone()
            } else {
                filler.clone()
            };
            let bytes = send(Frame::new(FrameType::Request, id, body));
            match tokio::time::timeout(Duration::from_secs(3), write.write_all(&bytes)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        (sent, write)
    });
    const REQUESTS: u64 = 600;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let grown = resident().saturating_sub(before);
    // Other sessions are served meanwhile.
    let other = RemoteStore::connect(gw.config()).await.unwrap();
    assert_eq!(other.pool_list().await.unwrap().len(), 1);
    let (sent, _write) = sender.await.unwrap();
    eprintln!(
        "{sent} requests sent before the gateway stopped reading; memory grew {} MiB",
        grown >> 20
    );
    assert!(
        sent < REQUESTS,
        "the gateway read every request of a client that does not read"
    );
    assert!(
        grown < (64 << 20) + (64 << 20),
        "the gateway grew by {} MiB for a client that does not read",
        grown >> 20
    );
    drop(reader);
}
