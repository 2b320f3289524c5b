//! `cargo xtask demo`: the main job of rbdx on a fresh embedded store, end to end, printing
//! every command and what it did.
//!
//! For now the job is the object store itself: create a pool, store an object, read it back
//! and check it, keep metadata in its omap, and list what is there. It grows into an import
//! and a live migration as those land.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::{cargo, root, run_step, show};

fn rbdx(binary: &Path, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(binary);
    cmd.args(args).env("RBDX_DATA_DIR", data);
    println!("$ rbdx {}", args.join(" "));
    let out = cmd
        .output()
        .with_context(|| format!("running {}", show(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(
        out.status.success(),
        "`rbdx {}` failed with {}",
        args.join(" "),
        out.status
    );
    Ok(stdout)
}

/// Builds `rbdx` and runs the demo in `target/demo`.
pub fn run() -> anyhow::Result<()> {
    run_step(cargo().args(["build", "--release", "-p", "rbdx-cli"]))?;
    let root = root();
    let binary = root.join("target/release/rbdx");
    let data = root.join("target/demo/store");
    let _ = std::fs::remove_dir_all(root.join("target/demo"));
    std::fs::create_dir_all(root.join("target/demo"))?;
    println!("demo store: {}", data.display());

    let input = root.join("target/demo/disk-chunk.bin");
    let content: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &content)?;
    let output = root.join("target/demo/readback.bin");

    let input_arg = input.to_string_lossy().into_owned();
    let output_arg = output.to_string_lossy().into_owned();
    let object = "rbd_data.demo.0000000000000000";
    let steps: [&[&str]; 9] = [
        &["pool", "ls"],
        &["pool", "create", "vms"],
        &["rados", "-p", "vms", "put", object, &input_arg],
        &[
            "rados",
            "-p",
            "vms",
            "setomapval",
            "rbd_header.demo",
            "size",
            "4194304",
        ],
        &[
            "rados",
            "-p",
            "vms",
            "setomapval",
            "rbd_header.demo",
            "object_prefix",
            "rbd_data.demo",
        ],
        &["rados", "-p", "vms", "ls"],
        &["rados", "-p", "vms", "stat", object],
        &[
            "rados",
            "-p",
            "vms",
            "listomapvals",
            "rbd_header.demo",
            "--format",
            "json",
        ],
        &["rados", "-p", "vms", "get", object, &output_arg],
    ];
    for step in steps {
        rbdx(&binary, &data, step)?;
    }
    let back = std::fs::read(&output)?;
    anyhow::ensure!(
        back == content,
        "the object read back differs from what was written"
    );
    println!(
        "read back {} bytes: identical to what was written",
        back.len()
    );
    rbdx(&binary, &data, &["pool", "ls", "--format", "json"])?;
    println!(
        "demo finished: the store in {} holds the pool 'vms' with 2 objects",
        data.display()
    );
    Ok(())
}
