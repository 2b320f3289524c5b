//! End-to-end tests of `feature`, `object-map`, `lock` and `trash` through the built `rbdx`
//! binary.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Rbdx;

#[test]
fn features_change_and_object_maps_are_checked_and_rebuilt() {
    let rbdx = Rbdx::new();
    rbdx.run(&[
        "create",
        "f",
        "--size",
        "16M",
        "--image-feature",
        "layering",
    ])
    .ok();
    rbdx.run(&[
        "bench",
        "f",
        "--io-type",
        "write",
        "--io-size",
        "1M",
        "--io-total",
        "6M",
        "--format",
        "json",
    ])
    .ok();
    rbdx.run(&["feature", "enable", "f", "object-map"])
        .fails(22, "object-map requires exclusive-lock");
    rbdx.run(&[
        "feature",
        "enable",
        "f",
        "exclusive-lock",
        "object-map,fast-diff",
    ])
    .ok();
    let info = rbdx.run(&["info", "f", "--format", "json"]).ok().json();
    assert_eq!(
        info["features"],
        serde_json::json!(["layering", "exclusive-lock", "object-map", "fast-diff"])
    );
    assert_eq!(info["flags"], serde_json::json!([]));
    let check = rbdx
        .run(&["object-map", "check", "f", "--format", "json"])
        .ok()
        .json();
    assert_eq!(check["valid"], true);
    let du = rbdx.run(&["du", "f", "--format", "json"]).ok().json();
    assert_eq!(
        du["images"][0]["used_size"],
        8 << 20,
        "objects 0 and 1 of 4 MiB: {du}"
    );

    // Damage the head map: the check flags it, a rebuild repairs it.
    let id = info["id"].as_str().unwrap().to_owned();
    rbdx.run_with_input(
        &["rados", "put", &format!("rbd_object_map.{id}"), "-"],
        Some(b"junk"),
    )
    .ok();
    let check = rbdx
        .run(&["object-map", "check", "f", "--format", "json"])
        .ok()
        .json();
    assert_eq!(check["valid"], false);
    let flags = rbdx.run(&["info", "f", "--format", "json"]).ok().json()["flags"].clone();
    assert_eq!(
        flags,
        serde_json::json!(["object map invalid", "fast diff invalid"])
    );
    rbdx.run(&["object-map", "rebuild", "f", "--no-progress"])
        .ok();
    assert_eq!(
        rbdx.run(&["info", "f", "--format", "json"]).ok().json()["flags"],
        serde_json::json!([])
    );
    assert_eq!(
        rbdx.run(&["object-map", "check", "f", "--format", "json"])
            .ok()
            .json()["valid"],
        true
    );

    rbdx.run(&["feature", "disable", "f", "object-map"])
        .fails(22, "fast-diff requires object-map");
    rbdx.run(&["feature", "disable", "f", "fast-diff", "object-map"])
        .ok();
    rbdx.run(&["feature", "disable", "f", "object-map"])
        .fails(22, "already disabled");
    rbdx.run(&["feature", "enable", "f", "exclusive-lock"])
        .fails(22, "already enabled");
    rbdx.run(&["feature", "enable", "f", "layering"])
        .fails(22, "cannot be enabled");
    rbdx.run(&["feature", "enable", "f", "journaling"]).ok();
    let info = rbdx
        .run(&["journal", "info", "f", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["splay_width"], 4);
    rbdx.run(&["feature", "disable", "f", "journaling"]).ok();
    rbdx.run(&["journal", "info", "f"]).fails(2, "no journal");
    rbdx.run(&["object-map", "rebuild", "f"])
        .fails(22, "does not have the object-map feature");
    let left: Vec<String> = rbdx
        .run(&["rados", "ls", "--format", "json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(
        !left.iter().any(|o| o.starts_with("rbd_object_map.")),
        "{left:?}"
    );
}

#[test]
fn locks_of_a_killed_writer_are_listed_and_broken() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "l", "--size", "256M"]).ok();
    let mut writer = std::process::Command::new(Rbdx::binary())
        .args([
            "bench",
            "l",
            "--io-type",
            "write",
            "--io-total",
            "100G",
            "--io-pattern",
            "rand",
        ])
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut locks = serde_json::json!([]);
    for _ in 0..300 {
        locks = rbdx
            .run(&["lock", "ls", "l", "--format", "json"])
            .ok()
            .json();
        if !locks.as_array().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.kill().unwrap();
    writer.wait().unwrap();
    let lock = &locks[0];
    assert!(lock["id"].as_str().unwrap().starts_with("auto "), "{locks}");
    assert!(
        lock["locker"].as_str().unwrap().starts_with("client."),
        "{locks}"
    );
    let plain = rbdx.run(&["lock", "ls", "l"]).ok().stdout;
    assert!(
        plain.starts_with("There is 1 exclusive lock on this image."),
        "{plain}"
    );
    rbdx.run(&["lock", "rm", "l", "auto 1", "client.999999"])
        .fails(2, "no lock");
    rbdx.run(&[
        "lock",
        "rm",
        "l",
        lock["id"].as_str().unwrap(),
        lock["locker"].as_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        rbdx.run(&["lock", "ls", "l", "--format", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
    // The image is writable again by anyone.
    rbdx.run(&[
        "bench",
        "l",
        "--io-type",
        "write",
        "--io-total",
        "1M",
        "--format",
        "json",
    ])
    .ok();
}

#[test]
fn trash_keeps_images_until_restored_or_removed() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "t1", "--size", "8M"]).ok();
    rbdx.run(&["create", "t2", "--size", "8M"]).ok();
    rbdx.run(&[
        "bench",
        "t1",
        "--io-type",
        "write",
        "--io-total",
        "2M",
        "--format",
        "json",
    ])
    .ok();
    rbdx.run(&["trash", "mv", "t1"]).ok();
    rbdx.run(&["trash", "move", "t2", "--expires-at", "1d"])
        .ok();
    rbdx.run(&["info", "t1"]).fails(2, "does not exist");
    assert_eq!(
        rbdx.run(&["ls", "--format", "json"]).ok().json(),
        serde_json::json!([])
    );
    let trash = rbdx.run(&["trash", "ls", "--format", "json"]).ok().json();
    let entries = trash.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let id_of = |name: &str| {
        entries.iter().find(|e| e["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (id1, id2) = (id_of("t1"), id_of("t2"));
    let long = rbdx.run(&["trash", "ls", "-l"]).ok().stdout;
    assert!(long.starts_with("ID"), "{long}");
    assert!(
        long.contains("USER") && long.contains("protected until"),
        "{long}"
    );

    rbdx.run(&["trash", "rm", &id2]).fails(16, "deferment time");
    rbdx.run(&["trash", "restore", &id1, "--image", "back"])
        .ok();
    assert_eq!(
        rbdx.run(&["info", "back", "--format", "json"]).ok().json()["id"],
        id1.as_str()
    );
    let out = rbdx.run(&["du", "back", "--format", "json"]).ok().json();
    assert_eq!(out["images"][0]["used_size"], 4 << 20);
    rbdx.run(&["trash", "restore", "nosuchid"])
        .fails(2, "not in the trash");
    rbdx.run(&["trash", "purge"]).ok();
    assert_eq!(
        rbdx.run(&["trash", "ls", "--format", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    rbdx.run(&["trash", "rm", &id2, "--force", "--no-progress"])
        .ok();
    assert_eq!(
        rbdx.run(&["trash", "ls", "--format", "json"]).ok().json(),
        serde_json::json!([])
    );
    rbdx.run(&["trash", "mv", "nosuch"])
        .fails(2, "does not exist");
}

#[test]
fn trashed_images_are_named_by_pool_namespace_and_id_as_rbd_names_them() {
    let rbdx = Rbdx::new();
    rbdx.run(&["namespace", "create", "rbd/ns1"]).ok();
    for name in ["a", "b", "rbd/ns1/c", "rbd/ns1/d"] {
        rbdx.run(&["create", name, "--size", "4M"]).ok();
        rbdx.run(&["trash", "mv", name]).ok();
    }
    let id_in = |pool_spec: &str, name: &str| {
        let trash = rbdx
            .run(&["trash", "ls", pool_spec, "--format", "json"])
            .ok()
            .json();
        trash
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b) = (id_in("rbd", "a"), id_in("rbd", "b"));
    let (c, d) = (id_in("rbd/ns1", "c"), id_in("rbd/ns1", "d"));

    rbdx.run(&["trash", "restore", &format!("rbd/{a}")]).ok();
    rbdx.run(&["info", "a"]).ok();
    rbdx.run(&["trash", "rm", "--no-progress", &format!("rbd/{b}")])
        .ok();
    rbdx.run(&["trash", "restore", &format!("rbd/ns1/{c}"), "--image", "c2"])
        .ok();
    rbdx.run(&["info", "rbd/ns1/c2"]).ok();
    rbdx.run(&[
        "trash",
        "rm",
        "--no-progress",
        "--pool",
        "rbd",
        "--namespace",
        "ns1",
        "--image-id",
        &d,
    ])
    .ok();
    for pool_spec in ["rbd", "rbd/ns1"] {
        assert_eq!(
            rbdx.run(&["trash", "ls", pool_spec, "--format", "json"])
                .ok()
                .json(),
            serde_json::json!([]),
            "{pool_spec}"
        );
    }
    rbdx.run(&["trash", "restore", &format!("rbd/{c}")])
        .fails(2, "not in the trash");
    rbdx.run(&["trash", "restore", &format!("other/{a}"), "-p", "rbd"])
        .fails(22, "given twice");
    rbdx.run(&["trash", "restore"])
        .fails(22, "image id was not specified");
}

#[test]
fn warnings_reach_stderr_of_every_command_and_never_stdout() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "w", "--size", "8M"]).ok();
    rbdx.run(&[
        "bench",
        "w",
        "--io-type",
        "write",
        "--io-total",
        "1M",
        "--format",
        "json",
    ])
    .ok();
    let id = rbdx.run(&["info", "w", "--format", "json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let garbage = rbdx.path().join("garbage");
    std::fs::write(&garbage, b"not an object map").unwrap();
    rbdx.run(&[
        "rados",
        "put",
        &format!("rbd_object_map.{id}"),
        garbage.to_str().unwrap(),
    ])
    .ok();

    let export = std::process::Command::new(Rbdx::binary())
        .args(["export", "w", "-", "--no-progress", "-vv"])
        .env("RBDX_DATA_DIR", rbdx.path())
        .output()
        .unwrap();
    assert!(export.status.success());
    assert_eq!(export.stdout.len(), 8 << 20, "stdout holds only the data");
    let resize = rbdx
        .run(&["resize", "w", "--size", "12M", "--no-progress"])
        .ok();
    assert!(
        resize
            .stderr
            .contains("object map of image w is missing or damaged"),
        "{}",
        resize.stderr
    );
    assert!(resize.stdout.is_empty(), "{}", resize.stdout);
    let flags = rbdx.run(&["info", "w", "--format", "json"]).ok().json()["flags"].clone();
    assert!(flags.to_string().contains("object map invalid"), "{flags}");

    rbdx.run(&[
        "rados",
        "put",
        &format!("rbd_object_map.{id}"),
        garbage.to_str().unwrap(),
    ])
    .ok();
    let quiet = std::process::Command::new(Rbdx::binary())
        .args(["object-map", "rebuild", "w", "--no-progress"])
        .env("RBDX_DATA_DIR", rbdx.path())
        .env("RBDX_LOG", "error")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("damaged"),
        "RBDX_LOG=error hides warnings: {}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

#[test]
fn journal_layout_options_positions_and_disconnect_follow_rbd() {
    use std::sync::Arc;

    use rbdx_objstore::{IoCtx, ObjectStore};

    let rbdx = Rbdx::new();
    rbdx.run(&["pool", "create", "jpool"]).ok();
    rbdx.run(&[
        "create",
        "--size",
        "16M",
        "--image-feature",
        "exclusive-lock,journaling",
        "--journal-object-size",
        "1M",
        "--journal-splay-width",
        "8",
        "--journal-pool",
        "jpool",
        "j",
    ])
    .ok();
    rbdx.run(&[
        "bench",
        "j",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "400K",
    ])
    .ok();
    let id = rbdx.run(&["info", "j", "--format", "json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = rbdx
        .run(&["journal", "info", "j", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["order"], 20);
    assert_eq!(info["splay_width"], 8);
    assert_eq!(info["object_pool"], "jpool");
    let rbd_pool = rbdx.run(&["pool", "ls", "--format", "json"]).ok().json()[0]["pool_id"].clone();
    let prefix = format!("journal_data.{rbd_pool}.{id}.");
    assert_eq!(info["object_oid_prefix"], prefix.as_str());
    let in_jpool = rbdx.run(&["rados", "-p", "jpool", "ls"]).ok().stdout;
    assert!(
        in_jpool.lines().all(|o| o.starts_with(&prefix)),
        "{in_jpool}"
    );
    assert_eq!(in_jpool.lines().count(), 8, "{in_jpool}");

    // One position per splay object, most recent first.
    let status = rbdx
        .run(&["journal", "status", "j", "--format", "json"])
        .ok()
        .json();
    let client = &status["registered_clients"][0];
    assert_eq!(client["id"], "");
    assert_eq!(client["state"], "connected");
    let positions = client["commit_position"]["object_positions"]
        .as_array()
        .unwrap();
    assert_eq!(positions.len(), 8, "{status}");
    let tids: Vec<u64> = positions
        .iter()
        .map(|p| p["entry_tid"].as_u64().unwrap())
        .collect();
    let mut objects: Vec<u64> = positions
        .iter()
        .map(|p| p["object_number"].as_u64().unwrap() % 8)
        .collect();
    assert!(tids.windows(2).all(|w| w[0] == w[1] + 1), "{tids:?}");
    objects.sort();
    assert_eq!(objects, (0..8).collect::<Vec<u64>>());
    // The spec may name the journal by its id, as with rbd.
    let by_id = rbdx
        .run(&[
            "journal",
            "status",
            &format!("rbd/{id}"),
            "--format",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(by_id, status);
    let plain = rbdx.run(&["journal", "status", "j"]).ok().stdout;
    assert!(
        plain.contains("commit_position=[positions=[[object_number="),
        "{plain}"
    );

    // Without --client-id every client but the image's is disconnected.
    rbdx.run(&["journal", "client", "disconnect", "j"])
        .fails(2, "no registered clients to disconnect");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(rbdx_objstore_dir::DirStore::open(rbdx.path()).unwrap());
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        let journal = rbdx_journal::Journal::open(store, io, &id).await.unwrap();
        journal
            .register_client("peer-a", "mirror peer")
            .await
            .unwrap();
        journal
            .register_client("peer-b", "mirror peer")
            .await
            .unwrap();
    });
    let out = rbdx
        .run(&["journal", "client", "disconnect", "j"])
        .ok()
        .stdout;
    assert_eq!(
        out,
        "client peer-a disconnected\nclient peer-b disconnected\n"
    );
    let status = rbdx
        .run(&["journal", "status", "j", "--format", "json"])
        .ok()
        .json();
    let states: Vec<&str> = status["registered_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["connected", "disconnected", "disconnected"]);

    // Reset, as rbd does it: journaling off and on under the image's lock. An entry past the
    // commit position (a writer that died before applying it) is applied first, not dropped.
    runtime.block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(rbdx_objstore_dir::DirStore::open(rbdx.path()).unwrap());
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        let journal = rbdx_journal::Journal::open_for_append(store, io, &id)
            .await
            .unwrap();
        let write = rbdx_image::journaling::Event::Write {
            offset: 4096,
            data: bytes::Bytes::from_static(b"unapplied"),
        };
        journal
            .append(rbdx_journal::event::encode(&write))
            .await
            .unwrap();
    });
    rbdx.run(&["journal", "reset", &format!("rbd/{id}")]).ok();
    let status = rbdx
        .run(&["journal", "status", "j", "--format", "json"])
        .ok()
        .json();
    let clients = status["registered_clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{status}");
    assert_eq!(clients[0]["id"], "");
    assert_eq!(status["minimum_set"], 0);
    assert_eq!(status["active_set"], 0);
    let info = rbdx
        .run(&["journal", "info", "j", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        (&info["order"], &info["splay_width"], &info["object_pool"]),
        (
            &serde_json::json!(20),
            &serde_json::json!(8),
            &serde_json::json!("jpool")
        ),
        "the layout stays: {info}"
    );
    let data = runtime.block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(rbdx_objstore_dir::DirStore::open(rbdx.path()).unwrap());
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        let images = rbdx_image::Images::new(rbdx_journal::cluster(store), io);
        let image = images
            .open("j", rbdx_image::OpenOptions::default().with_read_only(true))
            .await
            .unwrap();
        let data = image.read(4096, 9).await.unwrap();
        image.close().await.unwrap();
        data
    });
    assert_eq!(data, "unapplied");
    rbdx.run(&["journal", "inspect", "j"]).ok();
    rbdx.run(&["create", "--size", "4M", "plain"]).ok();
    rbdx.run(&["journal", "reset", "plain"])
        .fails(2, "no journal");
    rbdx.run(&["journal", "reset", "nosuch"]).fails(2, "nosuch");
    // A journal whose image is gone is emptied in place.
    let open_orphan = || async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(rbdx_objstore_dir::DirStore::open(rbdx.path()).unwrap());
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        rbdx_journal::Journal::open_for_append(store, io, "0rphan")
            .await
            .unwrap()
    };
    runtime.block_on(async {
        let store: Arc<dyn ObjectStore> =
            Arc::new(rbdx_objstore_dir::DirStore::open(rbdx.path()).unwrap());
        let io = IoCtx::new(store.pool_lookup("rbd").await.unwrap().id);
        rbdx_journal::Journal::create(&store, &io, "0rphan", Default::default())
            .await
            .unwrap();
        let journal = open_orphan().await;
        journal
            .append(bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    });
    rbdx.run(&["journal", "reset", "rbd/0rphan"]).ok();
    let left = runtime.block_on(async { open_orphan().await.entries_after(None).await.unwrap() });
    assert!(left.is_empty(), "{} entries left", left.len());

    rbdx.run(&[
        "create",
        "--size",
        "4M",
        "--image-feature",
        "exclusive-lock,journaling",
        "--journal-object-size",
        "3M",
        "bad",
    ])
    .fails(22, "journal object size");
    rbdx.run(&[
        "create",
        "--size",
        "4M",
        "--image-feature",
        "exclusive-lock,journaling",
        "--journal-pool",
        "nosuch",
        "bad",
    ])
    .fails(2, "nosuch");
}
