//! Helpers for end-to-end tests: run the built `rbdx` binary against a temporary store or a
//! Ceph cluster.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod daemon;
pub mod gateway;
pub mod http;
pub mod mirror;
pub mod nbd;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary directory (the embedded store, unless a cluster is given) and a way to run
/// `rbdx` on the store.
pub struct Rbdx {
    pub dir: tempfile::TempDir,
    /// Options selecting a Ceph cluster, put before every command; empty for the embedded store.
    cluster_args: Vec<String>,
}

/// A small deterministic generator of test offsets and lengths.
pub struct Lcg(pub u64);

impl Lcg {
    /// Returns a number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// What one `rbdx` run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Parses standard output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Checks the run succeeded and returns it.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "rbdx failed: {}", self.stderr);
        self
    }

    /// Checks the run failed with `code` and a single-line message containing `text`.
    #[track_caller]
    pub fn fails(self, code: i32, text: &str) -> Run {
        assert_eq!(
            self.code, code,
            "stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(text),
            "stderr lacks '{text}': {}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

impl Rbdx {
    /// Creates an empty data directory.
    pub fn new() -> Rbdx {
        Rbdx {
            dir: tempfile::tempdir().unwrap(),
            cluster_args: Vec::new(),
        }
    }

    /// Runs commands against the Ceph cluster selected by `args` (e.g. `--ceph-conf FILE`).
    pub fn on_cluster(args: &[&str]) -> Rbdx {
        Rbdx {
            dir: tempfile::tempdir().unwrap(),
            cluster_args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Returns the test cluster's `ceph.conf` (`RBDX_TEST_CEPH_CONF`), or `None` after saying
    /// why the test is skipped (under `CI=true` it fails instead).
    pub fn test_cluster() -> Option<String> {
        rbdx_objstore::testkit::external(
            "RBDX_TEST_CEPH_CONF",
            "no Ceph cluster to run rbdx against (see tests/ceph/micro-cluster.sh)",
        )
    }

    /// Returns the data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the path of the `rbdx` binary under test.
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_rbdx"))
    }

    /// Runs `rbdx` with `args` and optional standard input.
    pub fn run_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Run {
        let mut cmd = Command::new(Self::binary());
        cmd.args(&self.cluster_args).args(args);
        if self.cluster_args.is_empty() {
            cmd.env("RBDX_DATA_DIR", self.path());
        }
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Runs `rbdx` with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, None)
    }
}
