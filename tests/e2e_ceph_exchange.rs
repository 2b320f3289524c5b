//! The exchange formats against Ceph's own `rbd` on the test cluster (`RBDX_TEST_CEPH_CONF`):
//! images and diffs written by `rbd` import into rbdx (on its embedded store), images and
//! diffs written by rbdx import into Ceph, every snapshot reads the same on both sides, and
//! `merge-diff` of the same diffs gives the same bytes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Rbdx;

/// Runs a Ceph tool (`rbd`, `ceph`) on the test cluster; returns standard output.
#[track_caller]
fn ceph_tool(program: &str, conf: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `rbdx` with standard output captured as bytes.
fn rbdx_bytes(rbdx: &Rbdx, args: &[&str]) -> Vec<u8> {
    let out = Command::new(Rbdx::binary())
        .args(args)
        .env("RBDX_DATA_DIR", rbdx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbdx {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn images_and_diffs_cross_between_ceph_and_rbdx_both_ways() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let pool = format!("xchg{}", std::process::id());
    ceph_tool("ceph", &conf, &["osd", "pool", "create", &pool, "8"]);
    ceph_tool("rbd", &conf, &["pool", "init", &pool]);
    let img = format!("{pool}/cimg");
    let views = |name: &str| -> Vec<String> {
        ["@c1", "@c2", ""]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect()
    };

    // An image made by Ceph, with two snapshots (the first protected) and metadata.
    ceph_tool(
        "rbd",
        &conf,
        &["create", "--size", "24M", "--object-size", "1M", &img],
    );
    let bench = |size: &str, total: &str| {
        ceph_tool(
            "rbd",
            &conf,
            &[
                "bench",
                "--io-type",
                "write",
                "--io-size",
                size,
                "--io-total",
                total,
                "--io-pattern",
                "rand",
                &img,
            ],
        );
    };
    bench("64K", "2M");
    ceph_tool("rbd", &conf, &["snap", "create", &format!("{img}@c1")]);
    ceph_tool("rbd", &conf, &["snap", "protect", &format!("{img}@c1")]);
    bench("4K", "100K");
    ceph_tool("rbd", &conf, &["snap", "create", &format!("{img}@c2")]);
    ceph_tool("rbd", &conf, &["image-meta", "set", &img, "mk", "mv"]);
    bench("4K", "40K");
    let ceph_views: Vec<Vec<u8>> = views(&img)
        .iter()
        .map(|v| ceph_tool("rbd", &conf, &["export", "--no-progress", v, "-"]))
        .collect();

    // Ceph's export format 2 into rbdx.
    let v2 = dir.path().join("ceph.v2");
    ceph_tool(
        "rbd",
        &conf,
        &[
            "export",
            "--no-progress",
            "--export-format",
            "2",
            &img,
            path(&v2),
        ],
    );
    rbdx.run(&[
        "import",
        "--no-progress",
        "--export-format",
        "2",
        path(&v2),
        "fromceph",
    ])
    .ok();
    for (view, expected) in views("fromceph").iter().zip(&ceph_views) {
        assert!(
            rbdx_bytes(&rbdx, &["export", "--no-progress", view, "-"]) == *expected,
            "{view} differs from Ceph's"
        );
    }
    let snaps = rbdx
        .run(&["snap", "ls", "fromceph", "--format", "json"])
        .ok()
        .json();
    assert_eq!(snaps[0]["protected"], "true", "{snaps}");
    let meta = rbdx.run(&["image-meta", "get", "fromceph", "mk"]).ok();
    assert_eq!(meta.stdout.trim(), "mv");

    // Ceph's diffs into rbdx, and Ceph's merge of them next to rbdx's.
    let d01 = dir.path().join("d01");
    let d12 = dir.path().join("d12");
    ceph_tool(
        "rbd",
        &conf,
        &[
            "export-diff",
            "--no-progress",
            &format!("{img}@c1"),
            path(&d01),
        ],
    );
    ceph_tool(
        "rbd",
        &conf,
        &[
            "export-diff",
            "--no-progress",
            "--from-snap",
            "c1",
            &format!("{img}@c2"),
            path(&d12),
        ],
    );
    rbdx.run(&[
        "create",
        "--size",
        "24M",
        "--object-size",
        "1M",
        "fromdiffs",
    ])
    .ok();
    rbdx.run(&["import-diff", "--no-progress", path(&d01), "fromdiffs"])
        .ok();
    rbdx.run(&["import-diff", "--no-progress", path(&d12), "fromdiffs"])
        .ok();
    for (view, expected) in views("fromdiffs").iter().zip(&ceph_views).take(2) {
        assert!(rbdx_bytes(&rbdx, &["export", "--no-progress", view, "-"]) == *expected);
    }
    let ours = dir.path().join("merged.rbdx");
    let theirs = dir.path().join("merged.ceph");
    rbdx.run(&["merge-diff", path(&d01), path(&d12), path(&ours)])
        .ok();
    ceph_tool(
        "rbd",
        &conf,
        &[
            "merge-diff",
            "--no-progress",
            path(&d01),
            path(&d12),
            path(&theirs),
        ],
    );
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "merge-diff output differs from Ceph's"
    );

    // rbdx's export format 2 and diffs into Ceph.
    let back = dir.path().join("rbdx.v2");
    rbdx.run(&[
        "export",
        "--no-progress",
        "--export-format",
        "2",
        "fromceph",
        path(&back),
    ])
    .ok();
    let back_img = format!("{pool}/fromrbdx");
    ceph_tool(
        "rbd",
        &conf,
        &[
            "import",
            "--no-progress",
            "--export-format",
            "2",
            path(&back),
            &back_img,
        ],
    );
    for (view, expected) in views(&back_img).iter().zip(&ceph_views) {
        assert!(
            ceph_tool("rbd", &conf, &["export", "--no-progress", view, "-"]) == *expected,
            "Ceph's copy {view} differs"
        );
    }
    let chain_img = format!("{pool}/chain");
    ceph_tool("rbd", &conf, &["create", "--size", "24M", &chain_img]);
    for (from, to) in [
        (None, "fromceph@c1"),
        (Some("c1"), "fromceph@c2"),
        (Some("c2"), "fromceph"),
    ] {
        let file = dir.path().join(format!("r-{}", to.replace('@', "-")));
        let mut args = vec!["export-diff", "--no-progress"];
        if let Some(from) = from {
            args.extend(["--from-snap", from]);
        }
        args.extend([to, path(&file)]);
        rbdx.run(&args).ok();
        ceph_tool(
            "rbd",
            &conf,
            &["import-diff", "--no-progress", path(&file), &chain_img],
        );
    }
    for (view, expected) in views(&chain_img).iter().zip(&ceph_views) {
        assert!(ceph_tool("rbd", &conf, &["export", "--no-progress", view, "-"]) == *expected);
    }

    ceph_tool(
        "ceph",
        &conf,
        &[
            "osd",
            "pool",
            "delete",
            &pool,
            &pool,
            "--yes-i-really-really-mean-it",
        ],
    );
}
