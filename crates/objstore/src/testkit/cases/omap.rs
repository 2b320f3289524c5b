//! Omap, xattrs and object listing.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::TryStreamExt;

use crate::testkit::{Fixture, Harness, fails, ok};
use crate::{ErrorKind, IoCtx, ListOptions, ObjectStoreExt, ReadOp, SnapContext, Subject, WriteOp};

fn keys(entries: &[(String, Bytes)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

/// Omap entries are set, read by key and by range (`start_after`, prefix, max, `more`),
/// removed and cleared; reads report the version they saw.
pub async fn omap_set_get_range_remove_clear(h: &dyn Harness) {
    let fx = Fixture::new(h, "omap").await;
    let (s, io) = (&fx.store, &fx.io);
    let snapc = SnapContext::empty();
    let mut pairs: Vec<(String, Bytes)> = (0..30)
        .map(|i| (format!("k{i:02}"), Bytes::from(format!("v{i}"))))
        .collect();
    pairs.push(("other1".to_owned(), Bytes::from_static(b"\0binary\xff")));
    let version = ok(s
        .operate(io, "o", &WriteOp::new().omap_set(pairs), &snapc)
        .await);

    let by_keys = ok(s
        .omap_get_by_keys(io, "o", &["k01", "k05", "missing", "other1"])
        .await);
    assert_eq!(
        by_keys.keys().map(String::as_str).collect::<Vec<_>>(),
        ["k01", "k05", "other1"]
    );
    assert_eq!(by_keys["other1"], &b"\0binary\xff"[..]);

    let mut read = ok(s
        .read_op(io, "o", &ReadOp::new().omap_get_vals(None, "", 10), None)
        .await);
    assert_eq!(read.version, version);
    let (page, more) = read.take_omap_vals(0).unwrap_or_default();
    assert_eq!(
        keys(&page),
        (0..10).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
    );
    assert!(more);
    let op = ReadOp::new().omap_get_vals(Some("k09"), "", 10);
    let (page, _) = ok(s.read_op(io, "o", &op, None).await)
        .take_omap_vals(0)
        .unwrap_or_default();
    assert_eq!(page.first().map(|(k, _)| k.as_str()), Some("k10"));
    let op = ReadOp::new().omap_get_vals(None, "k1", 0);
    let (page, more) = ok(s.read_op(io, "o", &op, None).await)
        .take_omap_vals(0)
        .unwrap_or_default();
    assert_eq!(
        keys(&page),
        (10..20).map(|i| format!("k{i}")).collect::<Vec<_>>()
    );
    assert!(!more);
    let op = ReadOp::new().omap_get_vals(Some("k25"), "k", 100);
    let (page, more) = ok(s.read_op(io, "o", &op, None).await)
        .take_omap_vals(0)
        .unwrap_or_default();
    assert_eq!(keys(&page), ["k26", "k27", "k28", "k29"]);
    assert!(!more);
    assert_eq!(ok(s.omap_get_all(io, "o").await).len(), 31);

    ok(s.operate(
        io,
        "o",
        &WriteOp::new().omap_remove(["k00", "missing"]),
        &snapc,
    )
    .await);
    assert!(ok(s.omap_get_by_keys(io, "o", &["k00"]).await).is_empty());
    ok(s.operate(io, "o", &WriteOp::new().omap_clear(), &snapc)
        .await);
    assert!(ok(s.omap_get_all(io, "o").await).is_empty());
    assert!(
        ok(s.exists(io, "o").await),
        "clearing the omap keeps the object"
    );
    fails(s.omap_get_all(io, "absent").await, ErrorKind::NotFound);
    fx.cleanup().await;
}

/// Xattrs are set (binary values), read one by one and all together, and removed.
pub async fn xattrs_set_get_remove(h: &dyn Harness) {
    let fx = Fixture::new(h, "xattr").await;
    let (s, io) = (&fx.store, &fx.io);
    let snapc = SnapContext::empty();
    let op = WriteOp::new()
        .xattr_set("a", &b"\0\x01"[..])
        .xattr_set("b", &b"two"[..]);
    ok(s.operate(io, "o", &op, &snapc).await);
    let mut read = ok(s
        .read_op(io, "o", &ReadOp::new().get_xattr("a"), None)
        .await);
    assert_eq!(read.take_data(0).unwrap_or_default(), &b"\0\x01"[..]);
    let all = ok(s.xattrs(io, "o").await);
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"]
    );
    ok(
        s.operate(io, "o", &WriteOp::new().xattr_remove("a"), &snapc)
            .await,
    );
    let err = fails(
        s.read_op(io, "o", &ReadOp::new().get_xattr("a"), None)
            .await,
        ErrorKind::NotFound,
    );
    assert_eq!(
        err.subject(),
        &Subject::Xattr {
            oid: "o".into(),
            name: "a".into()
        }
    );
    ok(
        s.operate(io, "o", &WriteOp::new().xattr_remove("a"), &snapc)
            .await,
    );
    assert_eq!(ok(s.xattrs(io, "o").await).len(), 1);
    fails(
        s.operate(io, "absent", &WriteOp::new().xattr_remove("a"), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fx.cleanup().await;
}

/// Listing returns every existing object of the namespace exactly once across pages, honours
/// prefixes, and leaves out removed objects and other namespaces.
pub async fn listing_pages_prefixes_and_namespaces(h: &dyn Harness) {
    let fx = Fixture::new(h, "list").await;
    let (s, io) = (&fx.store, &fx.io);
    let mut expect = BTreeSet::new();
    for i in 0..25 {
        let name = format!("obj.{i:02}");
        ok(s.write_full(io, &name, Bytes::from_static(b"x")).await);
        expect.insert(name);
    }
    for i in 0..5 {
        ok(
            s.write_full(io, &format!("other.{i}"), Bytes::from_static(b"y"))
                .await,
        );
    }
    ok(s.write_full(io, "gone", Bytes::from_static(b"z")).await);
    ok(s.remove(io, "gone").await);
    let ns = IoCtx::with_namespace(fx.pool, "hidden");
    ok(s.namespace_create(&ns).await);
    ok(s.write_full(&ns, "obj.99", Bytes::from_static(b"n")).await);

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let opts = ListOptions::default()
            .with_prefix("obj.")
            .with_cursor(cursor)
            .with_max(7);
        let page = ok(s.list_objects_opts(io, &opts).await);
        assert!(page.names.len() <= 7);
        seen.extend(page.names);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no name listed twice");
    assert_eq!(unique, expect);

    let all: BTreeSet<String> = ok(s.list_objects(io, "").try_collect().await);
    assert_eq!(all.len(), 30);
    assert!(!all.contains("gone"));
    let in_ns: Vec<String> = ok(s.list_objects(&ns, "").try_collect().await);
    assert_eq!(in_ns, vec!["obj.99".to_owned()]);
    let others: Vec<String> = ok(s.list_objects(io, "other.").try_collect().await);
    assert_eq!(others.len(), 5);
    ok(s.remove(&ns, "obj.99").await);
    fx.cleanup().await;
}
