//! `rbdx gateway serve` started by a test, and client configs for it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use super::{Rbdx, Run};

/// A running `rbdx gateway serve` on 127.0.0.1; stopped with SIGTERM when dropped.
pub struct Gateway {
    child: Option<Child>,
    /// The JSON line it printed on start.
    pub started: serde_json::Value,
    _stdout: BufReader<ChildStdout>,
}

impl Gateway {
    /// Serves `site`'s embedded store on a free port (or `bind`), with extra `args`.
    pub fn start(site: &Rbdx, bind: Option<&str>, args: &[&str]) -> Gateway {
        let mut child = Command::new(Rbdx::binary())
            .args(["gateway", "serve", "--format", "json", "--bind"])
            .arg(bind.unwrap_or("127.0.0.1:0"))
            .args(args)
            .env("RBDX_DATA_DIR", site.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "rbdx gateway serve did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Gateway {
            child: Some(child),
            started: serde_json::from_str(&line).unwrap(),
            _stdout: stdout,
        }
    }

    /// Returns `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.started["address"].as_str().unwrap().to_owned()
    }

    /// Returns the certificate's fingerprint.
    pub fn fingerprint(&self) -> String {
        self.started["fingerprint"].as_str().unwrap().to_owned()
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the gateway with SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the gateway with SIGTERM and returns its exit status and standard error.
    pub fn stop(mut self) -> (i32, String) {
        let child = self.child.take().unwrap();
        terminate(&child);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// Makes key `name` with `args` (`--profile ...`) at `site` and writes its client config to
/// `dir/NAME.conf`; returns the path.
pub fn key(site: &Rbdx, name: &str, args: &[&str], dir: &Path) -> PathBuf {
    let mut all = vec!["gateway", "key", "create", name];
    all.extend_from_slice(args);
    let run: Run = site.run(&all).ok();
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, run.stdout).unwrap();
    path
}

/// Runs `rbdx -c CONF args...` (another site using the gateway), without an embedded store.
pub fn remote(conf: &Path, args: &[&str]) -> Run {
    let out = Command::new(Rbdx::binary())
        .arg("-c")
        .arg(conf)
        .args(args)
        .env_remove("RBDX_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
