//! The object-store conformance suite against `remote` in front of a `dir` store, with real
//! child processes connecting to the gateway.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use common::RemoteHarness;
use rbdx_objstore::testkit::{Capabilities, Harness, Spawner, child};
use rbdx_objstore::{ObjectStore, Result};
use rbdx_objstore_dir::DirStore;
use rbdx_peer::SessionSource;

/// Sessions on a `dir` store, each a fresh open of its directory.
#[derive(Debug)]
struct DirSource(std::path::PathBuf);

#[async_trait]
impl SessionSource for DirSource {
    async fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(DirStore::open(Path::new(&self.0))?))
    }
}

struct DirRemote {
    remote: RemoteHarness,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for DirRemote {
    async fn connect(&self) -> Arc<dyn ObjectStore> {
        self.remote.connect().await
    }

    fn spawner(&self) -> Option<&dyn Spawner> {
        self.remote.spawner()
    }

    fn capabilities(&self) -> Capabilities {
        self.remote.capabilities()
    }
}

fn harness() -> DirRemote {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = Arc::new(DirSource(dir.path().to_path_buf()));
    DirRemote {
        remote: RemoteHarness::new(source, "testkit_child"),
        _dir: dir,
    }
}

rbdx_objstore::conformance_tests!(harness());

/// The entry point of child processes; does nothing in a normal test run.
#[test]
fn testkit_child() {
    child::child_main(common::connect_from_env);
}
