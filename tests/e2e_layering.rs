//! End-to-end tests of `clone`, `flatten` and `children` through the built `rbdx` binary.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Rbdx;

const MIB: usize = 1 << 20;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 241) as u8))
        .collect()
}

#[test]
fn clones_read_through_until_flattened() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let golden = data(6 * MIB, 5);
    let src = dir.path().join("golden.img");
    std::fs::write(&src, &golden).unwrap();
    rbdx.run(&["import", "--no-progress", src.to_str().unwrap(), "golden"])
        .ok();
    rbdx.run(&["snap", "create", "golden@v1"]).ok();
    rbdx.run(&["clone", "golden@v1", "vm1"])
        .fails(22, "must be protected");
    rbdx.run(&["snap", "protect", "golden@v1"]).ok();
    rbdx.run(&["pool", "create", "vms"]).ok();
    rbdx.run(&["clone", "golden@v1", "vms/vm1"]).ok();
    rbdx.run(&[
        "clone",
        "--pool",
        "rbd",
        "--image",
        "golden",
        "--snap",
        "v1",
        "--dest-pool",
        "vms",
        "--dest",
        "vm2",
    ])
    .ok();
    rbdx.run(&["clone", "golden@v1", "vms/vm1"])
        .fails(17, "already exists");

    let info = rbdx
        .run(&["info", "vms/vm1", "--format", "json"])
        .ok()
        .json();
    assert_eq!(info["parent"]["pool"], "rbd");
    assert_eq!(info["parent"]["image"], "golden");
    assert_eq!(info["parent"]["snapshot"], "v1");
    assert_eq!(info["parent"]["overlap"], 6 * MIB);
    let plain = rbdx.run(&["info", "vms/vm1"]).ok().stdout;
    assert!(
        plain.contains("\tparent: rbd/golden@v1\n\toverlap: 6 MiB\n"),
        "{plain}"
    );
    let kids = rbdx
        .run(&["children", "golden@v1", "--format", "json"])
        .ok()
        .json();
    assert_eq!(
        kids,
        serde_json::json!([
            {"pool": "vms", "pool_namespace": "", "image": "vm1"},
            {"pool": "vms", "pool_namespace": "", "image": "vm2"}
        ])
    );
    assert_eq!(
        rbdx.run(&["children", "golden@v1"]).ok().stdout,
        "vms/vm1\nvms/vm2\n"
    );

    let out = dir.path().join("vm1.img");
    rbdx.run(&["export", "vms/vm1", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(&out).unwrap(), golden);

    rbdx.run(&["snap", "unprotect", "golden@v1"])
        .fails(16, "child");
    rbdx.run(&["snap", "rm", "golden@v1"])
        .fails(16, "protected");
    rbdx.run(&["rm", "golden"]).fails(39, "has snapshots");

    let run = rbdx.run(&["flatten", "vms/vm1"]).ok();
    assert!(
        run.stderr.contains("Image flatten: 100% complete...done."),
        "{}",
        run.stderr
    );
    assert!(
        rbdx.run(&["info", "vms/vm1", "--format", "json"])
            .ok()
            .json()["parent"]
            .is_null()
    );
    rbdx.run(&["flatten", "vms/vm1"]).fails(22, "not a clone");
    rbdx.run(&["rm", "vms/vm2", "--no-progress"]).ok();
    assert_eq!(rbdx.run(&["children", "golden@v1"]).ok().stdout, "");
    rbdx.run(&["snap", "unprotect", "golden@v1"]).ok();
    rbdx.run(&["snap", "purge", "golden", "--no-progress"]).ok();
    rbdx.run(&["rm", "golden", "--no-progress"]).ok();
    let flat = dir.path().join("flat.img");
    rbdx.run(&["export", "vms/vm1", flat.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(&flat).unwrap(), golden);
}

/// Exports `spec` and returns its bytes.
fn export(rbdx: &Rbdx, spec: &str) -> Vec<u8> {
    let out = rbdx.path().join("export.raw");
    let _ = std::fs::remove_file(&out);
    rbdx.run(&["export", "--no-progress", spec, out.to_str().unwrap()])
        .ok();
    std::fs::read(&out).unwrap()
}

fn op_features(rbdx: &Rbdx, spec: &str) -> serde_json::Value {
    rbdx.run(&["info", spec, "--format", "json"]).ok().json()["op_features"].clone()
}

#[test]
fn format_2_clones_need_no_protection_and_keep_a_removed_parent_snapshot_in_the_trash() {
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    let base = data(8 * MIB, 9);
    let src = dir.path().join("base.img");
    std::fs::write(&src, &base).unwrap();
    rbdx.run(&["import", "--no-progress", src.to_str().unwrap(), "parent"])
        .ok();
    rbdx.run(&["snap", "create", "parent@s"]).ok();
    // Without format 2 (auto is format 1) an unprotected snapshot cannot be cloned.
    rbdx.run(&["clone", "parent@s", "child"])
        .fails(22, "must be protected");
    rbdx.run(&[
        "clone",
        "--rbd-default-clone-format",
        "3",
        "parent@s",
        "child",
    ])
    .fails(22, "invalid clone format");
    rbdx.run(&[
        "clone",
        "--rbd-default-clone-format",
        "2",
        "parent@s",
        "child",
    ])
    .ok();
    let child = rbdx.run(&["info", "child", "--format", "json"]).ok().json();
    assert_eq!(child["op_features"], serde_json::json!(["clone-child"]));
    assert!(
        child["features"]
            .as_array()
            .unwrap()
            .contains(&"operations".into()),
        "{child}"
    );
    assert_eq!(child["parent"]["snapshot"], "s");
    assert_eq!(
        op_features(&rbdx, "parent"),
        serde_json::json!(["clone-parent"])
    );
    assert_eq!(
        rbdx.run(&["children", "parent@s"]).ok().stdout.trim(),
        "rbd/child"
    );
    // The parent changes after the snapshot; the clone keeps reading the snapshot.
    rbdx.run(&["bench", "parent", "--io-type", "write", "--io-total", "4M"])
        .ok();
    rbdx.run(&["snap", "unprotect", "parent@s"])
        .fails(22, "already unprotected");

    // Removing the snapshot moves it to the trash namespace.
    rbdx.run(&["snap", "rm", "--no-progress", "parent@s"]).ok();
    assert_eq!(
        rbdx.run(&["snap", "ls", "parent", "--format", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
    let all = rbdx
        .run(&["snap", "ls", "--all", "parent", "--format", "json"])
        .ok()
        .json();
    let trashed = &all[0];
    assert_eq!(
        trashed["namespace"],
        serde_json::json!({"type": "trash", "original_name": "s"})
    );
    let uuid = trashed["name"].as_str().unwrap().to_owned();
    assert_eq!(uuid.len(), 36, "{uuid}");
    let plain = rbdx.run(&["snap", "ls", "-a", "parent"]).ok().stdout;
    assert!(
        plain.lines().next().unwrap().ends_with("NAMESPACE"),
        "{plain}"
    );
    assert!(plain.contains("trash (s)"), "{plain}");
    assert_eq!(
        op_features(&rbdx, "parent"),
        serde_json::json!(["clone-parent", "snap-trash"])
    );
    let child = rbdx.run(&["info", "child", "--format", "json"]).ok().json();
    assert_eq!(child["parent"]["snapshot"], uuid.as_str());
    assert_eq!(
        export(&rbdx, "child"),
        base,
        "the clone still reads the snapshot"
    );
    rbdx.run(&["snap", "create", "parent@s"]).ok();
    rbdx.run(&["snap", "rm", "--no-progress", "parent@s"]).ok();
    rbdx.run(&["rm", "--no-progress", "parent"])
        .fails(39, "format 2 clones");

    // Its last clone gone, the trashed snapshot goes too.
    rbdx.run(&["rm", "--no-progress", "child"]).ok();
    assert_eq!(
        rbdx.run(&["snap", "ls", "--all", "parent", "--format", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
    assert_eq!(op_features(&rbdx, "parent"), serde_json::json!([]));
    let parent = rbdx
        .run(&["info", "parent", "--format", "json"])
        .ok()
        .json();
    assert!(
        !parent["features"]
            .as_array()
            .unwrap()
            .contains(&"operations".into()),
        "{parent}"
    );
    rbdx.run(&["rm", "--no-progress", "parent"]).ok();
}

#[test]
fn flattening_the_last_format_2_clone_removes_the_trashed_snapshot() {
    let rbdx = Rbdx::new();
    rbdx.run(&["create", "--size", "8M", "parent"]).ok();
    rbdx.run(&["bench", "parent", "--io-type", "write", "--io-total", "8M"])
        .ok();
    let before = export(&rbdx, "parent");
    rbdx.run(&["snap", "create", "parent@f"]).ok();
    // The setting may come from the config, as rbd reads rbd_default_clone_format.
    let conf = rbdx.path().join("rbdx.conf");
    std::fs::write(
        &conf,
        format!(
            "[cluster]\nbackend = \"dir\"\ndata_dir = \"{}\"\n\n[client]\nrbd_default_clone_format = \"2\"\n",
            rbdx.path().display()
        ),
    )
    .unwrap();
    rbdx.run(&["-c", conf.to_str().unwrap(), "clone", "parent@f", "c1"])
        .ok();
    rbdx.run(&["clone", "--rbd-default-clone-format", "2", "parent@f", "c2"])
        .ok();
    rbdx.run(&["snap", "rm", "--no-progress", "parent@f"]).ok();
    rbdx.run(&["flatten", "--no-progress", "c1"]).ok();
    assert_eq!(
        rbdx.run(&["snap", "ls", "--all", "parent", "--format", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "c2 still uses the trashed snapshot"
    );
    assert_eq!(op_features(&rbdx, "c1"), serde_json::json!([]));
    rbdx.run(&["flatten", "--no-progress", "c2"]).ok();
    assert_eq!(
        rbdx.run(&["snap", "ls", "--all", "parent", "--format", "json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
    assert_eq!(op_features(&rbdx, "parent"), serde_json::json!([]));
    assert_eq!(export(&rbdx, "c1"), before);
    assert_eq!(export(&rbdx, "c2"), before);
    // A protected snapshot with only format 2 clones may be unprotected.
    rbdx.run(&["snap", "create", "parent@p"]).ok();
    rbdx.run(&["snap", "protect", "parent@p"]).ok();
    rbdx.run(&["clone", "--rbd-default-clone-format", "2", "parent@p", "c3"])
        .ok();
    rbdx.run(&["snap", "unprotect", "parent@p"]).ok();
    rbdx.run(&["snap", "protect", "parent@p"]).ok();
    rbdx.run(&["clone", "parent@p", "c4"]).ok();
    rbdx.run(&["snap", "unprotect", "parent@p"])
        .fails(16, "child image");
}
