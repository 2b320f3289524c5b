//! Project tasks, run with `cargo xtask <task>`:
//!
//! - `ci`: everything CI checks: formatting, clippy with warnings denied, every test, the
//!   documentation with warnings denied, and a build and smoke run of the fuzz targets.
//! - `bench [GROUP...] [--backend dir|rados]`: runs the benchmarks (default: all, on `dir`)
//!   and prints, per group, a table of rbdx next to the reference measured in the same run
//!   (for `rados`, Ceph's `rados bench` on the same cluster; for `image`, plain file I/O; for
//!   `migration`, `qemu-img convert` and `cp --sparse=always`; for `nbd`, `qemu-nbd`; `journal`
//!   compares journaling on and off and times diffs and export-diff).
//! - `demo`: builds `rbdx` and runs the main job end to end on a fresh embedded store.
//! - `fuzz --smoke [SECONDS]`: builds the fuzz targets with coverage instrumentation and runs
//!   each for a few seconds from a seed corpus.

mod bench;
mod ceph;
mod ci;
mod demo;
mod fuzz;
mod image_bench;
mod journal_bench;
mod migration_bench;
mod nbd_bench;
mod rados_bench;
mod rbdx;
mod source_bench;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("demo") => demo::run(),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | bench [objstore] [image] [source] [migration] [nbd] [journal] [--backend dir|rados] | demo | fuzz --smoke [SECONDS]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command, echoing it, and fails if it fails.
pub fn run_step(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "`{}` failed with {status}", show(cmd));
    Ok(())
}

/// Renders a command for display.
pub fn show(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Returns the workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}

/// Returns a `cargo` command run in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    cmd
}
