//! End-to-end tests of the image commands through the built `rbdx` binary on a temporary
//! embedded store: outputs (plain, JSON, XML), errors and exit statuses as `rbd` has them.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};

use common::Rbdx;

const MIB: usize = 1 << 20;

fn files() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

fn info(rbdx: &Rbdx, spec: &str) -> serde_json::Value {
    rbdx.run(&["info", spec, "--format", "json"]).ok().json()
}

#[test]
fn create_applies_layout_and_features_and_refuses_bad_input() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "--size", "1G", "a"]).ok();
    let a = info(&rbdx, "a");
    assert_eq!(a["size"], 1u64 << 30);
    assert_eq!(a["objects"], 256);
    assert_eq!(a["order"], 22);
    assert_eq!(
        a["features"],
        serde_json::json!([
            "layering",
            "exclusive-lock",
            "object-map",
            "fast-diff",
            "deep-flatten"
        ])
    );
    assert_eq!(
        a["block_name_prefix"],
        format!("rbd_data.{}", a["id"].as_str().unwrap())
    );

    rbdx.run(&[
        "create",
        "b",
        "--size=1025M",
        "--object-size",
        "8M",
        "--image-feature",
        "layering",
    ])
    .ok();
    let b = info(&rbdx, "rbd/b");
    assert_eq!(
        (b["size"].as_u64(), b["order"].as_u64()),
        (Some(1025 << 20), Some(23))
    );
    assert_eq!(b["features"], serde_json::json!(["layering"]));

    rbdx.run(&[
        "create",
        "--pool",
        "rbd",
        "--image",
        "c",
        "-s",
        "64",
        "--order",
        "20",
        "--stripe-unit",
        "64K",
        "--stripe-count",
        "4",
        "--image-feature",
        "layering,exclusive-lock",
        "--image-feature",
        "object-map",
    ])
    .ok();
    let c = info(&rbdx, "c");
    assert_eq!(
        (c["stripe_unit"].as_u64(), c["stripe_count"].as_u64()),
        (Some(65536), Some(4))
    );
    assert_eq!(c["size"], 64 << 20);
    assert!(
        c["features"]
            .as_array()
            .unwrap()
            .contains(&"striping".into())
    );

    rbdx.run(&["pool", "create", "data"]).ok();
    rbdx.run(&["create", "d", "--size", "4M", "--data-pool", "data"])
        .ok();
    assert_eq!(info(&rbdx, "d")["data_pool"], "data");
    let plain = rbdx.run(&["info", "d"]).ok().stdout;
    assert!(
        plain.starts_with("rbd image 'd':\n\tsize 4 MiB in 1 objects\n"),
        "{plain}"
    );
    assert!(plain.contains("\tdata_pool: data\n"), "{plain}");

    rbdx.run(&["create", "a", "--size", "1G"])
        .fails(17, "image a already exists");
    rbdx.run(&["create", "e", "--size", "1X"])
        .fails(22, "invalid size '1X'");
    rbdx.run(&["create", "e", "--size", "1G", "--image-feature", "bogus"])
        .fails(22, "unknown image feature 'bogus'");
    rbdx.run(&[
        "create",
        "e",
        "--size",
        "1G",
        "--image-feature",
        "object-map",
    ])
    .fails(22, "object-map requires exclusive-lock");
    rbdx.run(&[
        "create",
        "e",
        "--size",
        "1G",
        "--image-feature",
        "layering,journaling",
    ])
    .fails(22, "journaling requires exclusive-lock");
    rbdx.run(&["create", "e", "--size", "1G", "--order", "26"])
        .fails(22, "order");
    rbdx.run(&["create", "e", "--size", "1G", "--object-size", "3M"])
        .fails(22, "power of two");
    rbdx.run(&[
        "create",
        "e",
        "--size",
        "1G",
        "--stripe-unit",
        "3K",
        "--stripe-count",
        "2",
    ])
    .fails(22, "stripe unit");
    rbdx.run(&["create", "nosuch/e", "--size", "1G"])
        .fails(2, "pool 'nosuch'");
    let usage = rbdx.run(&["create", "e"]).fails(22, "--size");
    assert_eq!(usage.stderr.lines().count(), 1, "{}", usage.stderr);
    rbdx.run(&["info", "missing"])
        .fails(2, "image missing does not exist");
    let names = rbdx.run(&["list", "--format", "json"]).ok().json();
    assert_eq!(names, serde_json::json!(["a", "b", "c", "d"]));
}

#[test]
fn ls_long_shows_images_and_snapshots() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "x", "--size", "10M"]).ok();
    rbdx.run(&["snap", "create", "x@s1"]).ok();
    rbdx.run(&["snap", "protect", "x@s1"]).ok();
    let long = rbdx.run(&["ls", "-l", "--format", "json"]).ok().json();
    assert_eq!(long[0]["image"], "x");
    assert_eq!(long[0]["size"], 10 << 20);
    assert_eq!(long[0]["format"], 2);
    assert_eq!(long[1]["snapshot"], "s1");
    assert_eq!(long[1]["protected"], "true");
    let plain = rbdx.run(&["ls", "-l"]).ok().stdout;
    let lines: Vec<&str> = plain.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{plain}");
    assert!(
        lines[2].starts_with("x@s1") && lines[2].contains("yes"),
        "{plain}"
    );
    let xml = rbdx.run(&["ls", "--format", "xml"]).ok().stdout;
    assert_eq!(xml.trim(), "<images><image>x</image></images>");
}

#[test]
fn snapshots_list_protect_rename_roll_back_and_purge() {
    let rbdx = Rbdx::new();
    let dir = files();
    let original = data(3 * MIB, 1);
    let src = dir.path().join("src.img");
    std::fs::write(&src, &original).unwrap();
    rbdx.run(&["import", src.to_str().unwrap(), "vm"]).ok();
    rbdx.run(&["snap", "create", "vm@base"]).ok();
    // Overwrite the head (bench writes a fixed pattern), then roll back.
    rbdx.run(&[
        "bench",
        "vm",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "1M",
        "--format",
        "json",
    ])
    .ok();
    let out = dir.path().join("head.img");
    rbdx.run(&["export", "vm", out.to_str().unwrap()]).ok();
    assert_ne!(std::fs::read(&out).unwrap(), original);
    rbdx.run(&["snap", "rollback", "vm@base", "--no-progress"])
        .ok();
    let back = dir.path().join("back.img");
    rbdx.run(&["export", "vm", back.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&back).unwrap(), original);

    let snaps = rbdx
        .run(&["snap", "ls", "vm", "--format", "json"])
        .ok()
        .json();
    assert_eq!(snaps[0]["name"], "base");
    assert_eq!(snaps[0]["size"], 3 * MIB);
    assert_eq!(snaps[0]["protected"], "false");
    assert!(snaps[0]["id"].as_u64().unwrap() > 0);
    let xml = rbdx
        .run(&["snap", "ls", "vm", "--format", "xml"])
        .ok()
        .stdout;
    assert!(xml.starts_with("<snapshots><snapshot><id>"), "{xml}");
    assert!(xml.contains("<name>base</name>"), "{xml}");

    rbdx.run(&["snap", "protect", "vm@base"]).ok();
    rbdx.run(&["snap", "protect", "vm@base"])
        .fails(16, "already protected");
    rbdx.run(&["snap", "rm", "vm@base"]).fails(16, "protected");
    rbdx.run(&["snap", "unprotect", "vm@base"]).ok();
    rbdx.run(&["snap", "unprotect", "vm@base"])
        .fails(22, "already unprotected");
    rbdx.run(&["snap", "rename", "vm@base", "vm@gold"]).ok();
    rbdx.run(&["snap", "create", "vm", "--snap", "second"]).ok();
    rbdx.run(&["snap", "create", "vm@second"])
        .fails(17, "already exists");
    rbdx.run(&["snap", "rename", "vm@gold", "second"])
        .fails(17, "already exists");
    rbdx.run(&["snap", "rm", "vm@nosuch"])
        .fails(2, "snapshot nosuch");
    rbdx.run(&["snap", "create", "vm"])
        .fails(22, "snapshot name was not specified");
    let at_gold = dir.path().join("gold.img");
    rbdx.run(&["export", "vm@gold", at_gold.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&at_gold).unwrap(), original);

    rbdx.run(&["snap", "limit", "set", "vm", "--limit", "2"])
        .ok();
    rbdx.run(&["snap", "create", "vm@third"])
        .fails(122, "snapshot limit of 2");
    rbdx.run(&["snap", "limit", "clear", "vm"]).ok();
    rbdx.run(&["snap", "create", "vm@third"]).ok();

    rbdx.run(&["snap", "protect", "vm@gold"]).ok();
    rbdx.run(&["snap", "purge", "vm"])
        .fails(16, "protected snapshots remain: gold");
    let left = rbdx
        .run(&["snap", "ls", "vm", "--format", "json"])
        .ok()
        .json();
    assert_eq!(left.as_array().unwrap().len(), 1);
    rbdx.run(&["rm", "vm"]).fails(39, "has snapshots");
    rbdx.run(&["snap", "unprotect", "vm@gold"]).ok();
    rbdx.run(&["snap", "purge", "vm"]).ok();
    rbdx.run(&["rm", "vm"]).ok();
    rbdx.run(&["rm", "vm"]).fails(2, "image vm does not exist");
}

#[test]
fn export_and_import_keep_holes_and_clean_up_after_failures() {
    let rbdx = Rbdx::new();
    let dir = files();
    // 16 MiB with data only in its 2nd and 14th MiB.
    let mut content = vec![0u8; 16 * MIB];
    content[MIB..2 * MIB].copy_from_slice(&data(MIB, 3));
    content[13 * MIB..14 * MIB].copy_from_slice(&data(MIB, 4));
    let src = dir.path().join("sparse.img");
    std::fs::write(&src, &content).unwrap();
    rbdx.run(&["import", "--no-progress", src.to_str().unwrap(), "sp"])
        .ok();
    let du = rbdx.run(&["du", "sp", "--format", "json"]).ok().json();
    assert_eq!(du["images"][0]["provisioned_size"], 16 * MIB);
    assert_eq!(
        du["images"][0]["used_size"],
        8 * MIB,
        "2 of 4 objects: {du}"
    );

    let out = dir.path().join("out.img");
    let run = rbdx.run(&["export", "sp", out.to_str().unwrap()]).ok();
    assert!(
        run.stderr
            .contains("Exporting image: 100% complete...done."),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated <= 3 * MIB as u64,
        "export allocated {allocated} bytes"
    );

    rbdx.run(&["export", "sp", out.to_str().unwrap()])
        .fails(17, "cannot create");
    let piped = rbdx.run_with_input(
        &["import", "-", "rbd/piped", "--no-progress"],
        Some(&content),
    );
    piped.ok();
    assert_eq!(info(&rbdx, "piped")["size"], 16 * MIB);
    let mut child = Command::new(Rbdx::binary())
        .args(["export", "piped", "-"])
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exported = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut exported).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(exported, content);

    rbdx.run(&["import", src.to_str().unwrap(), "sp"])
        .fails(17, "image sp already exists");
    assert_eq!(info(&rbdx, "sp")["size"], 16 * MIB);
    let missing = dir.path().join("missing.img");
    rbdx.run(&["import", missing.to_str().unwrap(), "m"])
        .fails(2, "cannot open");
    rbdx.run(&["info", "m"]).fails(2, "does not exist");
    rbdx.run(&["export", "sp", "x.img", "--export-format", "3"])
        .fails(22, "export format 3");
    let names = rbdx.run(&["ls", "--format", "json"]).ok().json();
    assert_eq!(names, serde_json::json!(["piped", "sp"]));
}

#[test]
fn resize_rename_and_metadata() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "r", "--size", "100M"]).ok();
    rbdx.run(&["resize", "r", "--size", "200M"]).ok();
    assert_eq!(info(&rbdx, "r")["size"], 200 * MIB);
    rbdx.run(&["resize", "r", "--size", "50M"])
        .fails(22, "--allow-shrink");
    rbdx.run(&["resize", "--image", "r", "--size", "50M", "--allow-shrink"])
        .ok();
    assert_eq!(info(&rbdx, "r")["objects"], 13);

    rbdx.run(&["create", "other", "--size", "1M"]).ok();
    rbdx.run(&["rename", "r", "other"])
        .fails(17, "image other already exists");
    rbdx.run(&["rename", "r", "renamed"]).ok();
    rbdx.run(&["mv", "renamed", "rbd/r2"]).ok();
    rbdx.run(&["pool", "create", "p2"]).ok();
    rbdx.run(&["rename", "r2", "p2/r3"])
        .fails(22, "within a pool");
    assert_eq!(
        rbdx.run(&["ls", "--format", "json"]).ok().json(),
        serde_json::json!(["other", "r2"])
    );

    rbdx.run(&["image-meta", "set", "r2", "conf_rbd_cache", "false"])
        .ok();
    rbdx.run(&["image-meta", "set", "r2", "owner", "ops team"])
        .ok();
    assert_eq!(
        rbdx.run(&["image-meta", "get", "r2", "owner"]).ok().stdout,
        "ops team\n"
    );
    let all = rbdx
        .run(&["image-meta", "list", "r2", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        all,
        serde_json::json!({"conf_rbd_cache": "false", "owner": "ops team"})
    );
    let plain = rbdx.run(&["image-meta", "ls", "r2"]).ok().stdout;
    assert!(
        plain.starts_with("There are 2 metadata on this image:"),
        "{plain}"
    );
    rbdx.run(&["image-meta", "rm", "r2", "owner"]).ok();
    rbdx.run(&["image-meta", "get", "r2", "owner"])
        .fails(2, "no metadata key 'owner'");
    rbdx.run(&["image-meta", "remove", "r2", "owner"])
        .fails(2, "no metadata key");
}

#[test]
fn namespaces_hold_images_apart() {
    let rbdx = Rbdx::new();
    rbdx.run(&["pool", "init"]).ok();
    rbdx.run(&["namespace", "create", "rbd/tenant"]).ok();
    rbdx.run(&[
        "namespace",
        "create",
        "--pool",
        "rbd",
        "--namespace",
        "other",
    ])
    .ok();
    let names = rbdx
        .run(&["namespace", "ls", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        names,
        serde_json::json!([{"name": "other"}, {"name": "tenant"}])
    );
    rbdx.run(&["create", "rbd/tenant/disk", "--size", "1M"])
        .ok();
    rbdx.run(&["create", "disk", "--namespace", "other", "--size", "2M"])
        .ok();
    assert_eq!(info(&rbdx, "rbd/tenant/disk")["size"], MIB);
    assert_eq!(info(&rbdx, "rbd/other/disk")["size"], 2 * MIB);
    rbdx.run(&["info", "disk"]).fails(2, "does not exist");
    let in_tenant = rbdx
        .run(&["ls", "rbd/tenant", "--format", "json"])
        .ok()
        .json();
    assert_eq!(in_tenant, serde_json::json!(["disk"]));
    rbdx.run(&["namespace", "rm", "rbd/tenant"])
        .fails(16, "still contains images");
    rbdx.run(&["rm", "rbd/tenant/disk", "--no-progress"]).ok();
    rbdx.run(&["namespace", "remove", "rbd/tenant"]).ok();
    rbdx.run(&["create", "rbd/tenant/x", "--size", "1M"])
        .fails(2, "tenant");
    rbdx.run(&["namespace", "create", "rbd"])
        .fails(22, "namespace name");
}

#[test]
fn bench_reports_json_and_status_lists_watchers() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "b", "--size", "64M"]).ok();
    let out = rbdx
        .run(&[
            "bench",
            "b",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-threads",
            "4",
            "--io-total",
            "1M",
            "--io-pattern",
            "rand",
            "--format",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(out["ops"], 256);
    assert_eq!(out["io_pattern"], "random");
    let plain = rbdx
        .run(&["bench", "b", "--io-type", "read", "--io-total", "256K"])
        .ok()
        .stdout;
    assert!(
        plain.starts_with(
            "bench  type read io_size 4096 io_threads 16 bytes 262144 pattern sequential"
        ),
        "{plain}"
    );
    assert!(
        plain.contains("elapsed:") && plain.contains("ops: 64"),
        "{plain}"
    );
    let status = rbdx.run(&["status", "b", "--format", "json"]).ok().json();
    assert_eq!(status, serde_json::json!({"watchers": []}));
    assert_eq!(rbdx.run(&["status", "b"]).ok().stdout, "Watchers: none\n");
    rbdx.run(&["bench", "b", "--io-type", "write", "--io-size", "128M"])
        .fails(22, "larger than the image");
}

#[test]
fn a_snapshot_taken_while_another_process_writes_gets_the_lock_handed_over() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "busy", "--size", "256M"]).ok();
    let writer = Command::new(Rbdx::binary())
        .args([
            "bench",
            "busy",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-threads",
            "8",
            "--io-total",
            "24M",
            "--io-pattern",
            "rand",
            "--format",
            "json",
        ])
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the writer has the image open (it shows as a watcher).
    let mut watched = false;
    for _ in 0..200 {
        let status = rbdx
            .run(&["status", "busy", "--format", "json"])
            .ok()
            .json();
        if !status["watchers"].as_array().unwrap().is_empty() {
            watched = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(watched, "the writer never opened the image");
    rbdx.run(&["snap", "create", "busy@during"]).ok();
    rbdx.run(&["resize", "busy", "--size", "300M"]).ok();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ops"], 6144);
    assert_eq!(info(&rbdx, "busy")["size"], 300 * MIB);
    let snaps = rbdx
        .run(&["snap", "ls", "busy", "--format", "json"])
        .ok()
        .json();
    assert_eq!(snaps[0]["name"], "during");
}

#[test]
fn global_options_go_anywhere_and_errors_are_one_line() {
    let rbdx = Rbdx::new();
    rbdx.run(&["--format", "json", "create", "g", "--size", "1M"])
        .ok();
    let json = rbdx
        .run(&["info", "--format=json", "--image=g"])
        .ok()
        .json();
    assert_eq!(json["name"], "g");
    let err = rbdx
        .run(&["info", "a/b/c/d"])
        .fails(22, "invalid image spec");
    assert_eq!(err.stderr.lines().count(), 1, "{}", err.stderr);
    rbdx.run(&["info", "--pool", "other", "rbd/g"])
        .fails(22, "given twice");
    rbdx.run(&["rm", "g@snap"]).fails(22, "works on images");
}

#[test]
fn version_says_whether_the_rados_backend_is_built_in() {
    let rbdx = Rbdx::new();
    let out = rbdx.run(&["--version"]).ok().stdout;
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("rbdx ", env!("CARGO_PKG_VERSION")))
    );
    let rados = if cfg!(feature = "rados") { "yes" } else { "no" };
    assert_eq!(
        lines.next(),
        Some(format!("rados: {rados}").as_str()),
        "{out}"
    );
}

#[test]
fn scripts_written_for_rbd_run_unchanged() {
    let rbdx = Rbdx::new();
    rbdx.run(&["namespace", "create", "rbd/ns1"]).ok();
    rbdx.run(&["create", "--size", "4M", "x"]).ok();
    rbdx.run(&["create", "--size", "4M", "rbd/ns1/y"]).ok();
    // --image takes a spec.
    assert_eq!(info(&rbdx, "x")["name"], "x");
    let by_option = rbdx
        .run(&["info", "--image", "rbd/x", "--format", "json"])
        .ok()
        .json();
    assert_eq!(by_option["name"], "x");
    let in_ns = rbdx
        .run(&["info", "--image", "rbd/ns1/y", "--format", "json"])
        .ok()
        .json();
    assert_eq!(in_ns["name"], "y");
    rbdx.run(&["info", "--image", "rbd/x", "--pool", "other"])
        .fails(22, "given twice");
    // Command options before the command.
    for line in [
        &["--pool", "rbd", "ls"][..],
        &["-p", "rbd", "ls"],
        &["ls", "-p", "rbd"],
    ] {
        assert_eq!(rbdx.run(line).ok().stdout.trim(), "x", "{line:?}");
    }
    assert_eq!(
        rbdx.run(&["--pool", "rbd", "--namespace", "ns1", "ls"])
            .ok()
            .stdout
            .trim(),
        "y"
    );
    // A user on the embedded store is accepted; a missing keyring is not.
    rbdx.run(&["--id", "admin", "info", "x"]).ok();
    rbdx.run(&["info", "x", "--name", "client.admin"]).ok();
    rbdx.run(&["info", "x", "--keyring", "/nonexistent/keyring"])
        .fails(2, "/nonexistent/keyring");
}
