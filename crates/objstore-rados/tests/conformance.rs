//! The object-store conformance suite against a real Ceph cluster, with real child processes
//! (killed with SIGKILL in the crash and dead-holder cases; the cluster keeps running).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rbdx_objstore::ObjectStore;
use rbdx_objstore::testkit::{Capabilities, Harness, SelfExec, Spawner, child};
use rbdx_objstore_rados::{RadosConfig, RadosStore};

/// Sessions on the cluster named by `RBDX_TEST_CEPH_CONF`; each session is a new connection.
struct RadosHarness {
    config: RadosConfig,
    spawner: SelfExec,
}

fn harness() -> Option<RadosHarness> {
    let conf = common::ceph_conf()?;
    Some(RadosHarness {
        config: RadosConfig::from_ceph_conf(conf),
        spawner: SelfExec::new("testkit_child", Vec::new()),
    })
}

#[async_trait]
impl Harness for RadosHarness {
    async fn connect(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            RadosStore::connect(self.config.clone())
                .await
                .expect("connecting to the test cluster"),
        )
    }

    fn spawner(&self) -> Option<&dyn Spawner> {
        Some(&self.spawner)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A killed client's watches last until the OSD times them out.
            dead_session_grace: self.config.watch_timeout + Duration::from_secs(10),
            crash_rounds: 20,
            counter_increments: 200,
            // The OSDs trim clones in the background after a snapshot removal.
            snap_trim_grace: Duration::from_secs(30),
            // Whether holes are reported depends on the OSDs' object store (BlueStore does,
            // memstore does not); RADOS promises only extents that cover the data.
            reports_holes: false,
        }
    }
}

rbdx_objstore::conformance_tests!(match harness() {
    Some(h) => h,
    None => return,
});

/// The entry point of child processes; does nothing in a normal test run.
#[test]
fn testkit_child() {
    child::child_main(async || {
        let conf = common::ceph_conf().expect("the child inherits the cluster's ceph.conf");
        Arc::new(
            RadosStore::connect(RadosConfig::from_ceph_conf(conf))
                .await
                .expect("connecting to the test cluster"),
        ) as Arc<dyn ObjectStore>
    });
}
