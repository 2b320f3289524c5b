//! Bad configuration fails with a clear error within seconds, never a hang: a missing
//! `ceph.conf`, monitors nobody answers on, a wrong key, an unknown user, a missing pool.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use rbdx_objstore::{Error, ErrorKind, IoCtx, ObjectStore, ObjectStoreExt, PoolId, Subject};
use rbdx_objstore_rados::{RadosConfig, RadosStore};

/// Connects, failing the test if that takes longer than `limit` (a hang).
async fn connect_within(config: RadosConfig, limit: Duration) -> Result<RadosStore, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(limit, RadosStore::connect(config))
        .await
        .unwrap_or_else(|_| panic!("connecting hung for more than {limit:?}"));
    match &result {
        Ok(_) => eprintln!("connected after {:?}", started.elapsed()),
        Err(e) => eprintln!("failed after {:?}: {e}", started.elapsed()),
    }
    result
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("writing a test file");
}

const SOME_KEY: &str = "AQBzbWZnAAAAABAAbnJ4dGVzdGtleXRlc3RrZXl0ZQ==";

#[tokio::test]
async fn missing_ceph_conf_is_named() {
    let err = connect_within(
        RadosConfig::from_ceph_conf("/nonexistent/rbdx/ceph.conf"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        err.to_string().contains("/nonexistent/rbdx/ceph.conf"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_monitors_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, keyring) = (dir.path().join("ceph.conf"), dir.path().join("keyring"));
    write(&keyring, &format!("[client.admin]\n\tkey = {SOME_KEY}\n"));
    // Port 9 (discard) on loopback: nothing listens there.
    write(
        &conf,
        &format!(
            "[global]\nmon host = 127.0.0.1:9\nkeyring = {}\nlog file = /dev/null\n",
            keyring.display()
        ),
    );
    let config = RadosConfig::from_ceph_conf(&conf).with_connect_timeout(Duration::from_secs(2));
    let err = connect_within(config, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("monitor"), "{err}");
}

#[tokio::test]
async fn wrong_key_is_refused() {
    let Some(real) = common::ceph_conf() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring");
    write(&keyring, &format!("[client.admin]\n\tkey = {SOME_KEY}\n"));
    let config = RadosConfig::from_ceph_conf(real).with_keyring(&keyring);
    let err = connect_within(config, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("client.admin"), "{err}");
}

#[tokio::test]
async fn unknown_user_is_named() {
    let Some(real) = common::ceph_conf() else {
        return;
    };
    let config = RadosConfig::from_ceph_conf(real).with_id("nobody-here");
    let err = connect_within(config, Duration::from_secs(30))
        .await
        .unwrap_err();
    // A keyring that holds keys for several users lets the monitor refuse the unknown one
    // (permission denied); a keyring with only other users' keys fails before that (not
    // found). Both are right answers for a correctly configured cluster; either names the user.
    assert!(
        matches!(
            err.kind(),
            ErrorKind::PermissionDenied | ErrorKind::NotFound
        ),
        "{err}"
    );
    assert!(err.to_string().contains("client.nobody-here"), "{err}");
}

#[tokio::test]
async fn missing_pool_is_named() {
    let Some(real) = common::ceph_conf() else {
        return;
    };
    let store = connect_within(RadosConfig::from_ceph_conf(real), Duration::from_secs(30))
        .await
        .expect("connecting to the test cluster");
    let err = store.pool_lookup("rbdx-no-such-pool").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.subject(), &Subject::Pool("rbdx-no-such-pool".into()));
    let missing = PoolId(i64::MAX as u64 - 7);
    let err = store.stat(&IoCtx::new(missing), "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.subject(), &Subject::PoolId(missing));
}
