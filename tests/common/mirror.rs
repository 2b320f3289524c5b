//! Two mirroring sites on 127.0.0.1 for tests: each its own data dir, gateway and (when
//! started) mirror daemon, peered with a bootstrap token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Rbdx;
use super::daemon::Daemon;
use super::gateway::Gateway;

/// One site.
pub struct Site {
    /// Its store.
    pub rbdx: Rbdx,
    /// Its gateway, while it runs.
    pub gateway: Option<Gateway>,
    /// Where its gateway listens (kept across restarts).
    pub address: String,
    /// Its name.
    pub name: String,
}

impl Site {
    /// Creates pool `pool`, enables its mirroring in `mode` and starts the gateway.
    pub fn new(name: &str, pool: &str, mode: &str) -> Site {
        let rbdx = Rbdx::new();
        let created = rbdx.run(&["pool", "create", pool]);
        assert!(matches!(created.code, 0 | 17), "{}", created.stderr);
        rbdx.run(&["mirror", "pool", "enable", "--site-name", name, pool, mode])
            .ok();
        let gateway = Gateway::start(&rbdx, None, &[]);
        let address = gateway.address();
        Site {
            rbdx,
            gateway: Some(gateway),
            address,
            name: name.to_owned(),
        }
    }

    /// Runs `rbdx` at this site.
    pub fn run(&self, args: &[&str]) -> super::Run {
        self.rbdx.run(args)
    }

    /// Stops the gateway (the site is cut off).
    pub fn cut_off(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop();
        }
    }

    /// Starts the gateway again on the same address.
    pub fn reconnect(&mut self) {
        if self.gateway.is_none() {
            self.gateway = Some(Gateway::start(&self.rbdx, Some(&self.address), &[]));
        }
    }

    /// Starts a mirror daemon with id `id`, logging to `<data dir>/daemon-<id>.log`.
    pub fn daemon(&self, id: &str) -> Daemon {
        let mut cmd = Command::new(Rbdx::binary());
        cmd.args(["mirror", "daemon", "--format", "json", "--daemon-id", id])
            .env("RBDX_DATA_DIR", self.rbdx.path());
        Daemon::start_logging(cmd, "rbdx mirror daemon", &self.log(id))
    }

    /// The log file of daemon `id`.
    pub fn log(&self, id: &str) -> PathBuf {
        self.rbdx.path().join(format!("daemon-{id}.log"))
    }

    /// Returns `mirror image status` of `spec` as JSON.
    pub fn status(&self, spec: &str) -> serde_json::Value {
        self.run(&["mirror", "image", "status", spec, "--format", "json"])
            .ok()
            .json()
    }

    /// Returns this site's state of `spec` (`up+replaying`, ...).
    pub fn state(&self, spec: &str) -> String {
        let run = self.run(&["mirror", "image", "status", spec, "--format", "json"]);
        if run.code != 0 {
            return String::new();
        }
        run.json()["state"].as_str().unwrap_or_default().to_owned()
    }

    /// This site's `mirror image status` of `spec` and the last lines of its daemon logs,
    /// for a failing test's message. With `RBDX_TEST_KEEP=DIR` set, the site's data
    /// directory is also copied to `DIR/<site name>` for a look afterwards.
    pub fn diagnostics(&self, spec: &str) -> String {
        if let Some(keep) = std::env::var_os("RBDX_TEST_KEEP") {
            let _ = std::fs::create_dir_all(&keep);
            let to = Path::new(&keep).join(&self.name);
            let _ = Command::new("cp")
                .arg("-a")
                .arg(self.rbdx.path())
                .arg(&to)
                .status();
        }
        let status = self.run(&["mirror", "image", "status", spec, "--format", "json"]);
        let mut out = format!(
            "{} status of {spec}: {}{}",
            self.name, status.stdout, status.stderr
        );
        let logs = std::fs::read_dir(self.rbdx.path())
            .into_iter()
            .flatten()
            .flatten();
        for entry in logs {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("daemon-") && name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                out.push_str(&format!("\n{} {name} (last 40 lines):\n{tail}", self.name));
            }
        }
        out
    }

    /// Exports `spec` to a file in `dir` and returns its bytes.
    pub fn export(&self, spec: &str, dir: &Path) -> Option<Vec<u8>> {
        let path = dir.join(format!("{}-{}", self.name, spec.replace(['/', '@'], "_")));
        let _ = std::fs::remove_file(&path);
        let run = self.run(&["export", "--no-progress", spec, path.to_str().unwrap()]);
        if run.code != 0 {
            return None;
        }
        std::fs::read(&path).ok()
    }
}

/// Makes `b` a two-way (or `direction`) peer of `a` for `pool` with a bootstrap token.
pub fn peer(a: &Site, b: &Site, pool: &str, direction: &str) {
    let token = a
        .run(&["mirror", "pool", "peer", "bootstrap", "create", pool])
        .ok()
        .stdout;
    b.rbdx
        .run_with_input(
            &[
                "mirror",
                "pool",
                "peer",
                "bootstrap",
                "import",
                "--direction",
                direction,
                pool,
                "-",
            ],
            Some(token.as_bytes()),
        )
        .ok();
}

/// Two peered sites (`site-a`, `site-b`) mirroring pool `pool` in `mode`, both ways.
pub fn two_sites(pool: &str, mode: &str) -> (Site, Site) {
    let a = Site::new("site-a", pool, mode);
    let b = Site::new("site-b", pool, mode);
    peer(&a, &b, pool, "rx-tx");
    (a, b)
}

/// Waits until `ok` holds, polling every 200 ms; panics after `timeout` saying `what`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `spec` reads the same at both sites; on timeout, panics with both sites'
/// status of `spec` and the ends of their daemon logs.
pub fn wait_equal(a: &Site, b: &Site, spec: &str, dir: &Path, timeout: Duration) {
    let start = Instant::now();
    loop {
        let (x, y) = (a.export(spec, dir), b.export(spec, dir));
        if matches!((&x, &y), (Some(x), Some(y)) if x == y) {
            return;
        }
        if start.elapsed() >= timeout {
            let differ = match (&x, &y) {
                (Some(x), Some(y)) => differences(x, y),
                _ => format!(
                    "export at {}: {}, at {}: {}",
                    a.name,
                    x.is_some(),
                    b.name,
                    y.is_some()
                ),
            };
            panic!(
                "timed out after {timeout:?} waiting for {spec} to be equal at both sites: \
                 {differ}\n{}\n{}",
                a.diagnostics(spec),
                b.diagnostics(spec)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Describes how two exports differ: their sizes and the first 4 KiB blocks that differ,
/// each with its first byte at both sites.
fn differences(x: &[u8], y: &[u8]) -> String {
    let blocks: Vec<String> = x
        .chunks(4096)
        .zip(y.chunks(4096))
        .enumerate()
        .filter(|(_, (p, q))| p != q)
        .map(|(i, (p, q))| format!("block {i} ({:#x} / {:#x})", p[0], q[0]))
        .collect();
    format!(
        "{} and {} bytes, {} blocks differ: {}",
        x.len(),
        y.len(),
        blocks.len(),
        blocks
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Writes `bytes` of 4 KiB random writes (rbdx bench) into `spec` at `site`.
pub fn scribble(site: &Site, spec: &str, size: &str, bytes: &str) {
    site.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        size,
        "--io-total",
        bytes,
        "--io-pattern",
        "rand",
        spec,
    ])
    .ok();
}

/// Creates image `spec` of `size` with the journaling feature at `site`.
pub fn create_journaling(site: &Site, spec: &str, size: &str) {
    site.run(&[
        "create",
        spec,
        "--size",
        size,
        "--image-feature",
        "layering,exclusive-lock,journaling",
    ])
    .ok();
}

/// Returns the mirror snapshots of `spec` at `site` (`snap ls --all` JSON entries).
pub fn mirror_snapshots(site: &Site, spec: &str) -> Vec<serde_json::Value> {
    site.run(&["snap", "ls", "--all", spec, "--format", "json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["namespace"]["type"] == "mirror")
        .cloned()
        .collect()
}
