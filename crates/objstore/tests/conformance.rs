//! The conformance suite against the in-memory reference backend.

use std::sync::Arc;

use async_trait::async_trait;
use rbdx_objstore::testkit::{Harness, Spawner};
use rbdx_objstore::{MemoryStore, ObjectStore};

/// Sessions on one in-memory cluster; no child processes (the store lives in this process).
struct MemoryHarness {
    first: MemoryStore,
}

#[async_trait]
impl Harness for MemoryHarness {
    async fn connect(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.first.connect())
    }

    fn spawner(&self) -> Option<&dyn Spawner> {
        None
    }
}

rbdx_objstore::conformance_tests!(MemoryHarness {
    first: MemoryStore::new()
});
