//! The whole migration cycle for every kind of source, through the built `rbdx`: live between
//! pools (a clone with two snapshots, keeping its parent, then back with `--flatten`) and
//! between namespaces, import-only from a native image at a snapshot, and import-only from raw
//! with a `snapshots` array, qcow2 with internal snapshots and qcow2 over a backing file, each
//! read over `file`, `http` (nginx on 127.0.0.1) and `s3` (Ceph RGW). The export of the head
//! and of every snapshot must equal the source after prepare, after execute and after commit;
//! an abort must leave the source exactly as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Rbdx;
use common::http::Nginx;
use common::s3::Gateway;

/// The views of an image and the bytes each must hold: `""` for the head, `"@snap"` for a
/// snapshot.
type Views = Vec<(String, Vec<u8>)>;

/// Exports every view of `image` and checks it holds what `views` says.
fn assert_views(rbdx: &Rbdx, image: &str, views: &Views, stage: &str) {
    let out = rbdx.path().join("view.raw");
    for (view, want) in views {
        let spec = format!("{image}{view}");
        let _ = std::fs::remove_file(&out);
        rbdx.run(&["export", "--no-progress", &spec, out.to_str().unwrap()])
            .ok();
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), want.len(), "{stage}: size of {spec}");
        if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!("{stage}: {spec} differs from its source at byte {at}");
        }
    }
}

/// Exports every view of `image` as it is now.
fn snapshot_views(rbdx: &Rbdx, image: &str, snaps: &[&str]) -> Views {
    let out = rbdx.path().join("view.raw");
    std::iter::once(String::new())
        .chain(snaps.iter().map(|s| format!("@{s}")))
        .map(|view| {
            let _ = std::fs::remove_file(&out);
            rbdx.run(&[
                "export",
                "--no-progress",
                &format!("{image}{view}"),
                out.to_str().unwrap(),
            ])
            .ok();
            (view, std::fs::read(&out).unwrap())
        })
        .collect()
}

/// Prepares with `prepare`, executes and commits the migration to `dst`, checking every view
/// after each step.
fn cycle(rbdx: &Rbdx, prepare: &[&str], dst: &str, views: &Views) {
    let mut args = vec!["migration", "prepare"];
    args.extend_from_slice(prepare);
    rbdx.run(&args).ok();
    let status = rbdx.run(&["status", dst]).ok();
    assert!(
        status.stdout.contains("state: prepared"),
        "{}",
        status.stdout
    );
    assert_views(rbdx, dst, views, "after prepare");
    rbdx.run(&["migration", "execute", "--no-progress", dst])
        .ok();
    assert_views(rbdx, dst, views, "after execute");
    rbdx.run(&["migration", "verify", "--no-progress", dst])
        .ok();
    rbdx.run(&["migration", "commit", "--no-progress", dst])
        .ok();
    let status = rbdx.run(&["status", dst]).ok();
    assert!(!status.stdout.contains("Migration:"), "{}", status.stdout);
    assert_views(rbdx, dst, views, "after commit");
}

/// Prepares an import-only migration from `spec` into `dst`, copies part of it, writes to it,
/// aborts, and checks that nothing is left.
fn import_then_abort(rbdx: &Rbdx, spec: &str, dst: &str) {
    let before = rbdx.run(&["ls"]).ok().stdout;
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        spec,
        dst,
    ])
    .ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", dst])
        .ok();
    rbdx.run(&["migration", "abort", "--no-progress", dst]).ok();
    rbdx.run(&["info", dst]).fails(2, dst);
    assert_eq!(rbdx.run(&["ls"]).ok().stdout, before);
}

/// Runs `program` with `args`, which must succeed.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a `size`-byte sparse file holding pattern `seed` in 64 KiB blocks chosen by it.
fn patterned(path: &Path, size: u64, seed: u64) {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let block: Vec<u8> = (0..65536u64)
        .map(|i| ((i * 131 + seed * 17) % 251 + 1) as u8)
        .collect();
    for n in 0..size / 65536 {
        if (n * 7 + seed * 3) % 5 < 2 {
            file.write_all_at(&block, n * 65536).unwrap();
        }
    }
}

/// The external sources, as files in one directory, and what each view must hold.
struct Sources {
    dir: PathBuf,
    /// Raw head and snapshot files.
    raw: Views,
    /// A qcow2 with an internal snapshot.
    snaps: Views,
    /// A qcow2 over a qcow2 backing file.
    chain: Views,
}

impl Sources {
    fn make(dir: &Path) -> Sources {
        let f = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        patterned(&dir.join("head.raw"), 12 << 20, 1);
        patterned(&dir.join("monday.raw"), 10 << 20, 2);

        let q = f("snaps.qcow2");
        sh("qemu-img", &["create", "-q", "-f", "qcow2", &q, "12M"]);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 1 0 1M",
                "-c",
                "write -P 2 5M 64k",
                &q,
            ],
        );
        sh("qemu-img", &["snapshot", "-c", "first", &q]);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 3 512k 1M",
                "-c",
                "write -z 5M 64k",
                &q,
            ],
        );
        sh("qemu-img", &["convert", "-O", "raw", &q, &f("snaps.raw")]);
        sh(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                "-l",
                "snapshot.name=first",
                &q,
                &f("first.raw"),
            ],
        );

        let base = f("base.qcow2");
        let overlay = f("overlay.qcow2");
        sh("qemu-img", &["create", "-q", "-f", "qcow2", &base, "12M"]);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 4 0 3M",
                "-c",
                "write -P 5 9M 2M",
                &base,
            ],
        );
        sh(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                &overlay,
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 6 1M 1M",
                "-c",
                "write -z 9M 1M",
                &overlay,
            ],
        );
        sh(
            "qemu-img",
            &["convert", "-O", "raw", &overlay, &f("chain.raw")],
        );

        Sources {
            dir: dir.to_owned(),
            raw: vec![
                (String::new(), read("head.raw")),
                ("@monday".into(), read("monday.raw")),
            ],
            snaps: vec![
                (String::new(), read("snaps.raw")),
                ("@first".into(), read("first.raw")),
            ],
            chain: vec![(String::new(), read("chain.raw"))],
        }
    }

    /// Runs the cycle for each format with streams made by `stream` (from a file name), and
    /// one abort.
    fn cycle_all(&self, rbdx: &Rbdx, tag: &str, stream: impl Fn(&str) -> serde_json::Value) {
        let raw = serde_json::json!({"type": "raw", "stream": stream("head.raw"),
            "snapshots": [{"type": "raw", "name": "monday", "stream": stream("monday.raw")}]})
        .to_string();
        let snaps =
            serde_json::json!({"type": "qcow", "stream": stream("snaps.qcow2")}).to_string();
        let chain =
            serde_json::json!({"type": "qcow", "stream": stream("overlay.qcow2")}).to_string();
        for (name, spec, views) in [
            ("raw", &raw, &self.raw),
            ("snaps", &snaps, &self.snaps),
            ("chain", &chain, &self.chain),
        ] {
            let dst = format!("{tag}-{name}");
            cycle(
                rbdx,
                &[
                    "--import-only",
                    "--object-size",
                    "1M",
                    "--source-spec",
                    spec,
                    &dst,
                ],
                &dst,
                views,
            );
        }
        import_then_abort(rbdx, &snaps, &format!("{tag}-aborted"));
        // The sources themselves are untouched.
        let head = std::fs::read(self.dir.join("head.raw")).unwrap();
        assert!(head == self.raw[0].1, "{tag}: the raw source changed");
    }
}

#[test]
fn import_only_over_file_from_raw_qcow2_snapshots_and_backing_chains() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources::make(dir.path());
    sources.cycle_all(
        &rbdx,
        "file",
        |name| serde_json::json!({"type": "file", "file_path": dir.path().join(name)}),
    );
}

#[test]
fn import_only_over_http_from_raw_qcow2_snapshots_and_backing_chains() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let sources = Sources::make(&www);
    let Some(nginx) = Nginx::serve(dir.path(), &www) else {
        return;
    };
    sources.cycle_all(
        &rbdx,
        "http",
        |name| serde_json::json!({"type": "http", "url": nginx.url(name)}),
    );
}

#[test]
fn import_only_over_s3_from_raw_qcow2_snapshots_and_backing_chains() {
    let Some(gw) = Gateway::from_env() else {
        return;
    };
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources::make(dir.path());
    let bucket = gw.bucket("cycle");
    for name in [
        "head.raw",
        "monday.raw",
        "snaps.qcow2",
        "base.qcow2",
        "overlay.qcow2",
    ] {
        gw.curl(
            "PUT",
            &format!("/{bucket}/{name}"),
            Some(&dir.path().join(name)),
        );
    }
    rbdx.run(&["config-key", "set", "s3/secret", &gw.secret])
        .ok();
    // A wrong key is refused by the gateway, and nothing is created.
    let wrong = serde_json::json!({"type": "raw",
        "stream": gw.stream(&bucket, "head.raw", "not-the-key")})
    .to_string();
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &wrong,
        "s3-wrong-key",
    ])
    .fails(13, "403");
    assert!(rbdx.run(&["ls"]).ok().stdout.trim().is_empty());
    sources.cycle_all(&rbdx, "s3", |name| {
        gw.stream(&bucket, name, "config://s3/secret")
    });
}

/// Makes `rbd/golden@base` (protected) and its clone `image` with snapshots s1 and s2 and
/// writes after each.
fn clone_with_two_snapshots(rbdx: &Rbdx, image: &str) {
    let golden = rbdx.path().join("golden.raw");
    patterned(&golden, 12 << 20, 9);
    rbdx.run(&[
        "import",
        "--no-progress",
        "--object-size",
        "1M",
        golden.to_str().unwrap(),
        "rbd/golden",
    ])
    .ok();
    rbdx.run(&["snap", "create", "rbd/golden@base"]).ok();
    rbdx.run(&["snap", "protect", "rbd/golden@base"]).ok();
    rbdx.run(&["clone", "rbd/golden@base", image]).ok();
    write_and_snap(rbdx, image, &["s1", "s2"]);
}

/// Writes 2 MiB at random 64 KiB blocks of `image`, then takes each snapshot of `snaps` with
/// more writes after it.
fn write_and_snap(rbdx: &Rbdx, image: &str, snaps: &[&str]) {
    let write = || {
        rbdx.run(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-total",
            "2M",
            "--io-pattern",
            "rand",
            image,
        ])
        .ok();
    };
    write();
    for snap in snaps {
        rbdx.run(&["snap", "create", &format!("{image}@{snap}")])
            .ok();
        write();
    }
}

#[test]
fn live_between_pools_keeps_the_clone_parent_then_flattens_on_the_way_back() {
    let rbdx = Rbdx::new();
    rbdx.run(&["pool", "create", "fast"]).ok();
    clone_with_two_snapshots(&rbdx, "rbd/vm");
    let views = snapshot_views(&rbdx, "rbd/vm", &["s1", "s2"]);

    // An abort after execute puts the source back as it was, clone of golden, writable.
    rbdx.run(&["migration", "prepare", "rbd/vm", "fast/vm"])
        .ok();
    rbdx.run(&["migration", "execute", "--no-progress", "fast/vm"])
        .ok();
    rbdx.run(&["migration", "abort", "--no-progress", "fast/vm"])
        .ok();
    assert_views(&rbdx, "rbd/vm", &views, "after abort");
    let children = rbdx.run(&["children", "rbd/golden@base"]).ok();
    assert_eq!(children.stdout.trim(), "rbd/vm");

    cycle(&rbdx, &["rbd/vm", "fast/vm"], "fast/vm", &views);
    let info = rbdx
        .run(&["info", "--format", "json", "fast/vm"])
        .ok()
        .json();
    assert_eq!(info["parent"]["image"], "golden", "{info}");
    assert_eq!(info["parent"]["snapshot"], "base", "{info}");
    let children = rbdx.run(&["children", "rbd/golden@base"]).ok();
    assert_eq!(children.stdout.trim(), "fast/vm");
    rbdx.run(&["info", "rbd/vm"]).fails(2, "vm");

    cycle(&rbdx, &["--flatten", "fast/vm", "rbd/vm"], "rbd/vm", &views);
    let info = rbdx
        .run(&["info", "--format", "json", "rbd/vm"])
        .ok()
        .json();
    assert!(info.get("parent").is_none(), "{info}");
    assert!(
        rbdx.run(&["children", "rbd/golden@base"])
            .ok()
            .stdout
            .trim()
            .is_empty()
    );
}

#[test]
fn live_between_namespaces_and_import_only_from_a_native_snapshot() {
    let rbdx = Rbdx::new();
    rbdx.run(&["namespace", "create", "rbd/ns1"]).ok();
    rbdx.run(&["namespace", "create", "rbd/ns2"]).ok();
    rbdx.run(&[
        "create",
        "--size",
        "12M",
        "--object-size",
        "1M",
        "rbd/ns1/disk",
    ])
    .ok();
    write_and_snap(&rbdx, "rbd/ns1/disk", &["s1", "s2"]);
    let views = snapshot_views(&rbdx, "rbd/ns1/disk", &["s1", "s2"]);
    cycle(
        &rbdx,
        &["rbd/ns1/disk", "rbd/ns2/disk", "--object-size", "2M"],
        "rbd/ns2/disk",
        &views,
    );
    rbdx.run(&["info", "rbd/ns1/disk"]).fails(2, "disk");

    // Import-only from the image at s2: its head is s2, its snapshots s1 and s2 (as Ceph
    // gives every source snapshot up to and including the named one).
    let native = vec![
        (String::new(), views[2].1.clone()),
        ("@s1".to_owned(), views[1].1.clone()),
        ("@s2".to_owned(), views[2].1.clone()),
    ];
    cycle(
        &rbdx,
        &["--import-only", "rbd/ns2/disk@s2", "rbd/copy"],
        "rbd/copy",
        &native,
    );
    // The native source is untouched and still has both snapshots.
    assert_views(&rbdx, "rbd/ns2/disk", &views, "source after import");
}

/// Writes 64 random 4 KiB blocks into `image`.
fn scatter_4k(rbdx: &Rbdx, image: &str) {
    rbdx.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "256K",
        "--io-pattern",
        "rand",
        image,
    ])
    .ok();
}

/// Lists the snapshot names of `image`.
fn snap_names(rbdx: &Rbdx, image: &str) -> Vec<String> {
    let snaps = rbdx
        .run(&["snap", "ls", image, "--format", "json"])
        .ok()
        .json();
    snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn import_only_from_a_native_snapshot_brings_every_snapshot_up_to_it() {
    let rbdx = Rbdx::new();
    rbdx.run(&["namespace", "create", "rbd/ns1"]).ok();
    // 10 MiB + 12 KiB: the last 4 MiB object is cut short.
    for image in ["rbd/image1", "rbd/ns1/image1"] {
        rbdx.run(&["create", "--size", "10252K", image]).ok();
        for snap in ["1", "2", "3"] {
            scatter_4k(&rbdx, image);
            rbdx.run(&["snap", "create", &format!("{image}@{snap}")])
                .ok();
        }
        scatter_4k(&rbdx, image);
    }
    let at_2 = |views: &Views| -> Views {
        vec![
            (String::new(), views[2].1.clone()),
            ("@1".to_owned(), views[1].1.clone()),
            ("@2".to_owned(), views[2].1.clone()),
        ]
    };
    let views = snapshot_views(&rbdx, "rbd/image1", &["1", "2", "3"]);
    assert_ne!(views[1].1, views[2].1, "the snapshots differ");
    let want = at_2(&views);

    let spec = r#"{"type":"native","pool_name":"rbd","image_name":"image1","snap_name":"2"}"#;
    cycle(
        &rbdx,
        &["--import-only", "--source-spec", spec, "image2"],
        "rbd/image2",
        &want,
    );
    assert_eq!(snap_names(&rbdx, "image2"), ["1", "2"]);

    cycle(
        &rbdx,
        &["--import-only", "image1@2", "image3"],
        "rbd/image3",
        &want,
    );
    assert_eq!(snap_names(&rbdx, "image3"), ["1", "2"]);

    let views = snapshot_views(&rbdx, "rbd/ns1/image1", &["1", "2", "3"]);
    cycle(
        &rbdx,
        &["--import-only", "rbd/ns1/image1@2", "rbd/ns1/image4"],
        "rbd/ns1/image4",
        &at_2(&views),
    );
    assert_eq!(snap_names(&rbdx, "rbd/ns1/image4"), ["1", "2"]);
    // The sources are untouched.
    assert_views(&rbdx, "rbd/ns1/image1", &views, "source after import");
}
