//! The one-host Ceph cluster that rados tests and benchmarks run against, started with
//! `tests/ceph/micro-cluster.sh` and stopped (by the daemons' pid files) when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{root, run_step};

/// The variable the rados tests read to find a cluster.
pub const CEPH_CONF_ENV: &str = "RBDX_TEST_CEPH_CONF";

/// A running micro-cluster.
#[derive(Debug)]
pub struct MicroCluster {
    dir: PathBuf,
}

fn script() -> PathBuf {
    root().join("tests/ceph/micro-cluster.sh")
}

/// Returns true if the Ceph daemons are installed.
pub fn installed() -> bool {
    Command::new("ceph-mon")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns a base port whose range of 100 ports has its first ones free on 127.0.0.1.
fn free_port_range() -> anyhow::Result<u16> {
    (0..20u16)
        .map(|i| 46700 + i * 100)
        .find(|base| (*base..*base + 3).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .context("no free port range for a test cluster between 46700 and 48700")
}

impl MicroCluster {
    /// Starts a cluster in `dir` (wiping what was there).
    pub fn start(dir: &Path) -> anyhow::Result<MicroCluster> {
        let port = free_port_range()?;
        let started = std::time::Instant::now();
        run_step(
            Command::new("bash")
                .arg(script())
                .arg("start")
                .arg(dir)
                .arg(port.to_string()),
        )?;
        eprintln!(
            "xtask: Ceph micro-cluster up in {:.1}s on ports {port}-{}",
            started.elapsed().as_secs_f64(),
            port + 99
        );
        Ok(MicroCluster {
            dir: dir.to_path_buf(),
        })
    }

    /// Starts an S3 gateway (Ceph RGW) on the cluster; returns the variables that point the
    /// S3 tests at it (`RBDX_TEST_S3_URL` and its keys).
    pub fn start_gateway(&self) -> anyhow::Result<Vec<(String, String)>> {
        let started = std::time::Instant::now();
        run_step(Command::new("bash").arg(script()).arg("rgw").arg(&self.dir))?;
        let env = std::fs::read_to_string(self.dir.join("rgw.env"))?;
        eprintln!(
            "xtask: S3 gateway up in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Returns the cluster's `ceph.conf`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }
}

impl Drop for MicroCluster {
    fn drop(&mut self) {
        let _ = run_step(
            Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(&self.dir),
        );
    }
}

/// Returns true if Ceph's S3 gateway is installed.
pub fn gateway_installed() -> bool {
    Command::new("radosgw")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns the cluster to use: `RBDX_TEST_CEPH_CONF` if set (nothing to start), else a fresh
/// micro-cluster in `target/<name>` if Ceph is installed, else `None`.
pub fn cluster_for(name: &str) -> anyhow::Result<(Option<MicroCluster>, Option<PathBuf>)> {
    if let Some(conf) = std::env::var_os(CEPH_CONF_ENV).filter(|c| !c.is_empty()) {
        return Ok((None, Some(PathBuf::from(conf))));
    }
    if !installed() {
        return Ok((None, None));
    }
    let cluster = MicroCluster::start(&crate::target_dir()?.join(name))?;
    let conf = cluster.conf();
    Ok((Some(cluster), Some(conf)))
}
