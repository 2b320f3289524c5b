//! Recovery between two mirroring sites on 127.0.0.1 (real processes): delta resync after a
//! forced failover copies only what changed on either side; `mirror image verify` and `mirror
//! pool verify` pass equal copies, find a byte flipped in the copy's store behind rbdx's back
//! in exactly its object and chunk, and `--repair` fixes exactly that.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mirror::{Site, create_journaling, scribble, two_sites, wait_equal, wait_for};

const WAIT: Duration = Duration::from_secs(90);
const MARKER: &[u8] = b"rbdx-verify-marker-0123456789abcdef";
const OBJECT: u64 = 4 << 20;

/// Writes a 64 MiB disk with scattered data and a marker in object 3 at byte 100000.
fn disk(dir: &Path) -> PathBuf {
    let mut data = vec![0u8; 64 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % ((64 << 20) - 65536)) as usize;
        let len = 4096 * (1 + i % 16);
        for (j, b) in data[at..at + len].iter_mut().enumerate() {
            *b = (x >> (j % 8)) as u8 | 1;
        }
    }
    let at = (3 * OBJECT + 100_000) as usize;
    data[at..at + MARKER.len()].copy_from_slice(MARKER);
    let path = dir.join("disk.raw");
    std::fs::write(&path, &data).unwrap();
    path
}

/// Flips one byte of the marker in the file of `root` (a data dir) that holds it.
fn flip_marker(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut flipped = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(MARKER.len()).position(|w| w == MARKER) {
                bytes[at + 5] ^= 0xff;
                std::fs::write(&path, &bytes).unwrap();
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 1, "the marker should be in exactly one file");
}

fn verify(site: &Site, args: &[&str]) -> common::Run {
    let mut all = vec!["mirror", "image", "verify", "rbd/v", "--format", "json"];
    all.extend_from_slice(args);
    site.run(&all)
}

#[test]
fn verify_finds_a_flipped_byte_in_the_copy_and_repair_fixes_exactly_it() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    let file = disk(dir.path());
    a.run(&["import", "--no-progress", file.to_str().unwrap(), "rbd/v"])
        .ok();
    a.run(&["mirror", "image", "enable", "rbd/v", "snapshot"])
        .ok();
    let _daemon = b.daemon("b");
    wait_equal(&a, &b, "rbd/v", dir.path(), WAIT);
    wait_for("the copy to replay", WAIT, || {
        b.state("rbd/v") == "up+replaying"
    });

    for site in [&a, &b] {
        let out = verify(site, &[]).ok().json();
        assert_eq!(out["image"], "v");
        assert_eq!(out["objects_checked"], 16);
        assert_eq!(out["mismatches"], serde_json::json!([]));
        assert!(
            out["snapshot"]
                .as_str()
                .unwrap()
                .starts_with(".mirror.primary."),
            "{out}"
        );
    }
    let pool = b
        .run(&["mirror", "pool", "verify", "rbd", "--format", "json"])
        .ok()
        .json();
    assert_eq!(pool.as_array().unwrap().len(), 1);

    flip_marker(b.rbdx.path());
    let expected = serde_json::json!([{"object_no": 3, "offset": 65536, "length": 65536}]);
    for site in [&a, &b] {
        let run = verify(site, &[]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let out = run.json();
        assert_eq!(out["mismatches"], expected, "at {}", site.name);
        // Only digests crossed: far less than the image's data.
        assert!(out["bytes_from_peer"].as_u64().unwrap() < 64 << 10, "{out}");
    }
    b.run(&["mirror", "pool", "verify", "rbd"])
        .fails(1, "differ: v");
    verify(&a, &["--repair"]).fails(22, "non-primary");

    let repaired = verify(&b, &["--repair"]).ok().json();
    assert_eq!(repaired["repaired"], 1);
    assert_eq!(repaired["mismatches"], serde_json::json!([]));
    for site in [&a, &b] {
        assert_eq!(
            verify(site, &[]).ok().json()["mismatches"],
            serde_json::json!([])
        );
    }
    assert_eq!(a.export("rbd/v", dir.path()), b.export("rbd/v", dir.path()));
}

#[test]
fn verify_refuses_what_it_cannot_compare_with_one_line() {
    let (a, _b) = two_sites("rbd", "image");
    a.run(&["create", "rbd/plain", "--size", "8M"]).ok();
    a.run(&["mirror", "image", "verify", "rbd/plain"])
        .fails(22, "not mirrored");
    a.run(&["mirror", "image", "enable", "rbd/plain", "snapshot"])
        .ok();
    a.run(&["mirror", "image", "verify", "rbd/plain"])
        .fails(2, "no copy at the peer");
    a.run(&["mirror", "image", "verify", "rbd/absent"])
        .fails(2, "");
}

/// The `bytes_since_resync` figure of `spec`'s status at `site`, once it reports one.
fn resync_bytes(site: &Site, spec: &str) -> Option<u64> {
    let status = site.status(spec);
    let description = status["description"].as_str()?;
    let json = description.strip_prefix("replaying, ")?;
    serde_json::from_str::<serde_json::Value>(json).ok()?["bytes_since_resync"].as_u64()
}

/// A forced failover to B while A is cut off and written, then a delta resync of A: A ends
/// equal to B at the head and at the snapshots both keep, A's own snapshot of the split is
/// gone, and the bytes read from B stay within 10% of what changed on both sides.
fn delta_resync_after_split_brain(mode: &str) {
    let (mut a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    let spec = "rbd/d";
    if mode == "journal" {
        create_journaling(&a, spec, "1G");
    } else {
        a.run(&["create", spec, "--size", "1G"]).ok();
    }
    scribble(&a, spec, "64K", "32M");
    a.run(&["snap", "create", "rbd/d@before"]).ok();
    a.run(&["mirror", "image", "enable", spec, mode]).ok();
    let _da = a.daemon("a");
    let _db = b.daemon("b");
    wait_for("the copy to replay", WAIT, || {
        b.state(spec) == "up+replaying"
    });
    if mode == "snapshot" {
        scribble(&a, spec, "64K", "4M");
        a.run(&["mirror", "image", "snapshot", spec]).ok();
    }
    wait_equal(&a, &b, spec, dir.path(), WAIT);

    a.cut_off();
    b.run(&["mirror", "image", "promote", "--force", spec]).ok();
    scribble(&b, spec, "64K", "64M");
    scribble(&a, spec, "64K", "16M");
    a.run(&["snap", "create", "rbd/d@split"]).ok();
    if mode == "snapshot" {
        a.run(&["mirror", "image", "snapshot", spec]).ok();
        b.run(&["mirror", "image", "snapshot", spec]).ok();
    }
    a.reconnect();
    wait_for("split-brain to be reported", WAIT, || {
        let s = a.status(spec);
        s["state"] == "up+error" && s["description"].as_str().unwrap().contains("split-brain")
    });
    a.run(&["mirror", "image", "demote", spec]).ok();
    let resync = a.run(&["mirror", "image", "resync", spec]).ok();
    assert!(
        resync
            .stdout
            .contains("Delta resync: copying only what changed since"),
        "{}",
        resync.stdout
    );
    wait_equal(&a, &b, spec, dir.path(), WAIT);
    assert_eq!(
        a.export("rbd/d@before", dir.path()),
        b.export("rbd/d@before", dir.path())
    );
    let snaps = a.run(&["snap", "ls", spec, "--format", "json"]).ok().json();
    let names: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["before"],
        "A's snapshot of the split is rolled back"
    );
    let mut bytes = None;
    wait_for("the resync figure in the status", WAIT, || {
        bytes = resync_bytes(&a, spec);
        bytes.is_some()
    });
    let bytes = bytes.unwrap();
    let changed: u64 = if mode == "journal" {
        80 << 20
    } else {
        64 << 20
    };
    let log = std::fs::read_to_string(a.log("a")).unwrap_or_default();
    let copies: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("copied") || l.contains("resync"))
        .collect();
    assert!(
        bytes <= changed + changed / 10,
        "{bytes} bytes read from B for {changed} bytes changed: {copies:#?}"
    );
    assert!(bytes > 0);
    a.run(&["bench", "--io-type", "write", "--io-total", "4K", spec])
        .fails(30, "non-primary");
    wait_for("A to replay B", WAIT, || a.state(spec) == "up+replaying");
}

#[test]
fn delta_resync_after_a_forced_failover_in_journal_mode() {
    delta_resync_after_split_brain("journal");
}

#[test]
fn delta_resync_after_a_forced_failover_in_snapshot_mode() {
    delta_resync_after_split_brain("snapshot");
}
