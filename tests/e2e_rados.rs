//! End-to-end tests of `rbdx` on a real Ceph cluster (`RBDX_TEST_CEPH_CONF`): choosing the
//! cluster with `--ceph-conf`, `-c` (an rbdx config or a ceph.conf) and `--id`, then pools,
//! objects and config keys through the rados backend, images, and migrations between pools.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Rbdx;

fn unique(tag: &str) -> String {
    format!("e2e-{tag}-{}", std::process::id())
}

/// Returns true if `rbdx pool ls --format json` lists `pool`.
fn lists_pool(rbdx: &Rbdx, pool: &str) -> bool {
    let pools = rbdx.run(&["pool", "ls", "--format", "json"]).ok().json();
    pools
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pool_name"] == pool)
}

#[test]
fn pools_objects_and_keys_on_a_ceph_cluster() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let rbdx = Rbdx::on_cluster(&["--ceph-conf", &conf, "--id", "admin"]);
    let pool = unique("pool");
    rbdx.run(&["pool", "create", &pool]).ok();
    assert!(lists_pool(&rbdx, &pool));

    let file = rbdx.path().join("payload");
    std::fs::write(&file, b"object on ceph").unwrap();
    let file = file.to_string_lossy().into_owned();
    rbdx.run(&["rados", "-p", &pool, "put", "obj", &file]).ok();
    let got = rbdx.run(&["rados", "-p", &pool, "get", "obj", "-"]).ok();
    assert_eq!(got.stdout, "object on ceph");
    let stat = rbdx
        .run(&["rados", "-p", &pool, "stat", "obj", "--format", "json"])
        .ok()
        .json();
    assert_eq!(stat["size"], 14);
    rbdx.run(&["rados", "-p", &pool, "get", "nosuch", "-"])
        .fails(2, "not found");

    let key = unique("key");
    rbdx.run(&["config-key", "set", &key, "s3cr3t"]).ok();
    assert_eq!(rbdx.run(&["config-key", "get", &key]).ok().stdout, "s3cr3t");
    rbdx.run(&["config-key", "rm", &key]).ok();
    rbdx.run(&["config-key", "get", &key]).fails(2, "not found");

    rbdx.run(&["pool", "rm", &pool, "--yes-i-really-really-mean-it"])
        .ok();
}

#[test]
fn clusters_are_chosen_by_config_files() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let local = Rbdx::new();
    let site = local.path().join("site.conf");
    std::fs::write(
        &site,
        format!("[cluster]\nbackend = \"rados\"\nceph_conf = \"{conf}\"\n"),
    )
    .unwrap();
    let site = site.to_string_lossy().into_owned();
    let by_file = Rbdx::on_cluster(&["-c", &site]);
    let pool = unique("conf");
    by_file.run(&["pool", "create", &pool]).ok();
    let by_ceph_conf = Rbdx::on_cluster(&["-c", &conf]);
    assert!(
        lists_pool(&by_ceph_conf, &pool),
        "-c accepts a ceph.conf as rbd does"
    );
    by_ceph_conf
        .run(&["pool", "rm", &pool, "--yes-i-really-really-mean-it"])
        .ok();

    Rbdx::on_cluster(&["--ceph-conf", &conf, "--id", "nobody-here"])
        .run(&["pool", "ls"])
        .fails(13, "client.nobody-here");
    Rbdx::on_cluster(&["--ceph-conf", "/nonexistent/ceph.conf"])
        .run(&["pool", "ls"])
        .fails(2, "/nonexistent/ceph.conf");
}

#[test]
fn images_snapshots_and_clones_on_a_ceph_cluster() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let rbdx = Rbdx::on_cluster(&["--ceph-conf", &conf]);
    let pool = unique("images");
    rbdx.run(&["pool", "create", &pool]).ok();
    let content: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 253) as u8).collect();
    let src = rbdx.path().join("disk.raw");
    std::fs::write(&src, &content).unwrap();
    let spec = format!("{pool}/golden");
    rbdx.run(&["import", "--no-progress", src.to_str().unwrap(), &spec])
        .ok();
    rbdx.run(&["snap", "create", &format!("{spec}@v1")]).ok();
    rbdx.run(&["snap", "protect", &format!("{spec}@v1")]).ok();
    let clone = format!("{pool}/vm");
    rbdx.run(&["clone", &format!("{spec}@v1"), &clone]).ok();
    rbdx.run(&[
        "bench",
        &clone,
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "1M",
        "--io-pattern",
        "rand",
        "--format",
        "json",
    ])
    .ok();
    rbdx.run(&["flatten", &clone, "--no-progress"]).ok();
    let check = rbdx
        .run(&[
            "object-map",
            "check",
            &clone,
            "--format",
            "json",
            "--no-progress",
        ])
        .ok()
        .json();
    assert_eq!(check["valid"], true);
    let out = rbdx.path().join("golden.raw");
    rbdx.run(&[
        "export",
        &format!("{spec}@v1"),
        out.to_str().unwrap(),
        "--no-progress",
    ])
    .ok();
    assert_eq!(std::fs::read(&out).unwrap(), content);
    rbdx.run(&["rm", &clone, "--no-progress"]).ok();
    rbdx.run(&["snap", "unprotect", &format!("{spec}@v1")]).ok();
    rbdx.run(&["snap", "purge", &spec, "--no-progress"]).ok();
    rbdx.run(&["rm", &spec, "--no-progress"]).ok();
    assert_eq!(
        rbdx.run(&["ls", &pool, "--format", "json"]).ok().json(),
        serde_json::json!([])
    );
    rbdx.run(&["pool", "rm", &pool, "--yes-i-really-really-mean-it"])
        .ok();
}

#[test]
fn live_and_import_only_migrations_on_a_ceph_cluster() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let rbdx = Rbdx::on_cluster(&["--ceph-conf", &conf]);
    let (from, to) = (unique("mig-from"), unique("mig-to"));
    rbdx.run(&["pool", "create", &from]).ok();
    rbdx.run(&["pool", "create", &to]).ok();
    let content: Vec<u8> = (0..(6u32 << 20))
        .map(|i| {
            if (i >> 16) % 3 == 0 {
                0
            } else {
                (i % 251) as u8
            }
        })
        .collect();
    let raw = rbdx.path().join("disk.raw");
    std::fs::write(&raw, &content).unwrap();
    let export = |spec: &str| {
        let out = rbdx.path().join("out.raw");
        let _ = std::fs::remove_file(&out);
        rbdx.run(&["export", "--no-progress", spec, out.to_str().unwrap()])
            .ok();
        std::fs::read(&out).unwrap()
    };

    // Import-only from a raw file into the first pool, with 1 MiB objects.
    let src = format!("{from}/disk");
    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        raw.display()
    );
    rbdx.run(&[
        "migration",
        "prepare",
        "--import-only",
        "--object-size",
        "1M",
        "--source-spec",
        &spec,
        &src,
    ])
    .ok();
    assert!(
        export(&src) == content,
        "import-only destination after prepare"
    );
    rbdx.run(&["migration", "execute", "--no-progress", &src])
        .ok();
    rbdx.run(&["migration", "commit", "--no-progress", &src])
        .ok();
    rbdx.run(&["snap", "create", &format!("{src}@one")]).ok();
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", &src])
        .ok();
    let head = export(&src);

    // Live to the second pool: an abort first, then the whole cycle.
    let dst = format!("{to}/disk");
    rbdx.run(&["migration", "prepare", &src, &dst]).ok();
    rbdx.run(&["migration", "abort", "--no-progress", &dst])
        .ok();
    assert!(export(&src) == head, "source after abort");
    rbdx.run(&["migration", "prepare", &src, &dst]).ok();
    let status = rbdx.run(&["status", &dst]).ok().stdout;
    assert!(status.contains("state: prepared"), "{status}");
    rbdx.run(&["migration", "execute", "--no-progress", &dst])
        .ok();
    rbdx.run(&["migration", "verify", "--no-progress", &dst])
        .ok();
    rbdx.run(&["migration", "commit", "--no-progress", &dst])
        .ok();
    assert!(export(&dst) == head, "destination head after commit");
    assert!(
        export(&format!("{dst}@one")) == content,
        "destination snapshot after commit"
    );
    rbdx.run(&["info", &src]).fails(2, "disk");

    rbdx.run(&["snap", "purge", &dst, "--no-progress"]).ok();
    rbdx.run(&["rm", &dst, "--no-progress"]).ok();
    for pool in [&from, &to] {
        rbdx.run(&["pool", "rm", pool, "--yes-i-really-really-mean-it"])
            .ok();
    }
}

#[test]
fn a_gateway_gives_a_ceph_cluster_a_single_port_front_door() {
    let Some(conf) = Rbdx::test_cluster() else {
        return;
    };
    let site = Rbdx::on_cluster(&["--ceph-conf", &conf, "--id", "admin"]);
    let pool = unique("gw");
    site.run(&["pool", "create", &pool]).ok();
    let gw = common::gateway::Gateway::start(&site, None, &["--ceph-conf", &conf, "--id", "admin"]);
    assert_eq!(gw.started["backend"], "rados");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("peer");
    let client = common::gateway::key(
        &site,
        &name,
        &["--profile", "rw", "--pool", &pool],
        dir.path(),
    );
    let image = format!("{pool}/img");
    let remote = |args: &[&str]| common::gateway::remote(&client, args);
    remote(&["create", "--size", "16M", &image]).ok();
    remote(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "1M",
        "--io-total",
        "6M",
        &image,
    ])
    .ok();
    remote(&["snap", "create", "--no-progress", &format!("{image}@s")]).ok();
    // Through the gateway and directly on the cluster, the same bytes.
    let through = dir.path().join("through.raw");
    let direct = dir.path().join("direct.raw");
    remote(&["export", "--no-progress", &image, through.to_str().unwrap()]).ok();
    site.run(&["export", "--no-progress", &image, direct.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&through).unwrap() == std::fs::read(&direct).unwrap());
    let listed = site.run(&["ls", "--format", "json", &pool]).ok().json();
    assert_eq!(listed, serde_json::json!(["img"]));
    // The key reaches its pool only.
    remote(&["ls", "rbd"]).fails(13, "limited to pool(s)");
    remote(&["snap", "purge", "--no-progress", &image]).ok();
    remote(&["rm", "--no-progress", &image]).ok();
    site.run(&["gateway", "key", "rm", &name]).ok();
    let (code, stderr) = gw.stop();
    assert_eq!(code, 0, "{stderr}");
    site.run(&["pool", "rm", &pool, "--yes-i-really-really-mean-it"])
        .ok();
}
