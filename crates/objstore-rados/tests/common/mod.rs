//! Finding the test cluster: `RBDX_TEST_CEPH_CONF` names a `ceph.conf` whose default keyring
//! has admin rights. Without it the rados tests are skipped, except under `CI=true`.

use std::path::PathBuf;

/// Returns the test cluster's `ceph.conf`, or `None` (after saying so) when the test must be
/// skipped.
pub fn ceph_conf() -> Option<PathBuf> {
    rbdx_objstore::testkit::external(
        "RBDX_TEST_CEPH_CONF",
        "no Ceph cluster to test the rados backend against (start one with \
         `tests/ceph/micro-cluster.sh start DIR` and export RBDX_TEST_CEPH_CONF=DIR/ceph.conf)",
    )
    .map(PathBuf::from)
}
