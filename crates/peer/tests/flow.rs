//! What the wire can throw at a gateway: a client that never reads its answers (the gateway
//! buffers no more than its window), damaged frames (their connection is closed with an error,
//! other sessions go on), compressed and paced connections.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestGateway;
use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore, ReadOp, SnapContext, WriteOp};
use rbdx_peer::RemoteStore;
use rbdx_peer::frame::{self, Frame, FrameType};
use rbdx_peer::message::Request;
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

    let (_reader, mut write) = common::raw_session(&gw).await;
    let send = |f: Frame| frame::encode(&f, false).unwrap();

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
}

/// Sends `bytes` on a fresh authenticated connection and returns what the gateway did: the
/// error it sent (if any) before closing.
async fn send_raw(gw: &TestGateway, bytes: &[u8]) -> Option<rbdx_objstore::Error> {
    let (mut reader, mut write) = common::raw_session(gw).await;
    write.write_all(bytes).await.unwrap();
    let _ = write.flush().await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Ok(f)) if f.kind == FrameType::Error => {
                return Some(rbdx_peer::message::decode_fatal(f.payload).unwrap());
            }
            Ok(Ok(_)) => continue,
            Ok(Err(_)) => return None,
            Err(_) => panic!("the gateway kept a connection open after a bad frame"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_their_connection_and_other_sessions_go_on() {
    let gw = TestGateway::start(Arc::new(MemoryStore::new()));
    let store = RemoteStore::connect(gw.config()).await.unwrap();
    store.pool_create("rbd").await.unwrap();
    let good = Frame::new(FrameType::Request, 1, Request::PoolList.encode());
    let wire = frame::encode(&good, false).unwrap().to_vec();

    let mut crc = wire.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0x40;
    let mut oversized = wire.clone();
    oversized[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut unknown_type = wire.clone();
    unknown_type[5] = 200;
    let mut newer = wire.clone();
    newer[4] = 2;
    let mut flags = wire.clone();
    flags[6] = 0x80;
    // A zstd frame on a connection that did not ask for compression (a "zip bomb" would
    // otherwise get past the window, which counts bytes as sent).
    let bomb = frame::encode_rope(
        FrameType::Request,
        3,
        vec![Bytes::from(vec![0u8; 1 << 20])],
        true,
    )
    .unwrap()
    .concat();
    let garbage = frame::encode(
        &Frame::new(FrameType::Request, 2, Bytes::from_static(&[15, 1, 2])),
        false,
    )
    .unwrap()
    .to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("CRC", crc),
        ("over the limit", oversized),
        ("unknown frame type", unknown_type),
        ("version 2", newer),
        ("flags", flags),
        ("did not negotiate compression", bomb),
        ("bad request", garbage),
    ];
    for (what, bytes) in cases {
        let err = send_raw(&gw, &bytes).await;
        let err = err.unwrap_or_else(|| panic!("{what}: closed without an error frame"));
        assert_eq!(
            err.kind(),
            rbdx_objstore::ErrorKind::Protocol,
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
        assert_eq!(store.pool_list().await.unwrap().len(), 1, "after {what}");
    }
    // A truncated frame: the header promises more than comes before the stream ends.
    let (mut reader, mut write) = common::raw_session(&gw).await;
    write.write_all(&wire[..wire.len() - 3]).await.unwrap();
    write.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
    assert!(
        matches!(end, Ok(Ok(ref f)) if f.kind == FrameType::Error) || matches!(end, Ok(Err(_)))
    );
    // An unknown request code is answered, not fatal.
    let (mut reader, mut write) = common::raw_session(&gw).await;
    let probe = Frame::new(FrameType::Request, 7, Bytes::from_static(&[250]));
    write
        .write_all(&frame::encode(&probe, false).unwrap())
        .await
        .unwrap();
    let answer = reader.next().await.unwrap();
    assert_eq!((answer.kind, answer.id), (FrameType::Response, 7));
    let result = rbdx_peer::message::decode_response(answer.payload).unwrap();
    assert_eq!(
        result.unwrap_err().kind(),
        rbdx_objstore::ErrorKind::Unsupported
    );
    assert_eq!(store.pool_list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_paced_connections_carry_the_same_bytes() {
    let gw = TestGateway::start(Arc::new(MemoryStore::new()));
    let mut cfg = gw.config();
    cfg.compress = true;
    let store = RemoteStore::connect(cfg).await.unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let text: Vec<u8> = b"rbdx peer frames compress well. ".repeat(1 << 16);
    for n in 0..4 {
        let op = WriteOp::new().write_full(Bytes::from(text[..(1 << 20) + n].to_vec()));
        store
            .operate(&io, &format!("t{n}"), &op, &SnapContext::empty())
            .await
            .unwrap();
    }
    for n in 0..4 {
        let back = store
            .read_op(&io, &format!("t{n}"), &ReadOp::new().read(0, None), None)
            .await
            .unwrap()
            .take_data(0)
            .unwrap();
        assert_eq!(back, text[..(1 << 20) + n]);
    }

    // A second session without compression reads the same bytes.
    let plain = RemoteStore::connect(gw.config()).await.unwrap();
    let back = plain
        .read_op(&io, "t3", &ReadOp::new().read(0, None), None)
        .await
        .unwrap()
        .take_data(0)
        .unwrap();
    assert_eq!(back.len(), (1 << 20) + 3);

    // A paced session sends no faster than its limit (after a quarter second of burst):
    // 4 MiB of incompressible bytes at 2 MiB/s.
    let mut cfg = gw.config();
    cfg.bandwidth_limit = Some(2 << 20);
    let paced = RemoteStore::connect(cfg).await.unwrap();
    let noise: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = std::time::Instant::now();
    let op = WriteOp::new().write_full(Bytes::from(noise.clone()));
    paced
        .operate(&io, "noise", &op, &SnapContext::empty())
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("4 MiB at a 2 MiB/s limit took {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "the limit was not kept: {took:?}"
    );
    let back = plain
        .read_op(&io, "noise", &ReadOp::new().read(0, None), None)
        .await
        .unwrap()
        .take_data(0)
        .unwrap();
    assert!(back == noise);
}
