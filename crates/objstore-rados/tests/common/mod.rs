//! Finding the test cluster: `RBDX_TEST_CEPH_CONF` names a `ceph.conf` whose default keyring
//! has admin rights. Without it the rados tests are skipped, except under `CI=true`, where
//! skipping would hide that the backend was never tested.

use std::path::PathBuf;

/// The variable naming the test cluster's `ceph.conf`.
pub const CEPH_CONF_ENV: &str = "RBDX_TEST_CEPH_CONF";

/// Returns the test cluster's `ceph.conf`, or `None` (after saying so) when the test must be
/// skipped.
pub fn ceph_conf() -> Option<PathBuf> {
    match std::env::var_os(CEPH_CONF_ENV) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            let why = format!(
                "{CEPH_CONF_ENV} is not set: no Ceph cluster to test the rados backend against \
                 (start one with tests/ceph/micro-cluster.sh and export {CEPH_CONF_ENV}=DIR/ceph.conf)"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}
