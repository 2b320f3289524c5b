//! The `rbdx` binary on one embedded store, as benchmarks run it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::show;

/// The `rbdx` binary on one store.
pub struct Rbdx {
    /// The binary.
    pub binary: PathBuf,
    /// The store directory (`RBDX_DATA_DIR`).
    pub store: PathBuf,
}

impl Rbdx {
    /// Returns a command running `rbdx args` on the store.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args).env("RBDX_DATA_DIR", &self.store);
        cmd
    }

    /// Runs `rbdx args`, which must succeed; returns its standard output.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.cmd(args);
        let out = cmd.output().with_context(|| show(&cmd))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
