//! `rbdx cp` and `rbdx deep cp` through the built binary: every view of the copy is checked
//! byte for byte against the source (the model), across layouts (object size, striping),
//! pools, namespaces and stores, for clones (parent kept or flattened), for a sparse 1 TiB
//! image, and for a copy killed with SIGKILL and run again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Rbdx;

/// Exports `spec` (an image or a snapshot) and returns its bytes.
fn export(rbdx: &Rbdx, spec: &str) -> Vec<u8> {
    let out = rbdx.path().join("export.raw");
    let _ = std::fs::remove_file(&out);
    rbdx.run(&["export", "--no-progress", spec, out.to_str().unwrap()])
        .ok();
    std::fs::read(&out).unwrap()
}

/// Writes 64 random 4 KiB blocks and a few 64 KiB ones into `image`.
fn scatter(rbdx: &Rbdx, image: &str) {
    for (size, total) in [("4K", "256K"), ("64K", "512K")] {
        rbdx.run(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            size,
            "--io-total",
            total,
            "--io-pattern",
            "rand",
            image,
        ])
        .ok();
    }
}

/// Makes `image` of `size` with options `create`, three snapshots and writes between them.
fn with_history(rbdx: &Rbdx, image: &str, size: &str, create: &[&str]) -> Vec<String> {
    let mut args = vec!["create", "--size", size, image];
    args.extend_from_slice(create);
    rbdx.run(&args).ok();
    let mut snaps = Vec::new();
    for snap in ["one", "two", "three"] {
        scatter(rbdx, image);
        rbdx.run(&[
            "snap",
            "create",
            "--no-progress",
            &format!("{image}@{snap}"),
        ])
        .ok();
        snaps.push(snap.to_owned());
    }
    scatter(rbdx, image);
    snaps
}

fn snap_names(rbdx: &Rbdx, image: &str) -> Vec<String> {
    rbdx.run(&["snap", "ls", image, "--format", "json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks that `copy` holds what `source` holds at the head and at every snapshot in `snaps`.
fn assert_same(rbdx: &Rbdx, source: &str, copy: &str, snaps: &[String]) {
    let views = std::iter::once(String::new()).chain(snaps.iter().map(|s| format!("@{s}")));
    for view in views {
        let want = export(rbdx, &format!("{source}{view}"));
        let got = export(rbdx, &format!("{copy}{view}"));
        assert_eq!(got.len(), want.len(), "size of {copy}{view}");
        if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{copy}{view} differs from {source}{view} at byte {at}");
        }
    }
}

#[test]
fn deep_cp_copies_every_snapshot_across_layouts_pools_and_namespaces() {
    let rbdx = Rbdx::new();
    rbdx.run(&["pool", "create", "two"]).ok();
    rbdx.run(&["namespace", "create", "two/ns"]).ok();
    // 10 MiB + 12 KiB: the last object is cut short; the source is striped.
    let snaps = with_history(
        &rbdx,
        "src",
        "10252K",
        &["--stripe-unit", "64K", "--stripe-count", "4"],
    );
    let before = export(&rbdx, "src");
    rbdx.run(&[
        "deep",
        "cp",
        "--no-progress",
        "src",
        "two/ns/copy",
        "--object-size",
        "1M",
    ])
    .ok();
    assert_eq!(snap_names(&rbdx, "two/ns/copy"), snaps);
    assert_same(&rbdx, "src", "two/ns/copy", &snaps);
    let info = rbdx
        .run(&["info", "two/ns/copy", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["order"], 20);
    assert!(info.get("stripe_unit").is_none(), "{info}");
    // The same with rbd's option spelling and another striping.
    rbdx.run(&[
        "deep",
        "copy",
        "--no-progress",
        "--pool",
        "rbd",
        "--image",
        "src",
        "--dest-pool",
        "two",
        "--dest",
        "striped",
        "--stripe-unit",
        "16K",
        "--stripe-count",
        "8",
    ])
    .ok();
    assert_same(&rbdx, "src", "two/striped", &snaps);
    // The source is untouched, and the copies are images of their own.
    assert_eq!(export(&rbdx, "src"), before);
    rbdx.run(&["status", "two/striped"]).ok();
    let status = rbdx.run(&["status", "two/ns/copy"]).ok().stdout;
    assert!(!status.contains("Migration"), "{status}");
    scatter(&rbdx, "two/ns/copy");
    assert_eq!(export(&rbdx, "src"), before);
    rbdx.run(&["deep", "cp", "--no-progress", "src", "two/striped"])
        .fails(17, "already exists");
    rbdx.run(&["deep", "cp", "--no-progress", "nosuch", "two/x"])
        .fails(2, "nosuch");
    rbdx.run(&["deep", "cp", "--no-progress", "src", "src"])
        .fails(22, "onto itself");
}

#[test]
fn cp_copies_the_head_with_its_parent_data_and_deep_cp_keeps_or_flattens_the_parent() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "--size", "8M", "golden"]).ok();
    scatter(&rbdx, "golden");
    rbdx.run(&["snap", "create", "--no-progress", "golden@base"])
        .ok();
    rbdx.run(&["snap", "protect", "golden@base"]).ok();
    rbdx.run(&["clone", "golden@base", "vm"]).ok();
    scatter(&rbdx, "vm");
    rbdx.run(&["snap", "create", "--no-progress", "vm@s1"]).ok();
    scatter(&rbdx, "vm");
    let snaps = vec!["s1".to_owned()];

    rbdx.run(&["cp", "--no-progress", "vm", "plain"]).ok();
    assert!(snap_names(&rbdx, "plain").is_empty());
    assert_same(&rbdx, "vm", "plain", &[]);
    let info = rbdx.run(&["info", "plain", "--format", "json"]).ok().json();
    assert!(info.get("parent").is_none(), "{info}");

    rbdx.run(&["deep", "cp", "--no-progress", "vm", "linked"])
        .ok();
    assert_same(&rbdx, "vm", "linked", &snaps);
    let info = rbdx
        .run(&["info", "linked", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["parent"]["image"], "golden");
    assert_eq!(info["parent"]["snapshot"], "base");
    let children = rbdx.run(&["children", "golden@base"]).ok().stdout;
    assert!(children.contains("rbd/linked"), "{children}");

    rbdx.run(&["deep", "cp", "--no-progress", "--flatten", "vm", "flat"])
        .ok();
    assert_same(&rbdx, "vm", "flat", &snaps);
    let info = rbdx.run(&["info", "flat", "--format", "json"]).ok().json();
    assert!(info.get("parent").is_none(), "{info}");
    let info = rbdx
        .run(&["info", "flat@s1", "--format", "json"])
        .ok()
        .json();
    assert!(info.get("parent").is_none(), "{info}");
}

#[test]
fn a_sparse_image_copies_only_its_data_and_copies_go_to_another_store() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "--size", "1T", "huge"]).ok();
    for offset in ["0", "1G", "700G"] {
        let input = rbdx.path().join("block");
        std::fs::write(&input, vec![0x5au8; 8 << 20].as_slice()).unwrap();
        let _ = offset;
    }
    rbdx.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "8M",
        "--io-pattern",
        "rand",
        "huge",
    ])
    .ok();
    rbdx.run(&["snap", "create", "--no-progress", "huge@s"])
        .ok();
    // Another store, named as --cluster names one (its embedded store under XDG_DATA_HOME).
    let home = tempfile::tempdir().unwrap();
    let run_b = |args: &[&str]| {
        let out = Command::new(Rbdx::binary())
            .args(args)
            .env("RBDX_DATA_DIR", rbdx.path())
            .env("XDG_DATA_HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run_b(&[
        "deep",
        "cp",
        "--no-progress",
        "huge",
        "huge",
        "--dest-cluster",
        "site-b",
    ]);
    let b = |args: &[&str]| {
        let mut full = vec!["--cluster", "site-b"];
        full.extend_from_slice(args);
        let out = Command::new(Rbdx::binary())
            .args(&full)
            .env_remove("RBDX_DATA_DIR")
            .env("XDG_DATA_HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let du: serde_json::Value =
        serde_json::from_slice(&b(&["du", "huge", "--format", "json"])).unwrap();
    let used: u64 = du["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["used_size"].as_u64().unwrap())
        .sum();
    assert!(
        used <= 16 << 20,
        "the copy holds only the written data: {du}"
    );
    let snaps: serde_json::Value =
        serde_json::from_slice(&b(&["snap", "ls", "huge", "--format", "json"])).unwrap();
    assert_eq!(snaps[0]["name"], "s");
    // Same bytes where the source has data, and a hole elsewhere.
    let diff_src: serde_json::Value =
        serde_json::from_slice(&run_b(&["diff", "huge", "--format", "json"])).unwrap();
    let diff_dst: serde_json::Value =
        serde_json::from_slice(&b(&["diff", "huge", "--format", "json"])).unwrap();
    assert_eq!(diff_src, diff_dst);
    // A clone cannot keep its parent in another store.
    rbdx.run(&["snap", "protect", "huge@s"]).ok();
    rbdx.run(&["clone", "huge@s", "kid"]).ok();
    let out = Command::new(Rbdx::binary())
        .args([
            "deep",
            "cp",
            "--no-progress",
            "kid",
            "kid",
            "--dest-cluster",
            "site-b",
        ])
        .env("RBDX_DATA_DIR", rbdx.path())
        .env("XDG_DATA_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(22));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flatten"));
}

#[test]
fn a_deep_cp_killed_midway_finishes_when_run_again() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "--size", "64M", "src"]).ok();
    rbdx.run(&[
        "bench",
        "src",
        "--io-type",
        "write",
        "--io-size",
        "1M",
        "--io-total",
        "48M",
        "--io-pattern",
        "rand",
    ])
    .ok();
    rbdx.run(&["snap", "create", "--no-progress", "src@s"]).ok();
    scatter(&rbdx, "src");
    let args = [
        "deep",
        "cp",
        "--no-progress",
        "--bandwidth-limit",
        "16M",
        "src",
        "dst",
    ];
    let mut child = Command::new(Rbdx::binary())
        .args(args)
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the copy has made progress, then kill it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = rbdx.run(&["status", "dst", "--format", "json"]);
        if status.code == 0 {
            let copied = status.json()["migration"]["bytes_copied"]
                .as_u64()
                .unwrap_or(0);
            if copied > 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = rbdx.run(&["status", "dst"]).ok().stdout;
    assert!(status.contains("Migration"), "cut short: {status}");
    rbdx.run(&["deep", "cp", "--no-progress", "src", "dst"])
        .ok();
    assert_same(&rbdx, "src", "dst", &["s".to_owned()]);
    let status = rbdx.run(&["status", "dst"]).ok().stdout;
    assert!(!status.contains("Migration"), "{status}");
}
