//! The `rbdx` binary on one embedded store, as benchmarks run it.

use std::io::{BufRead as _, Read as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::{build_rbdx, show, target_dir};

/// Returns the median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Returns the peak resident memory of process `pid` (VmHWM).
pub fn high_water(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs `cmd`, which must succeed; returns its standard output (if `capture`, else it is
/// discarded), its wall time in seconds and its peak resident memory in bytes.
pub fn run_with_peak(cmd: &mut Command, capture: bool) -> anyhow::Result<(String, f64, u64)> {
    cmd.stdout(if capture {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", show(cmd)))?;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout)?;
    }
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (the `Child` is never waited on), and
    // both out-pointers point at live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(reaped == pid, "wait4 failed for {}", show(cmd));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = std::process::ExitStatus::from_raw(status);
    anyhow::ensure!(status.success(), "{} failed: {stderr}", show(cmd));
    Ok((stdout, secs, usage.ru_maxrss as u64 * 1024))
}

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
    /// Builds `rbdx` and returns it on a fresh store in `target/NAME`; returns the directory
    /// too.
    pub fn fresh(name: &str) -> anyhow::Result<(Rbdx, PathBuf)> {
        let binary = build_rbdx()?;
        let dir = target_dir()?.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let rbdx = Rbdx {
            binary,
            store: dir.join("store"),
        };
        Ok((rbdx, dir))
    }

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
