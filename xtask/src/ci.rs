//! `cargo xtask ci`: the checks every change must pass.

use crate::{cargo, run_step};

/// Runs formatting, lint, test, documentation and fuzz-build checks, stopping at the first
/// failure.
pub fn run() -> anyhow::Result<()> {
    run_step(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_step(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_step(cargo().args(["test", "--workspace", "--all-features", "--no-fail-fast"]))?;
    run_step(
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run_step(cargo().args(["build", "--manifest-path", "fuzz/Cargo.toml", "--bins"]))?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}
