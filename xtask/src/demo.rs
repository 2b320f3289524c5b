//! `cargo xtask demo`: the main job of rbdx on a fresh embedded store, end to end, printing
//! every command and what it did.
//!
//! For now the job is the image life cycle: import a sparse disk, snapshot and protect it,
//! clone it into another pool, write to the clone, flatten it and export it. It grows into an
//! import-only and a live migration as those land.

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

    // A 64 MiB disk with data in its first and last 4 MiB, the rest a hole.
    let input = root.join("target/demo/disk.raw");
    let mut content = vec![0u8; 64 << 20];
    for (i, b) in content[..4 << 20].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    for (i, b) in content[60 << 20..].iter_mut().enumerate() {
        *b = (i % 241) as u8 | 1;
    }
    std::fs::write(&input, &content)?;
    let export = root.join("target/demo/vm1.raw");
    let export_arg = export.to_string_lossy().into_owned();

    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        input.display()
    );
    let steps: [&[&str]; 24] = [
        &["pool", "create", "vms"],
        &["pool", "create", "fast"],
        // Import-only migration: the image is usable right after prepare.
        &[
            "migration",
            "prepare",
            "--import-only",
            "--source-spec",
            &spec,
            "rbd/golden",
        ],
        &["status", "golden"],
        &["migration", "execute", "golden"],
        &["migration", "commit", "golden"],
        &["info", "golden"],
        &["du", "golden"],
        &["snap", "create", "golden@v1"],
        &["snap", "protect", "golden@v1"],
        &["clone", "golden@v1", "vms/vm1"],
        &[
            "bench",
            "vms/vm1",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-total",
            "8M",
            "--io-pattern",
            "rand",
        ],
        &["children", "golden@v1"],
        &["ls", "-l", "vms"],
        &["flatten", "vms/vm1"],
        &["snap", "create", "vms/vm1@after-flatten"],
        &["export", "vms/vm1@after-flatten", &export_arg],
        &["du", "-p", "vms"],
        // Live migration of the clone to another pool, then a check against the source.
        &["migration", "prepare", "vms/vm1", "fast/vm1"],
        &["status", "fast/vm1"],
        &["migration", "execute", "fast/vm1"],
        &["migration", "verify", "fast/vm1"],
        &["migration", "commit", "fast/vm1"],
        &["ls", "-l", "fast"],
    ];
    for step in steps {
        rbdx(&binary, &data, step)?;
    }
    let back = std::fs::read(&export)?;
    anyhow::ensure!(back.len() == content.len(), "the export has the wrong size");
    // The clone kept the golden image's data wherever the random writes did not land.
    let untouched = back
        .chunks(4096)
        .zip(content.chunks(4096))
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "exported vms/vm1: {} of {} 4 KiB blocks still equal the golden image, the rest hold \
         the benchmark's writes",
        untouched,
        content.len() / 4096
    );
    println!(
        "demo finished: the store in {} holds rbd/golden (imported, with snapshot v1) and the \
         flattened clone, migrated live to fast/vm1",
        data.display()
    );
    Ok(())
}
