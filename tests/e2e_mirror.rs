//! Mirroring between two sites on 127.0.0.1, each with its own data dir, gateway and mirror
//! daemon (real processes): bootstrap, journal and snapshot modes, failover and failback,
//! split-brain and resync, clones, disable and removal, bad tokens.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::mirror::{
    Site, create_journaling, mirror_snapshots, peer, scribble, two_sites, wait_equal, wait_for,
};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn journal_mode_replays_writes_snapshots_and_resizes() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/j", "64M");
    scribble(&a, "rbd/j", "64K", "8M");
    a.run(&["snap", "create", "rbd/j@before"]).ok();
    a.run(&["mirror", "image", "enable", "rbd/j", "journal"])
        .ok();
    let _daemon = b.daemon("b");
    wait_for("the copy to replay", WAIT, || {
        b.state("rbd/j") == "up+replaying"
    });
    scribble(&a, "rbd/j", "4K", "2M");
    a.run(&["snap", "create", "rbd/j@during"]).ok();
    scribble(&a, "rbd/j", "16K", "2M");
    a.run(&["resize", "rbd/j", "--size", "96M"]).ok();
    scribble(&a, "rbd/j", "4K", "1M");
    wait_equal(&a, &b, "rbd/j", dir.path(), WAIT);
    for snap in ["rbd/j@before", "rbd/j@during"] {
        assert_eq!(
            a.export(snap, dir.path()),
            b.export(snap, dir.path()),
            "{snap}"
        );
    }
    // Journaling stays while the image is mirrored in journal mode.
    a.run(&["feature", "disable", "rbd/j", "journaling"])
        .fails(22, "mirrored in journal mode");
    let info = b.run(&["info", "rbd/j", "--format", "json"]).ok().json();
    assert_eq!(info["size"], 96 << 20);
    assert_eq!(info["mirroring"]["primary"], false);
    // The copy refuses writes, and reads and exports.
    b.run(&["bench", "--io-type", "write", "--io-total", "4K", "rbd/j"])
        .fails(30, "non-primary");
    b.run(&["snap", "create", "rbd/j@mine"])
        .fails(30, "non-primary");
    // Served read-only over NBD: qemu reads what the primary holds, and cannot write.
    if common::nbd::have("qemu-img", "qemu-utils") {
        let server = common::nbd::Server::start(&b.rbdx, &["rbd/j"]);
        let primary = dir.path().join("primary.raw");
        std::fs::write(&primary, a.export("rbd/j", dir.path()).unwrap()).unwrap();
        common::nbd::compare_raw(&primary, &server.uri("rbd/j"));
        let write = common::nbd::client_output(
            "qemu-io",
            &["-f", "raw", "-c", "write 0 4k", &server.uri("rbd/j")],
        );
        let said = String::from_utf8_lossy(&write.stderr).to_string()
            + &String::from_utf8_lossy(&write.stdout);
        assert!(
            !write.status.success() || said.contains("read-only") || said.contains("ermission"),
            "{said}"
        );
        assert_eq!(a.export("rbd/j", dir.path()), b.export("rbd/j", dir.path()));
    }
    let status = b.status("rbd/j");
    let description = status["description"].as_str().unwrap();
    assert!(description.starts_with("replaying, {"), "{description}");
    assert!(
        description.contains("\"entries_behind_primary\""),
        "{description}"
    );
    assert_eq!(status["peer_sites"][0]["site_name"], "site-a");
    // The primary's side shows both.
    wait_for("the primary to show the peer replaying", WAIT, || {
        a.status("rbd/j")["peer_sites"][0]["state"] == "up+replaying"
    });
}

#[test]
fn snapshot_mode_copies_deltas_between_mirror_snapshots() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    a.run(&["create", "rbd/s", "--size", "64M"]).ok();
    scribble(&a, "rbd/s", "64K", "8M");
    a.run(&["snap", "create", "rbd/s@user"]).ok();
    a.run(&["mirror", "image", "enable", "rbd/s", "snapshot"])
        .ok();
    let _daemon = b.daemon("b");
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
    assert_eq!(
        a.export("rbd/s@user", dir.path()),
        b.export("rbd/s@user", dir.path())
    );
    for _ in 0..3 {
        scribble(&a, "rbd/s", "4K", "1M");
        a.run(&["mirror", "image", "snapshot", "rbd/s"]).ok();
    }
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
    // Writes after the last mirror snapshot stay at the primary until the next one.
    scribble(&a, "rbd/s", "4K", "1M");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(a.export("rbd/s", dir.path()), b.export("rbd/s", dir.path()));
    let mirror = mirror_snapshots(&b, "rbd/s");
    assert!(!mirror.is_empty());
    for s in &mirror {
        assert_eq!(s["namespace"]["state"], "non-primary");
        assert_eq!(s["namespace"]["complete"], true);
        assert!(s["namespace"]["primary_snap_id"].is_u64());
    }
    a.run(&["mirror", "image", "snapshot", "rbd/s"]).ok();
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
    let description = b.status("rbd/s")["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(description.contains("last_snapshot_bytes"), "{description}");
    // Old mirror snapshots are pruned on both sides (the primary keeps those the peer has
    // not copied yet until its next snapshot).
    for _ in 0..6 {
        a.run(&["mirror", "image", "snapshot", "rbd/s"]).ok();
    }
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
    std::thread::sleep(Duration::from_secs(4));
    a.run(&["mirror", "image", "snapshot", "rbd/s"]).ok();
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
    for site in [&a, &b] {
        let count = mirror_snapshots(site, "rbd/s").len();
        assert!(count <= 5, "{} keeps {count} mirror snapshots", site.name);
    }
}

#[test]
fn orderly_failover_and_failback_keep_every_write() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/j", "32M");
    a.run(&["create", "rbd/s", "--size", "32M"]).ok();
    a.run(&["mirror", "image", "enable", "rbd/j", "journal"])
        .ok();
    a.run(&["mirror", "image", "enable", "rbd/s", "snapshot"])
        .ok();
    let _da = a.daemon("a");
    let _db = b.daemon("b");
    for spec in ["rbd/j", "rbd/s"] {
        wait_for("the copies to replay", WAIT, || {
            b.state(spec) == "up+replaying"
        });
        scribble(&a, spec, "4K", "1M");
    }
    // Demote at A, promote at B at once: the promotion waits for the demotion to arrive.
    for spec in ["rbd/j", "rbd/s"] {
        a.run(&["mirror", "image", "demote", spec]).ok();
        b.run(&["mirror", "image", "promote", spec]).ok();
        scribble(&b, spec, "4K", "1M");
    }
    for spec in ["rbd/j", "rbd/s"] {
        if spec == "rbd/s" {
            b.run(&["mirror", "image", "snapshot", spec]).ok();
        }
        wait_equal(&a, &b, spec, dir.path(), WAIT);
        a.run(&["bench", "--io-type", "write", "--io-total", "4K", spec])
            .fails(30, "non-primary");
    }
    // And back.
    for spec in ["rbd/j", "rbd/s"] {
        b.run(&["mirror", "image", "demote", spec]).ok();
        a.run(&["mirror", "image", "promote", spec]).ok();
        scribble(&a, spec, "4K", "1M");
        if spec == "rbd/s" {
            a.run(&["mirror", "image", "snapshot", spec]).ok();
        }
        wait_equal(&a, &b, spec, dir.path(), WAIT);
    }
    wait_for("the primary to report itself", WAIT, || {
        a.state("rbd/j") == "up+stopped"
    });
}

#[test]
fn a_forced_promotion_is_split_brain_until_the_old_primary_is_resynced() {
    let (mut a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/j", "32M");
    a.run(&["mirror", "image", "enable", "rbd/j", "journal"])
        .ok();
    scribble(&a, "rbd/j", "4K", "1M");
    let _da = a.daemon("a");
    let _db = b.daemon("b");
    wait_equal(&a, &b, "rbd/j", dir.path(), WAIT);
    // A is cut off; B takes over and is written; A is written meanwhile.
    a.cut_off();
    b.run(&["mirror", "image", "promote", "--timeout", "1", "rbd/j"])
        .fails(16, "promote with --force");
    b.run(&["mirror", "image", "promote", "--force", "rbd/j"])
        .ok();
    scribble(&b, "rbd/j", "4K", "1M");
    scribble(&a, "rbd/j", "4K", "512K");
    a.reconnect();
    for site in [&a, &b] {
        wait_for("split-brain to be reported", WAIT, || {
            let s = site.status("rbd/j");
            s["state"] == "up+error" && s["description"].as_str().unwrap().contains("split-brain")
        });
    }
    // Nothing was overwritten at A.
    assert_ne!(a.export("rbd/j", dir.path()), b.export("rbd/j", dir.path()));
    a.run(&["mirror", "image", "resync", "rbd/j"])
        .fails(22, "primary");
    a.run(&["mirror", "image", "demote", "rbd/j"]).ok();
    a.run(&["mirror", "image", "resync", "--full", "rbd/j"])
        .ok();
    wait_equal(&a, &b, "rbd/j", dir.path(), WAIT);
    wait_for("A to replay B", WAIT, || a.state("rbd/j") == "up+replaying");
}

#[test]
fn a_clone_of_a_clone_is_mirrored_with_its_parents_and_stays_thin() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    a.run(&["create", "rbd/p", "--size", "32M"]).ok();
    scribble(&a, "rbd/p", "64K", "16M");
    a.run(&["snap", "create", "rbd/p@base"]).ok();
    a.run(&["snap", "protect", "rbd/p@base"]).ok();
    a.run(&["clone", "rbd/p@base", "rbd/c1"]).ok();
    write_start(&a, "rbd/c1");
    a.run(&["snap", "create", "rbd/c1@cb"]).ok();
    a.run(&["snap", "protect", "rbd/c1@cb"]).ok();
    a.run(&["clone", "rbd/c1@cb", "rbd/c2"]).ok();
    write_start(&a, "rbd/c2");
    let enabled = a
        .run(&["mirror", "image", "enable", "rbd/c2", "snapshot"])
        .ok();
    assert!(
        enabled.stderr.contains("parent image p"),
        "{}",
        enabled.stderr
    );
    assert!(
        enabled.stderr.contains("parent image c1"),
        "{}",
        enabled.stderr
    );
    let _db = b.daemon("b");
    for spec in ["rbd/p", "rbd/c1", "rbd/c2"] {
        wait_equal(&a, &b, spec, dir.path(), WAIT);
    }
    let info = b.run(&["info", "rbd/c2", "--format", "json"]).ok().json();
    assert_eq!(info["parent"]["image"], "c1");
    assert_eq!(info["parent"]["snapshot"], "cb");
    // Thin: each copy of a clone holds the objects its primary holds itself (the first
    // one), not its parents' data (four objects).
    for spec in ["rbd/c1", "rbd/c2"] {
        assert_eq!(data_objects(&a, spec), 1, "{spec} at site-a");
        assert_eq!(data_objects(&b, spec), 1, "{spec} at site-b");
    }
    // Disabling at the primary removes the copy; so does removing the image.
    a.run(&["mirror", "image", "disable", "rbd/c2"]).ok();
    wait_for("the copy of c2 to go", WAIT, || {
        b.run(&["info", "rbd/c2"]).code == 2
    });
    a.run(&["mirror", "image", "enable", "rbd/c2", "snapshot"])
        .ok();
    wait_equal(&a, &b, "rbd/c2", dir.path(), WAIT);
    a.run(&["rm", "rbd/c2"]).ok();
    wait_for("the copy of c2 to go after removal", WAIT, || {
        b.run(&["info", "rbd/c2"]).code == 2
    });
}

/// Writes 512 KiB at the start of `spec` (its first object).
fn write_start(site: &Site, spec: &str) {
    site.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "512K",
        spec,
    ])
    .ok();
}

/// Counts the data objects of image `spec` (pool `rbd`).
fn data_objects(site: &Site, spec: &str) -> usize {
    let info = site.run(&["info", spec, "--format", "json"]).ok().json();
    let prefix = format!("{}.", info["block_name_prefix"].as_str().unwrap());
    site.run(&["rados", "-p", "rbd", "ls"])
        .ok()
        .stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

#[test]
fn pool_mode_mirrors_every_journaling_image() {
    let (a, b) = two_sites("rbd", "pool");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/auto", "16M");
    a.run(&["create", "rbd/plain", "--size", "16M"]).ok();
    scribble(&a, "rbd/auto", "4K", "512K");
    let _db = b.daemon("b");
    wait_equal(&a, &b, "rbd/auto", dir.path(), WAIT);
    assert_eq!(b.run(&["info", "rbd/plain"]).code, 2);
    let status = b
        .run(&["mirror", "pool", "status", "rbd", "--format", "json"])
        .ok()
        .json();
    assert_eq!(status["summary"]["states"]["replaying"], 1);
    let info = a
        .run(&["mirror", "pool", "info", "rbd", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["mode"], "pool");
    assert_eq!(info["peers"][0]["site_name"], "site-b");
    assert_eq!(info["peers"][0]["direction"], "rx-tx");
}

#[test]
fn bad_tokens_are_refused_with_one_line_and_register_nothing() {
    let a = Site::new("site-a", "rbd", "image");
    let b = Site::new("site-b", "rbd", "image");
    let no_peers = |site: &Site| {
        let info = site
            .run(&["mirror", "pool", "info", "rbd", "--format", "json"])
            .ok()
            .json();
        assert_eq!(info["peers"], serde_json::json!([]), "{}", site.name);
    };
    let import = |site: &Site, token: &str| {
        site.rbdx.run_with_input(
            &["mirror", "pool", "peer", "bootstrap", "import", "rbd", "-"],
            Some(token.as_bytes()),
        )
    };
    let one_line = |run: common::Run| {
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    };
    let garbage = import(&b, "this is no token");
    assert_eq!(garbage.code, 22, "{}", garbage.stderr);
    one_line(garbage);
    let token = a
        .run(&["mirror", "pool", "peer", "bootstrap", "create", "rbd"])
        .ok()
        .stdout;
    // A token of this very site.
    let own = import(&a, &token);
    assert_eq!(own.code, 22, "{}", own.stderr);
    one_line(own);
    // A peer with the same site name.
    let twin = Site::new("site-a", "rbd", "image");
    let same = import(&twin, &token);
    assert_eq!(same.code, 22, "{}", same.stderr);
    assert!(
        same.stderr.contains("duplicate site name"),
        "{}",
        same.stderr
    );
    one_line(same);
    // An expired key: removed at the issuing site.
    let keys = a
        .run(&["gateway", "key", "ls", "--format", "json"])
        .ok()
        .json();
    let name = keys[0]["name"].as_str().unwrap().to_owned();
    a.run(&["gateway", "key", "rm", &name]).ok();
    let expired = import(&b, &token);
    assert_eq!(expired.code, 13, "{}", expired.stderr);
    one_line(expired);
    for site in [&a, &b, &twin] {
        no_peers(site);
    }
    // A pool not mirrored at the issuing site.
    let c = Site::new("site-c", "rbd", "image");
    c.run(&["pool", "create", "other"]).ok();
    let token = c
        .run(&["mirror", "pool", "peer", "bootstrap", "create", "other"])
        .fails(22, "not enabled");
    drop(token);
    // A good token works, and importing it again changes nothing.
    peer(&a, &b, "rbd", "rx-only");
    peer(&a, &b, "rbd", "rx-only");
    let info = b
        .run(&["mirror", "pool", "info", "rbd", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["peers"].as_array().unwrap().len(), 1);
    assert_eq!(info["peers"][0]["direction"], "rx-only");
}

#[test]
fn snapshot_schedules_are_listed_and_carried_out_where_images_are_primary() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    a.run(&["create", "rbd/s", "--size", "16M"]).ok();
    a.run(&["mirror", "image", "enable", "rbd/s", "snapshot"])
        .ok();
    a.run(&[
        "mirror", "snapshot", "schedule", "add", "--pool", "rbd", "1m",
    ])
    .ok();
    a.run(&[
        "mirror",
        "snapshot",
        "schedule",
        "add",
        "--pool",
        "rbd",
        "--image",
        "s",
        "1d",
        "14:00:00-05:00",
    ])
    .ok();
    a.run(&[
        "mirror", "snapshot", "schedule", "add", "--pool", "rbd", "2x",
    ])
    .fails(22, "invalid interval");
    let ls = a
        .run(&[
            "mirror", "snapshot", "schedule", "ls", "--pool", "rbd", "-R",
        ])
        .ok()
        .stdout;
    assert!(ls.contains("every 1m"), "{ls}");
    assert!(ls.contains("every 1d starting at 14:00:00-05:00"), "{ls}");
    // The image's own schedule applies (the most specific one); drop it so the pool's runs.
    a.run(&[
        "mirror", "snapshot", "schedule", "remove", "--pool", "rbd", "--image", "s",
    ])
    .ok();
    let status = a
        .run(&[
            "mirror", "snapshot", "schedule", "status", "--format", "json",
        ])
        .ok()
        .json();
    assert_eq!(status["scheduled_images"][0]["image"], "rbd/s");
    let mirror_snaps = |site: &Site| mirror_snapshots(site, "rbd/s").len();
    let before = mirror_snaps(&a);
    let _da = a.daemon("a");
    let _db = b.daemon("b");
    scribble(&a, "rbd/s", "4K", "256K");
    wait_for(
        "a scheduled mirror snapshot",
        Duration::from_secs(100),
        || mirror_snaps(&a) > before,
    );
    wait_equal(&a, &b, "rbd/s", dir.path(), WAIT);
}
