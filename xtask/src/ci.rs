//! `cargo xtask ci`: the checks every change must pass.
//!
//! The rados backend's tests need a Ceph cluster: `RBDX_TEST_CEPH_CONF` names one, or, when
//! Ceph's daemons are installed, a micro-cluster is started for the test step and stopped
//! after it, with an S3 gateway for the s3 stream's tests (unless `RBDX_TEST_S3_URL` names
//! one). Without either, those tests say they were skipped (and fail under `CI=true`).

use crate::ceph::{self, CEPH_CONF_ENV};

/// The variable the s3 stream's tests read to find an S3 gateway.
const S3_URL_ENV: &str = "RBDX_TEST_S3_URL";
use crate::{cargo, run_step};

/// Runs formatting, lint, test, documentation and fuzz-build checks and a 10-second smoke run
/// of every fuzz target, stopping at the first failure.
pub fn run() -> anyhow::Result<()> {
    run_step(cargo().args(["fmt", "--all", "--", "--check"]))?;
    crate::deps::check(&crate::root())?;
    run_step(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    {
        let (cluster, conf) = ceph::cluster_for("ceph-test")?;
        let mut test = cargo();
        test.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
        if let Some(conf) = conf {
            test.env(CEPH_CONF_ENV, conf);
        }
        if let Some(cluster) = &cluster
            && std::env::var_os(S3_URL_ENV).is_none()
            && ceph::gateway_installed()
        {
            test.envs(cluster.start_gateway()?);
        }
        run_step(&mut test)?;
    }
    run_step(
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run_step(cargo().args(["build", "--manifest-path", "fuzz/Cargo.toml", "--bins"]))?;
    crate::fuzz::run(&["--smoke".to_owned(), "10".to_owned()])?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}
