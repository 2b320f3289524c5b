//! `rbdx gateway serve` started by a test, and client configs for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::daemon::Daemon;
use super::{Rbdx, Run};

/// A running `rbdx gateway serve` on 127.0.0.1; stopped with SIGTERM when dropped.
pub struct Gateway {
    daemon: Daemon,
}

impl std::ops::Deref for Gateway {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Gateway {
    /// Serves `site`'s embedded store on a free port (or `bind`), with extra `args`.
    pub fn start(site: &Rbdx, bind: Option<&str>, args: &[&str]) -> Gateway {
        let mut cmd = Command::new(Rbdx::binary());
        cmd.args(["gateway", "serve", "--format", "json", "--bind"])
            .arg(bind.unwrap_or("127.0.0.1:0"))
            .args(args)
            .env("RBDX_DATA_DIR", site.path());
        Gateway {
            daemon: Daemon::start(cmd, "rbdx gateway serve"),
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

    /// Kills the gateway with SIGKILL, as a crash would.
    pub fn kill9(self) {
        self.daemon.kill9();
    }

    /// Stops the gateway with SIGTERM and returns its exit status and standard error.
    pub fn stop(self) -> (i32, String) {
        self.daemon.stop()
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
