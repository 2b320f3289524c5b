//! Project tasks, run with `cargo xtask <task>`:
//!
//! - `ci`: everything CI checks: formatting, clippy with warnings denied, every test, the
//!   documentation with warnings denied, and a build and smoke run of the fuzz targets.
//! - `bench [GROUP...] [--backend dir|rados]`: runs the benchmarks (default: all, on `dir`)
//!   and prints, per group, a table of rbdx next to the reference measured in the same run
//!   (for `rados`, Ceph's `rados bench` on the same cluster; for `image`, plain file I/O; for
//!   `migration`, `qemu-img convert` and `cp --sparse=always`; for `nbd`, `qemu-nbd`; `journal`
//!   compares journaling on and off and times diffs and export-diff).
//! - `deps`: checks that every crate takes its dependencies from `[workspace.dependencies]`.
//! - `demo`: builds `rbdx` and runs the main job end to end on a fresh embedded store.
//! - `fuzz --smoke [SECONDS]`: builds the fuzz targets with coverage instrumentation and runs
//!   each for a few seconds from a seed corpus.

mod bench;
mod ceph;
mod ci;
mod demo;
mod deps;
mod fuzz;
mod image_bench;
mod journal_bench;
mod migration_bench;
mod mirror_bench;
mod nbd_bench;
mod peer_bench;
mod rados_bench;
mod rbdx;
mod source_bench;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("demo") => demo::run(),
        Some("deps") => deps::check(&root()),
        Some("fuzz") => fuzz::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | deps | bench [objstore] [image] [source] [migration] [nbd] [journal] [--backend dir|rados] | demo | fuzz --smoke [SECONDS]"
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

/// Returns the directory cargo builds into (`cargo metadata`'s `target_directory`), which
/// `CARGO_TARGET_DIR` or a cargo config may have moved away from `target/`. Scratch
/// directories of the tasks (the demo's store, benchmark data) live under it too.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed with {}",
        out.status
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata gave no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// Builds the release `rbdx` binary and returns its path, as the build reports it (so a
/// `CARGO_TARGET_DIR`, a `--target` set in a cargo config or any other layout is followed).
pub fn build_rbdx() -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "rbdx-cli",
        "--bin",
        "rbdx",
        "--message-format=json-render-diagnostics",
    ])
    .stderr(Stdio::inherit());
    eprintln!("+ {}", show(&cmd));
    let out = cmd.output().context("running cargo build")?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed with {}",
        show(&cmd),
        out.status
    );
    executable_named(&String::from_utf8_lossy(&out.stdout), "rbdx")
        .context("cargo build reported no rbdx executable")
}

/// Finds the executable of binary target `name` in cargo's JSON build messages.
fn executable_named(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::executable_named;

    #[test]
    fn the_executable_comes_from_the_build_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"rbdx_image"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"rbdx"},"executable":"/t/release/rbdx"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable_named(messages, "rbdx"),
            Some("/t/release/rbdx".into())
        );
        assert_eq!(executable_named(messages, "other"), None);
    }
}
