//! The `rbdx` binary on one embedded store, as benchmarks run it.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::show;

/// A started `rbdx nbd serve`: the process, its JSON start line and its first export's URI.
pub struct NbdServer {
    /// The server process.
    pub child: Child,
    /// The start line it printed.
    pub line: String,
    /// The URI of its first export.
    pub uri: String,
}

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

    /// Starts `rbdx nbd serve --bind 127.0.0.1:0 --format json image` and waits for its start
    /// line.
    pub fn nbd_serve(&self, image: &str) -> anyhow::Result<NbdServer> {
        let mut child = self
            .cmd(&[
                "nbd",
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--format",
                "json",
                image,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rbdx nbd serve")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let started: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("rbdx nbd serve said: {line}"))?;
        let uri = started["exports"][0]["uri"]
            .as_str()
            .context("no export URI")?
            .to_owned();
        Ok(NbdServer { child, line, uri })
    }
}
