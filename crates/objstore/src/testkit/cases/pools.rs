//! Pools, namespaces and the config-key store.

use bytes::Bytes;

use crate::testkit::{Fixture, Harness, fails, ok, unique_name};
use crate::{ErrorKind, IoCtx, ObjectStoreExt, PoolId, Subject};

/// Pools can be created, listed, looked up by name and id, and removed; ids are not reused.
pub async fn pools_create_list_lookup_remove(h: &dyn Harness) {
    let store = h.connect().await;
    let name = unique_name("pool");
    let id = ok(store.pool_create(&name).await);
    assert!(
        ok(store.pool_list().await)
            .iter()
            .any(|p| p.id == id && p.name == name)
    );
    assert_eq!(ok(store.pool_lookup(&name).await).id, id);
    assert_eq!(ok(store.pool_by_id(id).await).name, name);
    let err = fails(store.pool_create(&name).await, ErrorKind::AlreadyExists);
    assert_eq!(err.subject(), &Subject::Pool(name.clone()));

    ok(store.pool_remove(&name).await);
    fails(store.pool_lookup(&name).await, ErrorKind::NotFound);
    fails(store.pool_by_id(id).await, ErrorKind::NotFound);
    fails(store.pool_remove(&name).await, ErrorKind::NotFound);
    let err = fails(store.stat(&IoCtx::new(id), "x").await, ErrorKind::NotFound);
    assert_eq!(err.subject(), &Subject::PoolId(id));

    let again = ok(store.pool_create(&name).await);
    assert_ne!(again, id, "pool ids are never reused");
    ok(store.pool_remove(&name).await);
}

/// Empty, over-long, slash-containing and NUL-containing pool names are refused and nothing
/// is created.
pub async fn pools_reject_bad_names(h: &dyn Harness) {
    let store = h.connect().await;
    let before = ok(store.pool_list().await);
    for bad in [
        String::new(),
        "a/b".to_owned(),
        "x".repeat(256),
        "nul\0".to_owned(),
    ] {
        let err = fails(store.pool_create(&bad).await, ErrorKind::InvalidArgument);
        assert_eq!(err.subject(), &Subject::Pool(bad.clone()));
    }
    assert_eq!(ok(store.pool_list().await), before);
    fails(
        store.pool_lookup("no-such-pool-here").await,
        ErrorKind::NotFound,
    );
    fails(
        store.pool_by_id(PoolId(u64::MAX / 2)).await,
        ErrorKind::NotFound,
    );
}

/// Namespaces are created, listed and removed; objects in them are invisible elsewhere; a
/// namespace holding objects cannot be removed; unknown namespaces are typed errors.
pub async fn namespaces_create_list_remove(h: &dyn Harness) {
    let fx = Fixture::new(h, "ns").await;
    let store = &fx.store;
    let ns = IoCtx::with_namespace(fx.pool, "tenant1");
    ok(store.namespace_create(&ns).await);
    fails(store.namespace_create(&ns).await, ErrorKind::AlreadyExists);
    assert_eq!(
        ok(store.namespace_list(fx.pool).await),
        vec!["tenant1".to_owned()]
    );

    ok(store
        .write_full(&ns, "obj", Bytes::from_static(b"in ns"))
        .await);
    assert_eq!(ok(store.read(&ns, "obj", 0, None).await), "in ns");
    let err = fails(
        store.read(&fx.io, "obj", 0, None).await,
        ErrorKind::NotFound,
    );
    assert!(matches!(err.subject(), Subject::Object { .. }));

    let err = fails(store.namespace_remove(&ns).await, ErrorKind::Busy);
    assert_eq!(err.subject(), &ns.namespace_subject());
    ok(store.remove(&ns, "obj").await);
    ok(store.namespace_remove(&ns).await);
    assert!(ok(store.namespace_list(fx.pool).await).is_empty());

    let err = fails(
        store.write_full(&ns, "obj", Bytes::from_static(b"x")).await,
        ErrorKind::NotFound,
    );
    assert_eq!(err.subject(), &ns.namespace_subject());
    let err = fails(store.read(&ns, "obj", 0, None).await, ErrorKind::NotFound);
    assert_eq!(err.subject(), &ns.namespace_subject());
    assert!(
        ok(store.namespace_list(fx.pool).await).is_empty(),
        "a failed write creates nothing"
    );

    let bad = IoCtx::with_namespace(fx.pool, "a/b");
    fails(
        store.namespace_create(&bad).await,
        ErrorKind::InvalidArgument,
    );
    let unknown_pool = IoCtx::with_namespace(PoolId(u64::MAX / 2), "n");
    fails(
        store.namespace_create(&unknown_pool).await,
        ErrorKind::NotFound,
    );
    fx.cleanup().await;
}

/// Config keys are set, read, listed, overwritten and removed.
pub async fn config_keys_set_get_list_remove(h: &dyn Harness) {
    let store = h.connect().await;
    let prefix = unique_name("ck");
    let a = format!("{prefix}/a");
    let b = format!("{prefix}/b");
    ok(store
        .config_key_set(&b, Bytes::from_static(b"secret-b"))
        .await);
    ok(store
        .config_key_set(&a, Bytes::from_static(b"secret-a"))
        .await);
    assert_eq!(ok(store.config_key_get(&a).await), "secret-a");
    let mine: Vec<String> = ok(store.config_key_list().await)
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect();
    assert_eq!(mine, vec![a.clone(), b.clone()]);
    ok(store
        .config_key_set(&a, Bytes::from_static(b"rotated"))
        .await);
    assert_eq!(ok(store.config_key_get(&a).await), "rotated");
    ok(store.config_key_remove(&a).await);
    let err = fails(store.config_key_get(&a).await, ErrorKind::NotFound);
    assert_eq!(err.subject(), &Subject::ConfigKey(a.clone()));
    fails(store.config_key_remove(&a).await, ErrorKind::NotFound);
    fails(
        store.config_key_set("", Bytes::new()).await,
        ErrorKind::InvalidArgument,
    );
    let huge = Bytes::from(vec![0u8; crate::limits::MAX_CONFIG_VALUE + 1]);
    fails(
        store.config_key_set(&b, huge).await,
        ErrorKind::InvalidArgument,
    );
    assert_eq!(ok(store.config_key_get(&b).await), "secret-b");
    ok(store.config_key_remove(&b).await);
}
