//! The object-store conformance suite against the `dir` backend, with real child processes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use rbdx_objstore::ObjectStore;
use rbdx_objstore::testkit::{Harness, SelfExec, Spawner, child};
use rbdx_objstore_dir::DirStore;

const STORE_ENV: &str = "RBDX_TESTKIT_DIR";

/// A store in a temporary directory; each session is a fresh `DirStore::open` of it.
struct DirHarness {
    dir: tempfile::TempDir,
    spawner: SelfExec,
}

impl DirHarness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let env = vec![(STORE_ENV.to_owned(), dir.path().display().to_string())];
        DirHarness {
            spawner: SelfExec::new("testkit_child", env),
            dir,
        }
    }
}

#[async_trait]
impl Harness for DirHarness {
    async fn connect(&self) -> Arc<dyn ObjectStore> {
        Arc::new(DirStore::open(self.dir.path()).expect("opening the store"))
    }

    fn spawner(&self) -> Option<&dyn Spawner> {
        Some(&self.spawner)
    }
}

rbdx_objstore::conformance_tests!(DirHarness::new());

/// The entry point of child processes; does nothing in a normal test run.
#[test]
fn testkit_child() {
    child::child_main(async || {
        let path = PathBuf::from(std::env::var(STORE_ENV).expect("store directory"));
        Arc::new(DirStore::open(path).expect("opening the store")) as Arc<dyn ObjectStore>
    });
}
