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
