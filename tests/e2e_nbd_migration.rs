//! A migration target served over NBD while it migrates: an import-only migration from a
//! qcow2 over http (nginx on 127.0.0.1), `qemu-io` writing through `rbdx nbd serve` while
//! `rbdx migration execute` runs in another process, then commit; the final image must be the
//! source overlaid with exactly those writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::http::Nginx;
use common::nbd::{Server, client, compare_raw, half_sparse_file, have};
use common::{Lcg, Rbdx};

const MIB: u64 = 1 << 20;

#[test]
fn writes_through_nbd_during_execute_land_on_top_of_an_http_qcow2_source() {
    if !have("qemu-img", "qemu-utils") || !have("qemu-io", "qemu-utils") {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let raw = dir.path().join("src.raw");
    let size = 48 * MIB;
    let mut model = half_sparse_file(&raw, size, 640 << 10, 5);
    let qcow = www.join("src.qcow2");
    client(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    let Some(nginx) = Nginx::serve(dir.path(), &www) else {
        return;
    };
    let spec = serde_json::json!({
        "type": "qcow",
        "stream": {"type": "http", "url": nginx.url("src.qcow2")}
    })
    .to_string();
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "--object-size",
        "1M",
        "target",
    ])
    .ok();

    let server = Server::start(&rbdx, &["target"]);
    let uri = server.uri("rbd/target");
    // Slow enough that the writes below overlap the copy.
    let execute = Command::new(Rbdx::binary())
        .args([
            "migration",
            "execute",
            "--no-progress",
            "--bandwidth-limit",
            "8M",
            "target",
        ])
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut rng = Lcg(42);
    let mut rounds = 0;
    let mut during_copy = 0;
    loop {
        let mut commands = Vec::new();
        for i in 0..10u64 {
            let len = (rng.next(16) + 1) * 4096;
            let offset = rng.next((size - len) / 512) * 512;
            let byte = 0x80 | ((rounds * 10 + i) % 127) as u8;
            commands.push(format!("write -P {byte} {offset} {len}"));
            model[offset as usize..(offset + len) as usize].fill(byte);
        }
        let mut args = vec!["-f", "raw"];
        for c in &commands {
            args.extend(["-c", c.as_str()]);
        }
        args.push(&uri);
        let before = rbdx.run(&["status", "target"]).ok().stdout;
        client("qemu-io", &args);
        rounds += 1;
        let after = rbdx.run(&["status", "target"]).ok().stdout;
        if before.contains("state: executing") || after.contains("state: executing") {
            during_copy += 1;
        }
        if after.contains("state: executed") {
            break;
        }
        assert!(rounds < 1000, "execute did not finish: {after}");
    }
    assert!(during_copy >= 1, "no round of writes overlapped the copy");
    let out = execute.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rbdx.run(&["migration", "commit", "--no-progress", "target"])
        .ok();
    let status = rbdx.run(&["status", "target"]).ok().stdout;
    assert!(!status.contains("Migration:"), "{status}");

    // Still served after the commit, with the source gone from under it.
    drop(nginx);
    let expected = dir.path().join("expected.raw");
    std::fs::write(&expected, &model).unwrap();
    compare_raw(&expected, &uri);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    let exported = dir.path().join("final.raw");
    rbdx.run(&[
        "export",
        "--no-progress",
        "target",
        exported.to_str().unwrap(),
    ])
    .ok();
    assert!(
        std::fs::read(&exported).unwrap() == model,
        "the image is not the source overlaid with the writes"
    );
}
