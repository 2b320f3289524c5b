//! End-to-end tests of the object-store commands (`pool`, `config-key`, `rados`) through the
//! built `rbdx` binary, on a temporary embedded store.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::Rbdx;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt};
use rbdx_objstore_dir::DirStore;

#[test]
fn new_store_has_pool_rbd_and_pools_can_be_managed() {
    let rbdx = Rbdx::new();
    let pools = rbdx.run(&["pool", "ls", "--format", "json"]).ok().json();
    assert_eq!(
        pools,
        serde_json::json!([{"pool_id": 1, "pool_name": "rbd"}])
    );
    rbdx.run(&["pool", "create", "images"]).ok();
    let listed = rbdx.run(&["--format=json", "pool", "list"]).ok().json();
    assert_eq!(listed[1]["pool_name"], "images");
    assert_eq!(listed[1]["pool_id"], 2);
    let plain = rbdx.run(&["pool", "ls"]).ok();
    assert_eq!(plain.stdout, "1 rbd\n2 images\n");

    rbdx.run(&["pool", "create", "images"])
        .fails(17, "pool 'images': already exists");
    rbdx.run(&["pool", "create", "a/b"])
        .fails(22, "contains '/'");
    rbdx.run(&["pool", "create", ""]).fails(22, "empty");
    rbdx.run(&["pool", "rm", "images"])
        .fails(22, "--yes-i-really-really-mean-it");
    rbdx.run(&["pool", "rm", "nosuch", "--yes-i-really-really-mean-it"])
        .fails(2, "pool 'nosuch': not found");
    rbdx.run(&["pool", "rm", "images", "--yes-i-really-really-mean-it"])
        .ok();
    assert_eq!(
        rbdx.run(&["pool", "ls", "--format", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn config_keys_round_trip_from_arguments_files_and_stdin() {
    let rbdx = Rbdx::new();
    rbdx.run(&["config-key", "set", "s3/key", "AKIA"]).ok();
    let file = rbdx.path().join("secret.txt");
    std::fs::write(&file, b"from-file").unwrap();
    rbdx.run(&[
        "config-key",
        "set",
        "s3/secret",
        "-i",
        file.to_str().unwrap(),
    ])
    .ok();
    rbdx.run_with_input(&["config-key", "set", "stdin", "-i", "-"], Some(b"piped"))
        .ok();
    assert_eq!(
        rbdx.run(&["config-key", "get", "s3/key"]).ok().stdout,
        "AKIA"
    );
    assert_eq!(
        rbdx.run(&["config-key", "get", "s3/secret"]).ok().stdout,
        "from-file"
    );
    assert_eq!(
        rbdx.run(&["config-key", "get", "stdin"]).ok().stdout,
        "piped"
    );
    let keys = rbdx
        .run(&["config-key", "ls", "--format", "json"])
        .ok()
        .json();
    assert_eq!(keys, serde_json::json!(["s3/key", "s3/secret", "stdin"]));
    rbdx.run(&["config-key", "exists", "s3/key"]).ok();
    rbdx.run(&["config-key", "rm", "s3/key"]).ok();
    rbdx.run(&["config-key", "exists", "s3/key"])
        .fails(2, "config-key 's3/key': not found");
    rbdx.run(&["config-key", "get", "s3/key"])
        .fails(2, "not found");
    rbdx.run(&["config-key", "set", "k"])
        .fails(22, "give a value");
}

#[test]
fn rados_commands_write_read_and_describe_objects() {
    let rbdx = Rbdx::new();
    rbdx.run_with_input(
        &["rados", "-p", "rbd", "put", "obj", "-"],
        Some(b"hello world"),
    )
    .ok();
    let input = rbdx.path().join("in.bin");
    std::fs::write(&input, vec![7u8; 100_000]).unwrap();
    rbdx.run(&["rados", "put", "big", input.to_str().unwrap()])
        .ok();
    assert_eq!(
        rbdx.run(&["rados", "get", "obj", "-"]).ok().stdout,
        "hello world"
    );
    let out = rbdx.path().join("out.bin");
    rbdx.run(&["rados", "get", "big", out.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&out).unwrap(), vec![7u8; 100_000]);

    let stat = rbdx
        .run(&["rados", "stat", "big", "--format", "json"])
        .ok()
        .json();
    assert_eq!(stat["size"], 100_000);
    assert!(stat["version"].as_u64().unwrap() > 0);
    let plain = rbdx.run(&["rados", "stat", "obj"]).ok();
    assert!(
        plain.stdout.starts_with("rbd/obj mtime 20"),
        "{}",
        plain.stdout
    );
    assert!(plain.stdout.contains("size 11"), "{}", plain.stdout);

    rbdx.run(&["rados", "setomapval", "obj", "features", "61"])
        .ok();
    rbdx.run(&["rados", "setomapval", "obj", "size", "1024"])
        .ok();
    assert_eq!(
        rbdx.run(&["rados", "getomapval", "obj", "size"])
            .ok()
            .stdout,
        "1024\n"
    );
    let omap = rbdx
        .run(&["rados", "listomapvals", "obj", "--format", "json"])
        .ok()
        .json();
    assert_eq!(omap, serde_json::json!({"features": "61", "size": "1024"}));
    rbdx.run(&["rados", "rmomapkey", "obj", "size"]).ok();
    rbdx.run(&["rados", "getomapval", "obj", "size"])
        .fails(2, "omap key 'size' of object 'obj': not found");

    let names = rbdx.run(&["rados", "ls", "--format", "json"]).ok().json();
    assert_eq!(names, serde_json::json!(["big", "obj"]));
    rbdx.run(&["rados", "rm", "big", "obj"]).ok();
    assert_eq!(rbdx.run(&["rados", "ls"]).ok().stdout, "");
    rbdx.run(&["rados", "get", "obj", "-"])
        .fails(2, "object 'obj'");
    rbdx.run(&["rados", "-p", "nosuch", "ls"])
        .fails(2, "pool 'nosuch': not found");
    rbdx.run(&["rados", "put", "x", "/no/such/file"])
        .fails(2, "/no/such/file");
    rbdx.run(&["rados", "-N", "tenant", "ls"])
        .fails(2, "namespace 'tenant'");
    rbdx.run(&["rados", "bogus"])
        .fails(22, "unrecognized subcommand");
}

#[test]
fn watchers_of_another_process_are_listed_with_a_readable_identity() {
    let rbdx = Rbdx::new();
    rbdx.run_with_input(&["rados", "put", "rbd_header.1", "-"], Some(b""))
        .ok();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = DirStore::open(rbdx.path()).unwrap();
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        let watch = store.watch(&io, "rbd_header.1").await.unwrap();
        let listed = rbdx
            .run(&["rados", "listwatchers", "rbd_header.1", "--format", "json"])
            .ok()
            .json();
        let entry = &listed[0];
        assert_eq!(entry["cookie"], watch.cookie());
        assert_eq!(entry["client"], store.client().id.to_string());
        let pid = format!("pid {}", std::process::id());
        assert!(entry["watcher"].as_str().unwrap().contains(&pid), "{entry}");
        let plain = rbdx.run(&["rados", "listwatchers", "rbd_header.1"]).ok();
        assert!(plain.stdout.starts_with("watcher="), "{}", plain.stdout);
        store
            .write_full(&io, "from-test", Bytes::from_static(b"x"))
            .await
            .unwrap();
    });
    assert_eq!(
        rbdx.run(&["rados", "get", "from-test", "-"]).ok().stdout,
        "x"
    );
}
