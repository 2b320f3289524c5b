//! The object-store conformance suite against `remote` in front of a `memory` store, with
//! real child processes connecting to the gateway.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::RemoteHarness;
use rbdx_objstore::MemoryStore;
use rbdx_objstore::testkit::child;

fn harness() -> RemoteHarness {
    RemoteHarness::new(Arc::new(MemoryStore::new()), "testkit_child")
}

rbdx_objstore::conformance_tests!(harness());

/// The entry point of child processes; does nothing in a normal test run.
#[test]
fn testkit_child() {
    child::child_main(common::connect_from_env);
}
