//! The nbd stream against `qemu-nbd` serving a qcow2 image, over a unix socket and TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rbdx_source::{ErrorKind, ExtentKind, Stream};
use rbdx_stream_nbd::NbdStream;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI=true (apt-get install qemu-utils)"
        );
        eprintln!("skipped: {tool} is not installed (apt-get install qemu-utils)");
    }
    ok
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve(image: &Path, args: &[&str]) -> Server {
    let child = Command::new("qemu-nbd")
        .args(["-f", "qcow2", "--persistent", "-r"])
        .args(args)
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

async fn connect(uri: &str) -> NbdStream {
    for _ in 0..100 {
        if let Ok(s) = NbdStream::open(uri).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("cannot connect to {uri}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_block_status_match_the_image() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            image.to_str().unwrap(),
            "64M",
        ],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x3c 1M 3M",
            "-c",
            "write -P 0x5d 40M 64k",
            image.to_str().unwrap(),
        ],
    );
    let raw = dir.path().join("disk.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let expected = std::fs::read(&raw).unwrap();

    let socket = dir.path().join("nbd.sock");
    // Persistent and shared: the conformance kit's cancelled reads make the stream connect
    // again while its first connection closes.
    let _server = serve(
        &image,
        &[
            "-k",
            socket.to_str().unwrap(),
            "-x",
            "disk",
            "-t",
            "-e",
            "2",
        ],
    );
    let uri = format!("nbd+unix:///disk?socket={}", socket.display());
    let s = connect(&uri).await;
    assert_eq!(s.size().await.unwrap(), 64 << 20);
    for (at, len) in [
        (0u64, 1u64 << 20),
        (1 << 20, 3 << 20),
        ((40 << 20) - 100, 70_000),
        ((64 << 20) - 5, 5),
    ] {
        let got = s.read(at, len).await.unwrap();
        assert!(
            got.as_ref() == &expected[at as usize..(at + len) as usize],
            "read {at}~{len}"
        );
    }
    let big = s.read(0, 48 << 20).await.unwrap();
    assert!(big.as_ref() == &expected[..48 << 20]);
    let extents = s.extents(0, 64 << 20).await.unwrap();
    let data: u64 = extents
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum();
    assert!(
        ((3 << 20) + (64 << 10)..8 << 20).contains(&data),
        "{extents:?}"
    );
    for e in extents.iter().filter(|e| e.kind == ExtentKind::Zero) {
        assert!(
            expected[e.offset as usize..e.end() as usize]
                .iter()
                .all(|&b| b == 0),
            "{e:?}"
        );
    }
    // The conformance kit every driver runs.
    let shared: std::sync::Arc<dyn rbdx_source::Stream> = std::sync::Arc::new(s);
    rbdx_source::testkit::conformance(&rbdx_source::testkit::Subject::Stream(shared), &expected)
        .await;

    let wrong = format!("nbd+unix:///nosuch?socket={}", socket.display());
    let e = NbdStream::open(&wrong).await.unwrap_err();
    assert!(e.to_string().contains("export 'nosuch'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_exports_work_and_a_stopped_server_is_an_error() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", image.to_str().unwrap(), "1M"],
    );
    run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 4k",
            image.to_str().unwrap(),
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = serve(&image, &["-b", "127.0.0.1", "-p", &port.to_string()]);
    let s = connect(&format!("nbd://127.0.0.1:{port}")).await;
    assert!(s.read(0, 4096).await.unwrap().iter().all(|&b| b == 0x11));
    drop(s);
    drop(server);
    let e = NbdStream::open(&format!("nbd://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
}
