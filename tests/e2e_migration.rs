//! `rbdx migration` end to end on the embedded store: a live migration between pools run
//! the way Ceph's scripts run it (status wording, exit statuses), an import-only migration
//! of a qcow2 made by qemu-img with internal snapshots, and the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::Rbdx;

fn export(rbdx: &Rbdx, spec: &str, dir: &std::path::Path, tag: &str) -> Vec<u8> {
    let path = dir.join(format!("{tag}.raw"));
    rbdx.run(&["export", "--no-progress", spec, path.to_str().unwrap()])
        .ok();
    std::fs::read(path).unwrap()
}

#[test]
fn live_migration_between_pools_as_cephs_scripts_run_it() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["pool", "create", "fast"]).ok();
    rbdx.run(&["create", "--size", "24M", "--object-size", "1M", "disk"])
        .ok();
    rbdx.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-total",
        "6M",
        "--io-pattern",
        "rand",
        "disk",
    ])
    .ok();
    rbdx.run(&["snap", "create", "disk@s1"]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "2M", "disk"])
        .ok();
    rbdx.run(&["snap", "create", "disk@s2"]).ok();
    let head = export(&rbdx, "disk", dir.path(), "head");
    let s1 = export(&rbdx, "disk@s1", dir.path(), "s1");
    let s2 = export(&rbdx, "disk@s2", dir.path(), "s2");

    // A new layout on the way: 4 MiB objects instead of 1 MiB.
    rbdx.run(&[
        "migration",
        "prepare",
        "rbd/disk",
        "fast/disk",
        "--object-size",
        "4M",
    ])
    .ok();
    rbdx.run(&["info", "disk"]).fails(2, "disk");
    let trash = rbdx.run(&["trash", "ls", "--all"]).ok();
    assert!(trash.stdout.contains(" disk"), "{}", trash.stdout);
    let status = rbdx.run(&["status", "fast/disk"]).ok();
    assert!(status.stdout.contains("Migration:"), "{}", status.stdout);
    assert!(
        status.stdout.contains("source: rbd/disk ("),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("destination: fast/disk ("),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("state: prepared"),
        "{}",
        status.stdout
    );
    // Usable at once, at every snapshot.
    assert_eq!(export(&rbdx, "fast/disk", dir.path(), "p-head"), head);
    assert_eq!(export(&rbdx, "fast/disk@s1", dir.path(), "p-s1"), s1);
    rbdx.run(&["migration", "commit", "fast/disk"])
        .fails(22, "not executed");

    let run = rbdx.run(&["migration", "execute", "fast/disk"]).ok();
    assert!(
        run.stderr
            .contains("Image migration: 100% complete...done."),
        "{}",
        run.stderr
    );
    let status = rbdx
        .run(&["status", "--format", "json", "fast/disk"])
        .ok()
        .json();
    assert_eq!(status["migration"]["state"], "executed");
    rbdx.run(&["migration", "verify", "fast/disk"]).ok();
    rbdx.run(&["migration", "commit", "fast/disk"]).ok();
    let status = rbdx.run(&["status", "fast/disk"]).ok();
    assert!(!status.stdout.contains("Migration:"), "{}", status.stdout);
    assert_eq!(export(&rbdx, "fast/disk", dir.path(), "c-head"), head);
    assert_eq!(export(&rbdx, "fast/disk@s1", dir.path(), "c-s1"), s1);
    assert_eq!(export(&rbdx, "fast/disk@s2", dir.path(), "c-s2"), s2);
    let info = rbdx
        .run(&["info", "--format", "json", "fast/disk"])
        .ok()
        .json();
    assert_eq!(info["order"], 22);
    assert!(
        rbdx.run(&["trash", "ls", "--all"])
            .ok()
            .stdout
            .trim()
            .is_empty()
    );
}

#[test]
fn import_only_from_a_qcow2_with_internal_snapshots() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let qcow = dir.path().join("vm.qcow2");
    let q = qcow.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["qemu-img", "create", "-q", "-f", "qcow2", q, "16M"]);
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 1 0 1M",
        "-c",
        "write -P 2 5M 64k",
        q,
    ]);
    run(&["qemu-img", "snapshot", "-c", "first", q]);
    run(&[
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 3 512k 1M",
        "-c",
        "write -z 5M 64k",
        q,
    ]);
    let head_raw = dir.path().join("head.raw");
    let first_raw = dir.path().join("first.raw");
    run(&[
        "qemu-img",
        "convert",
        "-O",
        "raw",
        q,
        head_raw.to_str().unwrap(),
    ]);
    run(&[
        "qemu-img",
        "convert",
        "-O",
        "raw",
        "-l",
        "snapshot.name=first",
        q,
        first_raw.to_str().unwrap(),
    ]);
    let spec = format!(r#"{{"type":"qcow","stream":{{"type":"file","file_path":"{q}"}}}}"#);

    let dry = rbdx
        .run(&[
            "migration",
            "prepare",
            "--import-only",
            "--dry-run",
            "--source-spec",
            &spec,
            "vm",
            "--format",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(dry["size"], 16 << 20);
    assert_eq!(dry["snapshots"][0]["name"], "first");
    assert!(rbdx.run(&["ls"]).ok().stdout.trim().is_empty());

    rbdx.run_with_input(
        &[
            "migration",
            "prepare",
            "--import-only",
            "--source-spec-path",
            "-",
            "vm",
        ],
        Some(spec.as_bytes()),
    )
    .ok();
    let status = rbdx.run(&["status", "vm"]).ok();
    assert!(
        status.stdout.contains(r#"source: {"stream":{"file_path":"#),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("state: prepared"),
        "{}",
        status.stdout
    );
    assert!(export(&rbdx, "vm", dir.path(), "p") == std::fs::read(&head_raw).unwrap());
    rbdx.run(&["migration", "execute", "--no-progress", "vm"])
        .ok();
    rbdx.run(&["migration", "commit", "--no-progress", "vm"])
        .ok();
    std::fs::remove_file(&qcow).unwrap();
    assert!(export(&rbdx, "vm", dir.path(), "h") == std::fs::read(&head_raw).unwrap());
    assert!(export(&rbdx, "vm@first", dir.path(), "f") == std::fs::read(&first_raw).unwrap());

    // Refusals: nothing is created or changed.
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "vm",
    ])
    .fails(17, "vm");
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        "{not json",
        "x",
    ])
    .fails(74, "JSON");
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        r#"{"type":"vmdk"}"#,
        "x",
    ])
    .fails(38, "vmdk");
    let missing = r#"{"type":"raw","stream":{"type":"file","file_path":"/nonexistent/x"}}"#;
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        missing,
        "x",
    ])
    .fails(2, "/nonexistent/x");
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "rbd/vm@nosuch",
        "x",
    ])
    .fails(2, "nosuch");
    let listed = rbdx.run(&["ls"]).ok();
    assert_eq!(listed.stdout.trim(), "vm");
}

#[test]
fn abort_restores_the_source_writable() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["create", "--size", "8M", "disk"]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "3M", "disk"])
        .ok();
    let before = export(&rbdx, "disk", dir.path(), "before");
    rbdx.run(&["migration", "prepare", "disk", "moved"]).ok();
    rbdx.run(&["migration", "execute", "moved"]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", "moved"])
        .ok();
    rbdx.run(&["migration", "abort", "moved"]).ok();
    rbdx.run(&["info", "moved"]).fails(2, "moved");
    assert_eq!(export(&rbdx, "disk", dir.path(), "after"), before);
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", "disk"])
        .ok();
    rbdx.run(&["migration", "abort", "disk"])
        .fails(22, "not the destination");
}

/// Spawns `rbdx` with `args` on `rbdx`'s store, its output discarded.
fn spawn(rbdx: &Rbdx, args: &[&str]) -> std::process::Child {
    Command::new(Rbdx::binary())
        .args(args)
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and checks it succeeded.
fn finish(child: std::process::Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn writes_from_other_processes_during_execute_land_on_top_of_the_source() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    // 24 MiB, every 4 KiB block distinct from the benchmark's 0xa5 blocks, a third of it holes.
    let size = 24usize << 20;
    let source: Vec<u8> = (0..size)
        .map(|i| {
            if (i >> 16) % 3 == 2 {
                0
            } else {
                (i % 253) as u8
            }
        })
        .collect();
    let file = dir.path().join("source.raw");
    std::fs::write(&file, &source).unwrap();
    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        file.display()
    );
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--object-size",
        "1M",
        "--source-spec",
        &spec,
        "vm",
    ])
    .ok();

    // The copy and two writers start together at the first objects: one writes [0, 3 MiB)
    // in order, one writes 4 KiB blocks all over the image.
    let execute = spawn(
        &rbdx,
        &[
            "migration",
            "execute",
            "--no-progress",
            "--bandwidth-limit",
            "12M",
            "vm",
        ],
    );
    let bench = |pattern: &str, total: &str| {
        spawn(
            &rbdx,
            &[
                "bench",
                "--io-type",
                "write",
                "--io-size",
                "4K",
                "--io-threads",
                "4",
                "--io-total",
                total,
                "--io-pattern",
                pattern,
                "vm",
            ],
        )
    };
    let (seq, rand) = (bench("seq", "3M"), bench("rand", "2M"));
    // Any process sees the copy going on, in Ceph's words.
    let mut seen = String::new();
    for _ in 0..100 {
        let status = rbdx.run(&["status", "vm"]).ok().stdout;
        if let Some(line) = status.lines().find(|l| l.contains("state: executing (")) {
            seen = line.trim().to_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        seen.ends_with("% complete)"),
        "status never showed the copy: {seen}"
    );
    finish(seq, "sequential writer");
    finish(rand, "random writer");
    finish(execute, "execute");
    let status = rbdx.run(&["status", "--format", "json", "vm"]).ok().json();
    assert_eq!(status["migration"]["state"], "executed", "{status}");
    rbdx.run(&["migration", "commit", "--no-progress", "vm"])
        .ok();
    std::fs::remove_file(&file).unwrap();

    let got = export(&rbdx, "vm", dir.path(), "final");
    assert_eq!(got.len(), size);
    let written = [0xa5u8; 4096];
    let mut overwritten = 0;
    for (n, (block, want)) in got.chunks(4096).zip(source.chunks(4096)).enumerate() {
        if n < (3 << 20) / 4096 {
            assert_eq!(block, &written[..], "block {n} lacks the sequential write");
        } else if block == &written[..] {
            overwritten += 1;
        } else {
            assert_eq!(block, want, "block {n} is neither the source's nor a write");
        }
    }
    assert!(overwritten > 0, "no random write landed past 3 MiB");
}

#[test]
fn refusals_name_the_problem_and_change_nothing() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&["pool", "create", "fast"]).ok();
    rbdx.run(&["create", "--size", "8M", "disk"]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "2M", "disk"])
        .ok();
    rbdx.run(&["create", "--size", "8M", "fast/taken"]).ok();
    let before = export(&rbdx, "disk", dir.path(), "before");
    let unchanged = |what: &str| {
        assert_eq!(rbdx.run(&["ls"]).ok().stdout.trim(), "disk", "{what}");
        assert_eq!(
            rbdx.run(&["ls", "fast"]).ok().stdout.trim(),
            "taken",
            "{what}"
        );
        let trash = rbdx.run(&["trash", "ls", "--all"]).ok().stdout;
        assert!(trash.trim().is_empty(), "{what}: {trash}");
        let status = rbdx.run(&["status", "disk"]).ok().stdout;
        assert!(!status.contains("Migration:"), "{what}: {status}");
    };

    rbdx.run(&["migration", "prepare", "disk", "fast/taken"])
        .fails(17, "taken");
    unchanged("existing destination");

    // A client that has the source open: prepare names it and leaves everything alone.
    let mut reader = Command::new(Rbdx::binary())
        .args(["bench", "--io-type", "read", "--io-total", "1000G", "disk"])
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watched = false;
    for _ in 0..200 {
        let status = rbdx
            .run(&["status", "--format", "json", "disk"])
            .ok()
            .json();
        if !status["watchers"].as_array().unwrap().is_empty() {
            watched = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(watched, "the reader never opened the image");
    let refused = rbdx
        .run(&["migration", "prepare", "disk", "fast/disk"])
        .fails(16, "watchers");
    assert!(refused.stderr.contains("client."), "{}", refused.stderr);
    reader.kill().unwrap();
    reader.wait().unwrap();
    unchanged("watched source");

    // Sources that cannot be reached.
    let port = common::http::free_port();
    for stream in [
        format!(r#"{{"type":"http","url":"http://127.0.0.1:{port}/disk.raw"}}"#),
        format!(
            r#"{{"type":"s3","url":"http://127.0.0.1:{port}/bucket/disk.raw","access_key":"a","secret_key":"b"}}"#
        ),
    ] {
        let spec = format!(r#"{{"type":"raw","stream":{stream}}}"#);
        rbdx.run(&[
            "migration",
            "prepare",
            "--import-only",
            "--source-spec",
            &spec,
            "fast/new",
        ])
        .fails(5, &format!("127.0.0.1:{port}"));
        unchanged("unreachable source");
    }
    let spec = r#"{"type":"raw","stream":{"type":"ftp","url":"ftp://x"}}"#;
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        spec,
        "fast/new",
    ])
    .fails(38, "ftp");
    unchanged("unknown stream");
    let missing = dir.path().join("missing-snapshot.raw");
    let head = dir.path().join("head.raw");
    std::fs::write(&head, vec![1u8; 1 << 20]).unwrap();
    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}},"snapshots":[{{"type":"raw","name":"s","stream":{{"type":"file","file_path":"{}"}}}}]}}"#,
        head.display(),
        missing.display()
    );
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "fast/new",
    ])
    .fails(2, "missing-snapshot.raw");
    unchanged("missing snapshot file");
    assert_eq!(export(&rbdx, "disk", dir.path(), "after"), before);
}
