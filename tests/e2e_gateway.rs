//! `rbdx gateway serve` and `remote` client configs end to end: site B works on an image kept
//! at site A through A's gateway (import, snapshot, clone, export, NBD with qemu-img), and
//! each way of getting the connection wrong fails fast with its exit status.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use common::gateway::{Gateway, key, remote};
use common::nbd::{Server, compare_raw, have};
use common::{Lcg, Rbdx};

/// Writes a 48 MiB raw file with scattered 4–64 KiB extents and holes inside objects.
fn scattered_file(path: &Path) -> Vec<u8> {
    let size = 48usize << 20;
    let mut data = vec![0u8; size];
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let len = (4 + rng.next(61) as usize) << 10;
        let at = rng.next((size - len) as u64) as usize;
        let byte = 1 + rng.next(250) as u8;
        data[at..at + len].fill(byte);
    }
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn site_b_imports_snapshots_clones_exports_and_serves_an_image_of_site_a() {
    let a = Rbdx::new();
    let gw = Gateway::start(&a, None, &[]);
    let b = tempfile::tempdir().unwrap();
    let conf = key(&a, "site-b", &["--profile", "rw"], b.path());
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("backend = \"remote\""), "{text}");
    assert!(
        text.contains(&format!("endpoint = \"{}\"", gw.address())),
        "{text}"
    );
    assert!(text.contains(&gw.fingerprint()), "{text}");

    let file = b.path().join("disk.raw");
    let data = scattered_file(&file);
    let f = file.to_str().unwrap();
    remote(&conf, &["import", "--no-progress", f, "rbd/vm1"]).ok();
    remote(&conf, &["snap", "create", "--no-progress", "rbd/vm1@s1"]).ok();
    remote(&conf, &["snap", "protect", "rbd/vm1@s1"]).ok();
    remote(&conf, &["clone", "rbd/vm1@s1", "rbd/c1"]).ok();
    // Site A sees what B made.
    let listed = a.run(&["ls", "--format", "json"]).ok().json();
    assert_eq!(listed, serde_json::json!(["c1", "vm1"]));
    let snaps = remote(&conf, &["snap", "ls", "--format", "json", "rbd/vm1"])
        .ok()
        .json();
    assert_eq!(snaps[0]["name"], "s1");
    for image in ["rbd/vm1", "rbd/c1"] {
        let out = b.path().join("out.raw");
        let _ = std::fs::remove_file(&out);
        remote(
            &conf,
            &["export", "--no-progress", image, out.to_str().unwrap()],
        )
        .ok();
        assert!(std::fs::read(&out).unwrap() == data, "{image} differs");
    }
    let info = remote(&conf, &["info", "--format", "json", "rbd/c1"])
        .ok()
        .json();
    assert_eq!(info["parent"]["image"], "vm1");

    if !have("qemu-img", "qemu-utils") {
        return;
    }
    let conf_s = conf.to_str().unwrap();
    let nbd = Server::start(&a, &["-c", conf_s, "rbd/c1"]);
    compare_raw(&file, &nbd.uri("rbd/c1"));
    let (code, stderr) = nbd.stop();
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = gw.stop();
    assert_eq!(code, 0, "{stderr}");
}

/// Runs `rbdx -c conf ls` and checks its exit status and one-line message; returns how long
/// it took.
#[track_caller]
fn refused(conf: &Path, code: i32, text: &str) -> Duration {
    let start = Instant::now();
    let run = remote(conf, &["ls"]);
    let took = start.elapsed();
    let run = run.fails(code, text);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    took
}

fn rewrite(conf: &Path, dir: &Path, name: &str, key: &str, value: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(conf).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                format!("{key} = \"{value}\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, out.join("\n")).unwrap();
    path
}

#[test]
fn wrong_keys_fingerprints_and_endpoints_fail_fast_with_their_exit_status() {
    let a = Rbdx::new();
    let gw = Gateway::start(&a, None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = key(&a, "site-b", &["--profile", "rw"], d);
    remote(&good, &["create", "--size", "8M", "rbd/keep"]).ok();
    let keys_before = a
        .run(&["gateway", "key", "ls", "--format", "json"])
        .ok()
        .json();
    let images_before = a.run(&["ls", "--format", "json"]).ok().json();

    let mut took = Vec::new();
    let other_secret = format!("{}=", "A".repeat(43));
    let wrong = rewrite(&good, d, "wrong.conf", "key", &other_secret);
    took.push(refused(&wrong, 13, "refused key client.site-b"));
    let unknown = rewrite(&good, d, "unknown.conf", "name", "client.nobody");
    took.push(refused(&unknown, 13, "refused key client.nobody"));
    let gone = key(&a, "gone", &["--profile", "ro"], d);
    remote(&gone, &["ls"]).ok();
    a.run(&["gateway", "key", "rm", "gone"]).ok();
    took.push(refused(&gone, 13, "refused key client.gone"));
    let pinned = rewrite(
        &good,
        d,
        "pinned.conf",
        "fingerprint",
        &format!("sha256:{}", "ab".repeat(32)),
    );
    took.push(refused(&pinned, 13, "not the configured fingerprint"));

    // A port where something else answers: an HTTP-like service.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in other.incoming().flatten().take(1) {
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let foreign = rewrite(&good, d, "foreign.conf", "endpoint", &other_addr);
    took.push(refused(&foreign, 71, "is not an rbdx gateway"));
    // Nothing listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_addr = free.local_addr().unwrap().to_string();
    drop(free);
    let nobody = rewrite(&good, d, "nobody.conf", "endpoint", &free_addr);
    took.push(refused(&nobody, 111, "no gateway is listening"));
    for t in &took {
        assert!(*t < Duration::from_secs(10), "a refusal took {t:?}");
    }
    eprintln!("refusals took {took:?}");

    // A client speaking the protocol in plain TCP gets a plain error frame (EPROTO) and the
    // connection is closed.
    let mut plain = std::net::TcpStream::connect(gw.address()).unwrap();
    let hello = rbdx_peer::frame::Frame::new(rbdx_peer::frame::FrameType::Hello, 0, Vec::new());
    plain
        .write_all(&rbdx_peer::frame::encode(&hello, false).unwrap())
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).unwrap();
    let frame = rbdx_peer::frame::decode(&answer).unwrap();
    let err = rbdx_peer::message::decode_fatal(frame.payload).unwrap();
    assert_eq!(err.errno(), 71, "{err}");

    // Nothing changed at the gateway's site but the key removed on purpose; it serves on.
    let keys_after = a
        .run(&["gateway", "key", "ls", "--format", "json"])
        .ok()
        .json();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&keys_before), ["client.site-b"]);
    assert_eq!(names(&keys_after), ["client.site-b"]);
    assert_eq!(
        a.run(&["ls", "--format", "json"]).ok().json(),
        images_before
    );
    remote(&good, &["info", "rbd/keep"]).ok();
    let secrets = a
        .run(&["gateway", "key", "ls", "--format", "json"])
        .ok()
        .stdout;
    let secret = std::fs::read_to_string(&good).unwrap();
    let secret = secret.lines().find(|l| l.starts_with("key =")).unwrap();
    assert!(
        !secrets.contains(&secret[7..secret.len() - 1]),
        "key ls shows a secret"
    );
}

#[test]
fn profiles_limit_what_keys_may_do() {
    let a = Rbdx::new();
    let _gw = Gateway::start(&a, None, &[]);
    let dir = tempfile::tempdir().unwrap();
    a.run(&["pool", "create", "other"]).ok();
    a.run(&["create", "--size", "8M", "rbd/img"]).ok();
    a.run(&["create", "--size", "8M", "other/img"]).ok();
    let ro = key(&a, "reader", &["--profile", "ro"], dir.path());
    remote(&ro, &["info", "rbd/img"]).ok();
    remote(&ro, &["create", "--size", "1M", "rbd/new"]).fails(13, "needs the capability rw");
    remote(&ro, &["rm", "rbd/img"]).fails(13, "needs the capability rw");
    let limited = key(
        &a,
        "limited",
        &["--profile", "rw", "--pool", "rbd"],
        dir.path(),
    );
    remote(&limited, &["create", "--size", "1M", "rbd/new"]).ok();
    remote(&limited, &["info", "other/img"]).fails(13, "limited to pool(s) rbd");
    let pools = remote(&limited, &["pool", "ls", "--format", "json"])
        .ok()
        .json();
    assert_eq!(pools.as_array().unwrap().len(), 1, "{pools}");
    let peer = key(&a, "site-c", &["--profile", "mirror-peer"], dir.path());
    remote(&peer, &["info", "other/img"]).ok();
    remote(&peer, &["snap", "create", "rbd/img@x"]).fails(13, "mirror-peer key client.site-c");
    // Unknown pools and profiles are refused before a key is made.
    a.run(&[
        "gateway",
        "key",
        "create",
        "x",
        "--profile",
        "rw",
        "--pool",
        "nope",
    ])
    .fails(2, "nope");
    a.run(&["gateway", "key", "create", "x", "--profile", "admin"])
        .fails(22, "admin");
    a.run(&["gateway", "key", "create", "reader", "--profile", "ro"])
        .fails(17, "exists");
    a.run(&["gateway", "key", "rm", "nobody"])
        .fails(2, "no gateway key client.nobody");
    let listed = a
        .run(&["gateway", "key", "ls", "--format", "json"])
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
}

#[test]
fn the_certificate_is_kept_across_restarts_or_taken_from_files() {
    let a = Rbdx::new();
    let first = Gateway::start(&a, None, &[]);
    let fp = first.fingerprint();
    let (code, stderr) = first.stop();
    assert_eq!(code, 0, "{stderr}");
    let again = Gateway::start(&a, None, &[]);
    assert_eq!(again.fingerprint(), fp);
    drop(again);

    let dir = tempfile::tempdir().unwrap();
    let id = rbdx_peer::Identity::generate().unwrap();
    let cert = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert, &id.cert_pem).unwrap();
    std::fs::write(&key_file, &id.key_pem).unwrap();
    let given = Gateway::start(
        &a,
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(given.fingerprint(), id.fingerprint().unwrap());
    let conf = key(&a, "b", &["--profile", "rw"], dir.path());
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains(&given.fingerprint())
    );
    remote(&conf, &["ls"]).ok();
}

#[test]
fn a_native_source_names_the_remote_site_and_an_import_only_migration_reads_through_the_gateway() {
    let a = Rbdx::new();
    let _gw = Gateway::start(&a, None, &[]);
    let b = Rbdx::new();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("rbdx")).unwrap();
    let conf = key(
        &a,
        "site-b",
        &["--profile", "ro"],
        &home.path().join("rbdx"),
    );
    std::fs::rename(&conf, home.path().join("rbdx/site-a.conf")).unwrap();

    let file = home.path().join("disk.raw");
    let data = scattered_file(&file);
    a.run(&["import", "--no-progress", file.to_str().unwrap(), "rbd/vm"])
        .ok();
    a.run(&["snap", "create", "--no-progress", "rbd/vm@base"])
        .ok();
    let spec = r#"{"type":"native","cluster_name":"site-a","pool_name":"rbd","image_name":"vm","snap_name":"base"}"#;
    let with_home = |args: &[&str]| {
        let out = std::process::Command::new(Rbdx::binary())
            .args(args)
            .env("RBDX_DATA_DIR", b.path())
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    with_home(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        spec,
        "rbd/copy",
    ]);
    with_home(&["migration", "execute", "--no-progress", "rbd/copy"]);
    with_home(&["migration", "commit", "--no-progress", "rbd/copy"]);
    let out = home.path().join("copy.raw");
    b.run(&["export", "--no-progress", "rbd/copy", out.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&out).unwrap() == data, "the copy differs");
    // The ro key could read the source but change nothing at site A.
    assert_eq!(
        a.run(&["ls", "--format", "json"]).ok().json(),
        serde_json::json!(["vm"])
    );
}
