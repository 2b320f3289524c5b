//! `rbdx nbd serve` with real NBD clients: qemu-img and qemu-io (QEMU's NBD client), and
//! `nbdinfo` / `nbdcopy` (libnbd). Every check of what the server serves is made by those
//! clients; only the bad-request test speaks the protocol itself, because no real client
//! sends broken requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::Rbdx;
use common::nbd::{Server, client, client_output, compare_raw, half_sparse_file, have};

const MIB: u64 = 1 << 20;

fn export(rbdx: &Rbdx, spec: &str, path: &Path) -> Vec<u8> {
    rbdx.run(&["export", "--no-progress", spec, path.to_str().unwrap()])
        .ok();
    let data = std::fs::read(path).unwrap();
    std::fs::remove_file(path).unwrap();
    data
}

fn qemu_tools() -> bool {
    have("qemu-img", "qemu-utils") && have("qemu-io", "qemu-utils")
}

/// Runs qemu-io commands against `uri` (raw format, opened read-write).
#[track_caller]
fn qemu_io(uri: &str, commands: &[String]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c.as_str()]);
    }
    args.push(uri);
    client("qemu-io", &args)
}

fn fill(model: &mut [u8], offset: u64, len: u64, byte: u8) {
    model[offset as usize..(offset + len) as usize].fill(byte);
}

#[test]
fn qemu_img_and_qemu_io_read_write_and_compare_over_tcp_and_unix_sockets() {
    if !qemu_tools() {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let mut model = half_sparse_file(&src, 8 * MIB, 256 << 10, 3);
    rbdx.run(&[
        "import",
        "--no-progress",
        "--object-size",
        "1M",
        src.to_str().unwrap(),
        "disk",
    ])
    .ok();

    let server = Server::start(&rbdx, &["disk"]);
    let uri = server.uri("rbd/disk");
    assert!(uri.starts_with("nbd://127.0.0.1:"), "{uri}");
    assert_eq!(server.started["exports"][0]["size"], 8 * MIB);
    let info: serde_json::Value =
        serde_json::from_str(&client("qemu-img", &["info", "--output=json", &uri])).unwrap();
    assert_eq!(info["virtual-size"], 8 * MIB);
    let out = dir.path().join("out.raw");
    client(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            out.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&out).unwrap() == model, "convert differs");
    compare_raw(&src, &uri);

    // Writes, zeroes (allocated and not), discards, a FUA write and reads through qemu-io.
    qemu_io(
        &uri,
        &[
            "write -P 0x61 100000 70000".into(),
            "write -z 1048576 65536".into(),
            "write -z -u 1200000 5000".into(),
            "discard 2097152 1048576".into(),
            "write -f -P 0x62 8323072 65536".into(),
            "read -P 0x61 100000 70000".into(),
            "read -P 0 2097152 1048576".into(),
            "flush".into(),
        ],
    );
    fill(&mut model, 100000, 70000, 0x61);
    fill(&mut model, MIB, 65536, 0);
    fill(&mut model, 1200000, 5000, 0);
    fill(&mut model, 2 * MIB, MIB, 0);
    fill(&mut model, 8323072, 65536, 0x62);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        export(&rbdx, "disk", &dir.path().join("e.raw")) == model,
        "image differs from the writes made through qemu-io"
    );

    // The same image over a unix socket.
    let socket = dir.path().join("nbd.sock");
    let server = Server::start(&rbdx, &["--socket", socket.to_str().unwrap(), "disk"]);
    let uri = server.uri("rbd/disk");
    assert_eq!(
        uri,
        format!("nbd+unix:///rbd/disk?socket={}", socket.display())
    );
    std::fs::write(&out, &model).unwrap();
    let same = compare_raw(&out, &uri);
    assert!(same.contains("identical"), "{same}");
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!socket.exists(), "the socket file is left behind");
}

/// Parses `nbdinfo --map` lines (`offset length type description`) into data bytes and
/// hole bytes.
fn nbdinfo_map(uri: &str) -> (u64, u64, Vec<(u64, u64, bool)>) {
    let text = client("nbdinfo", &["--map", uri]);
    let mut data = 0;
    let mut holes = 0;
    let mut runs = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let offset: u64 = fields[0].parse().unwrap();
        let length: u64 = fields[1].parse().unwrap();
        let kind: u32 = fields[2].parse().unwrap();
        if kind & 1 != 0 {
            holes += length;
        } else {
            data += length;
        }
        runs.push((offset, length, kind & 1 == 0));
    }
    (data, holes, runs)
}

#[test]
fn holes_show_in_qemu_img_map_and_nbdinfo_map_and_nbdcopy_copies_both_ways() {
    if !qemu_tools() || !have("nbdinfo", "libnbd-bin") || !have("nbdcopy", "libnbd-bin") {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "--size", "1G", "sparse"]).ok();
    rbdx.run(&["create", "--size", "64M", "target"]).ok();
    let server = Server::start(&rbdx, &["rbd/sparse", "rbd/target"]);
    let uri = server.uri("rbd/sparse");
    qemu_io(
        &uri,
        &[
            "write -P 1 0 65536".into(),
            "write -P 3 2097152 4096".into(),
            "write -P 2 536870912 1048576".into(),
        ],
    );

    // Only the written bytes are data, holes inside an object included; the rest is a hole.
    let map: Vec<serde_json::Value> =
        serde_json::from_str(&client("qemu-img", &["map", "--output=json", &uri])).unwrap();
    let data: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        data,
        vec![(0, 64 << 10), (2 * MIB, 4096), (512 * MIB, MIB)],
        "{map:?}"
    );
    assert!(
        map.iter()
            .filter(|e| e["data"] == false)
            .all(|e| e["zero"] == true)
    );
    let (data, holes, runs) = nbdinfo_map(&uri);
    let written = (64 << 10) + 4096 + MIB;
    assert_eq!(data, written, "{runs:?}");
    assert_eq!(holes, 1024 * MIB - written);

    // nbdcopy out of rbdx (several connections: the server offers multi-conn).
    let copy = dir.path().join("copy.raw");
    client("nbdcopy", &[&uri, copy.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), 1024 * MIB);
    compare_raw(&copy, &uri);
    std::fs::remove_file(&copy).unwrap();

    // nbdcopy into rbdx.
    let pattern = dir.path().join("pattern.raw");
    let model = half_sparse_file(&pattern, 64 * MIB, 3 * MIB, 9);
    let target = server.uri("rbd/target");
    client("nbdcopy", &[pattern.to_str().unwrap(), &target]);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(export(&rbdx, "target", &dir.path().join("t.raw")) == model);
}

/// A minimal protocol speaker for requests no real client sends.
mod raw {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    /// Connects, negotiates `export` with `NBD_OPT_GO` (simple replies), returns the stream.
    pub fn connect(address: &str, export: &str) -> TcpStream {
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        s.write_all(&3u32.to_be_bytes()).unwrap();
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&7u32.to_be_bytes());
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt).unwrap();
        loop {
            let mut head = [0u8; 20];
            s.read_exact(&mut head).unwrap();
            let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
            let mut body = vec![0u8; len as usize];
            s.read_exact(&mut body).unwrap();
            assert!(kind < 0x8000_0000, "GO refused: {kind:#x}");
            if kind == 1 {
                return s;
            }
        }
    }

    /// Sends a request header (and `payload`).
    pub fn request(s: &mut TcpStream, kind: u16, offset: u64, length: u32, payload: &[u8]) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&77u64.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b.extend_from_slice(payload);
        s.write_all(&b).unwrap();
    }

    /// Reads a simple reply and returns its error value.
    pub fn simple_reply(s: &mut TcpStream) -> u32 {
        let mut b = [0u8; 16];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b[..4], &0x6744_6698u32.to_be_bytes());
        assert_eq!(&b[8..], &77u64.to_be_bytes());
        u32::from_be_bytes(b[4..8].try_into().unwrap())
    }

    /// Returns true if the server closed the connection.
    pub fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn bad_requests_get_errors_or_a_closed_connection_and_everyone_else_is_served() {
    if !qemu_tools() {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "--size", "4M", "disk"]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "4M", "disk"])
        .ok();
    rbdx.run(&["snap", "create", "disk@s1"]).ok();
    let model = export(&rbdx, "disk", &dir.path().join("m.raw"));
    let server = Server::start(&rbdx, &["disk", "disk@s1"]);
    let address = server.address();

    // A snapshot export is read-only: qemu refuses to open it for writing, and a write sent
    // anyway gets EPERM.
    let snap = server.uri("rbd/disk@s1");
    assert_eq!(server.started["exports"][1]["read_only"], true);
    let out = client_output("qemu-io", &["-f", "raw", "-c", "write 0 512", &snap]);
    assert!(!out.status.success());
    let mut s = raw::connect(&address, "rbd/disk@s1");
    raw::request(&mut s, 1, 0, 4, b"abcd");
    assert_eq!(raw::simple_reply(&mut s), 1, "write to a snapshot");
    // Past the end: EINVAL for a read, ENOSPC for a write; an unknown type: EINVAL.
    let mut s = raw::connect(&address, "rbd/disk");
    raw::request(&mut s, 0, 4 * MIB - 100, 200, &[]);
    assert_eq!(raw::simple_reply(&mut s), 22);
    raw::request(&mut s, 1, 4 * MIB, 4, b"abcd");
    assert_eq!(raw::simple_reply(&mut s), 28);
    raw::request(&mut s, 99, 0, 0, &[]);
    assert_eq!(raw::simple_reply(&mut s), 22);
    // Block status without the meta context: EINVAL.
    raw::request(&mut s, 7, 0, 4096, &[]);
    assert_eq!(raw::simple_reply(&mut s), 22);
    // A bad magic number closes the connection.
    std::io::Write::write_all(&mut s, &[0u8; 28]).unwrap();
    assert!(raw::closed(&mut s));
    // An oversized write closes the connection before its payload is read.
    let mut s = raw::connect(&address, "rbd/disk");
    raw::request(&mut s, 1, 0, 64 << 20, &[]);
    assert!(raw::closed(&mut s));
    // A client that leaves in the middle of a write payload.
    let mut s = raw::connect(&address, "rbd/disk");
    raw::request(&mut s, 1, 0, 1 << 20, &[7u8; 1000]);
    drop(s);
    // An unknown export name is refused by name.
    let out = client_output(
        "qemu-img",
        &["info", &format!("nbd://{address}/rbd/nothing")],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rbd/nothing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Everyone else is still served, and nothing changed.
    let copy = dir.path().join("copy.raw");
    std::fs::write(&copy, &model).unwrap();
    compare_raw(&copy, &server.uri("rbd/disk"));
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("bad magic"), "{log}");
    assert!(log.contains("over the"), "{log}");
    assert!(log.contains("in the middle of a write"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(export(&rbdx, "disk", &dir.path().join("e.raw")) == model);
}

#[test]
fn snapshots_and_resizes_from_other_processes_work_while_serving_and_stop_flushes() {
    if !qemu_tools() {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "--size", "16M", "disk"]).ok();
    let mut model = vec![0u8; 16 * MIB as usize];
    let server = Server::start(&rbdx, &["disk"]);
    let uri = server.uri("rbd/disk");
    qemu_io(&uri, &["write -P 0x11 0 8M".into()]);
    fill(&mut model, 0, 8 * MIB, 0x11);
    // The server holds the exclusive lock; other commands still work (it hands the lock
    // over and takes it back on the next write).
    rbdx.run(&["snap", "create", "disk@mid"]).ok();
    let at_snap = model.clone();
    qemu_io(&uri, &["write -P 0x22 4M 8M".into()]);
    fill(&mut model, 4 * MIB, 8 * MIB, 0x22);
    rbdx.run(&["resize", "--no-progress", "--size", "32M", "disk"])
        .ok();
    model.resize(32 * MIB as usize, 0);

    // Two clients writing at once on two connections, then SIGTERM: both writes are kept.
    let a = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x33 0 1M", &uri])
        .output();
    let b = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x44 14M 1M", &uri])
        .output();
    assert!(a.unwrap().status.success() && b.unwrap().status.success());
    fill(&mut model, 0, MIB, 0x33);
    fill(&mut model, 14 * MIB, MIB, 0x44);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("stopping"), "{log}");
    let locks = rbdx.run(&["lock", "ls", "disk", "--format", "json"]).ok();
    assert_eq!(locks.json(), serde_json::json!([]), "lock left behind");
    assert!(export(&rbdx, "disk@mid", &dir.path().join("s.raw")) == at_snap);
    assert!(export(&rbdx, "disk", &dir.path().join("h.raw")) == model);
}

#[test]
fn queued_writes_land_whole_across_objects() {
    if !qemu_tools() {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "--size", "8M", "--object-size", "1M", "disk"])
        .ok();
    let server = Server::start(&rbdx, &["disk"]);
    let uri = server.uri("rbd/disk");
    let bench = |pattern: &str, count: &str, step: &str, offset: &str| {
        client(
            "qemu-img",
            &[
                "bench",
                "-f",
                "raw",
                "-w",
                "-d",
                "64",
                "-s",
                "4096",
                "-c",
                count,
                "-S",
                step,
                "-o",
                offset,
                "--pattern",
                pattern,
                &uri,
            ],
        );
    };
    // 64 writes in flight, each starting where the one before ends, across object
    // boundaries, then every other block again.
    bench("90", "2048", "4096", "0");
    bench("91", "1000", "8192", "4096");
    let mut model = vec![90u8; (8 * MIB) as usize];
    for i in 0..1000u64 {
        fill(&mut model, 4096 + i * 8192, 4096, 91);
    }
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        export(&rbdx, "disk", &dir.path().join("e.raw")) == model,
        "image differs from the queued writes"
    );
}
