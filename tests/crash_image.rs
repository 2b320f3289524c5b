//! Crash test: a writer process is killed with SIGKILL during heavy I/O while snapshots are
//! being taken (and snapshot commands are killed too); afterwards every snapshot and the head
//! must be readable, hold only what was written (whole 4 KiB blocks of the writer's pattern or
//! zeros), and the object maps must be valid or flagged invalid and repaired by a rebuild.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Rbdx;

const ROUNDS: usize = 6;

fn spawn(rbdx: &Rbdx, args: &[&str]) -> Child {
    Command::new(Rbdx::binary())
        .args(args)
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Checks that `bytes` consists of whole 4 KiB blocks of zeros or of the bench pattern.
fn only_whole_blocks(bytes: &[u8], what: &str) {
    for (n, block) in bytes.chunks(4096).enumerate() {
        let first = block[0];
        assert!(
            (first == 0 || first == 0xa5) && block.iter().all(|&b| b == first),
            "{what}: block {n} is torn"
        );
    }
}

fn export(rbdx: &Rbdx, spec: &str, dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join(spec.replace(['/', '@'], "_"));
    let _ = std::fs::remove_file(&path);
    rbdx.run(&["export", spec, path.to_str().unwrap(), "--no-progress"])
        .ok();
    std::fs::read(&path).unwrap()
}

#[test]
fn killed_writers_and_snapshotters_leave_consistent_images() {
    let rbdx = Rbdx::new();
    let files = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "crash", "--size", "32M", "--object-size", "1M"])
        .ok();
    let mut snaps = 0;
    for round in 0..ROUNDS {
        let writer = spawn(
            &rbdx,
            &[
                "bench",
                "crash",
                "--io-type",
                "write",
                "--io-size",
                "4K",
                "--io-threads",
                "16",
                "--io-total",
                "100G",
                "--io-pattern",
                "rand",
            ],
        );
        std::thread::sleep(Duration::from_millis(150 + 40 * round as u64));
        // One snapshot completes (the writer hands its lock over), one is killed midway.
        snaps += 1;
        let name = format!("crash@r{round}");
        let done = rbdx.run(&["snap", "create", &name, "--no-progress"]);
        assert!(done.code == 0, "snap create failed: {}", done.stderr);
        let killed_snap = spawn(&rbdx, &["snap", "create", &format!("crash@k{round}")]);
        std::thread::sleep(Duration::from_millis(5 * round as u64));
        kill(killed_snap);
        std::thread::sleep(Duration::from_millis(50));
        kill(writer);
    }
    let list = rbdx
        .run(&["snap", "ls", "crash", "--format", "json"])
        .ok()
        .json();
    let names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.len() >= snaps, "{names:?}");
    let check = rbdx
        .run(&["object-map", "check", "crash", "--format", "json"])
        .ok()
        .json();
    if check["valid"] != true {
        rbdx.run(&["object-map", "rebuild", "crash", "--no-progress"])
            .ok();
        let again = rbdx
            .run(&["object-map", "check", "crash", "--format", "json"])
            .ok()
            .json();
        assert_eq!(again["valid"], true, "{again}");
    }
    let head = export(&rbdx, "crash", files.path());
    only_whole_blocks(&head, "head");
    assert!(head.contains(&0xa5), "the writer wrote nothing");
    for name in &names {
        let snap = export(&rbdx, &format!("crash@{name}"), files.path());
        only_whole_blocks(&snap, name);
    }
    // The image is still fully usable.
    rbdx.run(&[
        "bench",
        "crash",
        "--io-type",
        "write",
        "--io-total",
        "1M",
        "--format",
        "json",
    ])
    .ok();
    rbdx.run(&["snap", "purge", "crash", "--no-progress"]).ok();
    rbdx.run(&["rm", "crash", "--no-progress"]).ok();
}
