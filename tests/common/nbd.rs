//! `rbdx nbd serve` started by a test, and the real NBD clients the tests drive.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::Rbdx;
use super::daemon::Daemon;

/// A running `rbdx nbd serve`; stopped with SIGTERM when dropped.
pub struct Server {
    daemon: Daemon,
}

impl std::ops::Deref for Server {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Server {
    /// Starts `rbdx nbd serve` on 127.0.0.1 (a free port) with `args` (image specs and
    /// options), and waits for its start line.
    pub fn start(rbdx: &Rbdx, args: &[&str]) -> Server {
        Server::start_env(rbdx, args, &[])
    }

    /// Starts `rbdx nbd serve` as [`Server::start`] does, with extra environment variables.
    pub fn start_env(rbdx: &Rbdx, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let mut all = vec!["nbd", "serve", "--format", "json"];
        if !args.contains(&"--socket") {
            all.extend(["--bind", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut cmd = Command::new(Rbdx::binary());
        cmd.args(&all).env("RBDX_DATA_DIR", rbdx.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server {
            daemon: Daemon::start(cmd, "rbdx nbd serve"),
        }
    }

    /// Returns the URI of export `name`.
    pub fn uri(&self, name: &str) -> String {
        self.started["exports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no export {name}: {}", self.started))["uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Returns the `host:port` (or socket path) the server listens on.
    pub fn address(&self) -> String {
        self.started["address"].as_str().unwrap().to_owned()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(self) {
        self.daemon.kill9();
    }

    /// Stops the server with SIGTERM and returns its exit status and standard error.
    pub fn stop(self) -> (i32, String) {
        self.daemon.stop()
    }
}

/// Returns true if `program` is installed; otherwise says why the test is skipped (and fails
/// under `CI=true`).
pub fn have(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is required under CI=true (apt-get install {package})"
        );
        eprintln!("skipped: {program} is not installed (apt-get install {package})");
    }
    found
}

/// Runs a client program and returns what it printed; panics with its output if it fails.
#[track_caller]
pub fn client(program: &str, args: &[&str]) -> String {
    let out = client_output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks with `qemu-img compare` that raw file `file` and raw export `uri` hold the same
/// bytes; returns what it printed.
#[track_caller]
pub fn compare_raw(file: &Path, uri: &str) -> String {
    client(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            file.to_str().unwrap(),
            uri,
        ],
    )
}

/// Runs a client program and returns its output, whatever its exit status.
pub fn client_output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Writes a file of `size` bytes whose first half of every `period` bytes holds a pattern
/// depending on `seed` and whose other half is zeros; returns the content.
pub fn half_sparse_file(path: &Path, size: u64, period: u64, seed: u8) -> Vec<u8> {
    let mut content = vec![0u8; size as usize];
    let mut at = 0;
    while at < size {
        let end = (at + period / 2).min(size);
        for (i, b) in content[at as usize..end as usize].iter_mut().enumerate() {
            *b = seed
                .wrapping_add((i % 251) as u8)
                .wrapping_add((at / period) as u8)
                | 1;
        }
        at += period;
    }
    std::fs::write(path, &content).unwrap();
    content
}
