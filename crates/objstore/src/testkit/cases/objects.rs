//! Object data: writes, reads, sizes, holes, assertions and bad input.

use bytes::Bytes;

use crate::testkit::{Fixture, Harness, fails, ok};
use crate::{
    CmpOp, ErrorKind, ExtentSet, IoCtx, ObjectStoreExt, PoolId, ReadOp, SnapContext, SnapId,
    Subject, WriteOp, digest, limits,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Writes extend objects, reads return what was written (short at the end), versions grow,
/// and removed objects are gone.
pub async fn objects_write_read_stat_remove(h: &dyn Harness) {
    let fx = Fixture::new(h, "rw").await;
    let (s, io) = (&fx.store, &fx.io);
    let v1 = ok(s.write(io, "o", 0, Bytes::from_static(b"hello")).await);
    assert_eq!(ok(s.read(io, "o", 0, None).await), "hello");
    let stat = ok(s.stat(io, "o").await);
    assert_eq!((stat.size, stat.version), (5, v1));

    let v2 = ok(s.write(io, "o", 10, Bytes::from_static(b"x")).await);
    assert!(v2 > v1);
    assert_eq!(ok(s.read(io, "o", 0, None).await), &b"hello\0\0\0\0\0x"[..]);
    assert_eq!(ok(s.stat(io, "o").await).size, 11);
    assert_eq!(ok(s.read(io, "o", 3, Some(4)).await), &b"lo\0\0"[..]);
    assert_eq!(ok(s.read(io, "o", 9, Some(100)).await), &b"\0x"[..]);
    assert!(ok(s.read(io, "o", 50, Some(10)).await).is_empty());

    ok(s.remove(io, "o").await);
    let err = fails(s.read(io, "o", 0, None).await, ErrorKind::NotFound);
    assert_eq!(err.subject(), &io.object_subject("o"));
    fails(s.stat(io, "o").await, ErrorKind::NotFound);
    fails(s.remove(io, "o").await, ErrorKind::NotFound);
    assert!(!ok(s.exists(io, "o").await));

    let v3 = ok(s.write(io, "o", 0, Bytes::from_static(b"again")).await);
    assert!(v3 > v2, "a recreated object never shows an old version");
    fx.cleanup().await;
}

/// Write-full replaces, truncate shrinks and grows with zeros, zero is clipped to the size and
/// does nothing on an absent object, as does truncate.
pub async fn objects_write_full_truncate_zero(h: &dyn Harness) {
    let fx = Fixture::new(h, "trunc").await;
    let (s, io) = (&fx.store, &fx.io);
    let snapc = SnapContext::empty();
    let data = pattern(8192, 3);
    ok(s.write_full(io, "o", Bytes::from(data.clone())).await);
    ok(s.operate(io, "o", &WriteOp::new().truncate(5000), &snapc)
        .await);
    assert_eq!(ok(s.read(io, "o", 0, None).await), &data[..5000]);
    ok(s.operate(io, "o", &WriteOp::new().truncate(10000), &snapc)
        .await);
    let mut expect = data[..5000].to_vec();
    expect.resize(10000, 0);
    assert_eq!(ok(s.read(io, "o", 0, None).await), expect);

    ok(s.operate(io, "o", &WriteOp::new().zero(100, 200), &snapc)
        .await);
    expect[100..300].fill(0);
    ok(s.operate(io, "o", &WriteOp::new().zero(9000, 500), &snapc)
        .await);
    expect[9000..9500].fill(0);
    assert_eq!(ok(s.stat(io, "o").await).size, 10000);
    ok(s.operate(io, "o", &WriteOp::new().zero(12000, 100), &snapc)
        .await);
    assert_eq!(ok(s.stat(io, "o").await).size, 10000, "zero never extends");
    ok(s.operate(io, "o", &WriteOp::new().zero(9800, 200), &snapc)
        .await);
    ok(s.operate(io, "o", &WriteOp::new().zero(9700, 5000), &snapc)
        .await);
    expect.truncate(9700);
    assert_eq!(
        ok(s.stat(io, "o").await).size,
        9700,
        "a zero reaching the end truncates"
    );
    assert_eq!(ok(s.read(io, "o", 0, None).await), expect);

    ok(s.write_full(io, "o", Bytes::from_static(b"short")).await);
    assert_eq!(ok(s.read(io, "o", 0, None).await), "short");
    ok(s.write_full(io, "o", Bytes::new()).await);
    assert_eq!(ok(s.stat(io, "o").await).size, 0);

    ok(s.operate(io, "absent", &WriteOp::new().zero(0, 10), &snapc)
        .await);
    ok(
        s.operate(io, "absent", &WriteOp::new().truncate(10), &snapc)
            .await,
    );
    assert!(
        !ok(s.exists(io, "absent").await),
        "zero and truncate do not create"
    );
    fx.cleanup().await;
}

/// Sparse reads report the allocated extents: every written byte is inside them, with its
/// data, and everything outside them reads as zeros. Extents may include zeros; a backend that
/// claims [`reports_holes`](crate::testkit::Capabilities::reports_holes) leaves far-away holes
/// out.
pub async fn objects_sparse_read_reports_allocated_extents(h: &dyn Harness) {
    let fx = Fixture::new(h, "sparse").await;
    let (s, io) = (&fx.store, &fx.io);
    let a = pattern(4096, 1);
    let b = pattern(4096, 2);
    ok(s.write(io, "o", 0, Bytes::from(a.clone())).await);
    ok(s.write(io, "o", 1 << 20, Bytes::from(b.clone())).await);
    let full = ok(s.read(io, "o", 0, None).await);
    let extents = ok(s.sparse_read(io, "o", 0, None, None).await);
    let mut covered = ExtentSet::new();
    for (offset, bytes) in &extents {
        assert_eq!(
            &bytes[..],
            &full[*offset as usize..*offset as usize + bytes.len()]
        );
        covered.insert(*offset, bytes.len() as u64);
    }
    assert!(covered.contains_range(0, 4096) && covered.contains_range(1 << 20, 4096));
    if h.capabilities().reports_holes {
        assert!(
            covered.total() <= 256 << 10,
            "holes are not reported: {extents:?}"
        );
    }
    let mut outside = ExtentSet::from_range(0, full.len() as u64);
    for e in covered.extents() {
        outside.subtract(e.offset, e.length);
    }
    for e in outside.extents() {
        let range = &full[e.offset as usize..e.end() as usize];
        assert!(range.iter().all(|b| *b == 0), "holes read as zeros");
    }

    let tail = ok(s
        .sparse_read(io, "o", (1 << 20) + 100, Some(50), None)
        .await);
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].0, (1 << 20) + 100);
    assert_eq!(&tail[0].1[..], &b[100..150]);

    ok(s.operate(
        io,
        "o",
        &WriteOp::new().zero(1 << 20, 4096),
        &SnapContext::empty(),
    )
    .await);
    let after = ok(s.sparse_read(io, "o", 1 << 20, None, None).await);
    assert!(
        after.iter().all(|(_, d)| d.iter().all(|b| *b == 0)),
        "zeroed range holds no data"
    );
    fx.cleanup().await;
}

/// Extent reads answer where a sparse read of the same range finds data, without the bytes:
/// the same extents, at a snapshot too, `NotFound` when the object is absent.
pub async fn objects_extents_match_sparse_read(h: &dyn Harness) {
    let fx = Fixture::new(h, "extents").await;
    let (s, io) = (&fx.store, &fx.io);
    let extents = async |snap: Option<SnapId>, offset: u64, length: Option<u64>| {
        let mut res = ok(s
            .read_op(io, "o", &ReadOp::new().extents(offset, length), snap)
            .await);
        res.take_extents(0).unwrap_or_default()
    };
    let sparse = async |snap: Option<SnapId>, offset: u64, length: Option<u64>| {
        let found = ok(s.sparse_read(io, "o", offset, length, snap).await);
        found
            .iter()
            .map(|(o, d)| (*o, d.len() as u64))
            .collect::<Vec<_>>()
    };
    ok(s.write(io, "o", 8192, Bytes::from(pattern(4096, 5))).await);
    ok(s.write(io, "o", 2 << 20, Bytes::from(pattern(65_536, 6)))
        .await);
    let whole = extents(None, 0, None).await;
    assert_eq!(whole, sparse(None, 0, None).await);
    let mut covered = ExtentSet::new();
    for (offset, length) in &whole {
        covered.insert(*offset, *length);
    }
    assert!(covered.contains_range(8192, 4096) && covered.contains_range(2 << 20, 65_536));
    if h.capabilities().reports_holes {
        assert!(
            covered.total() <= 512 << 10,
            "holes are left out: {whole:?}"
        );
    }
    let part = extents(None, (2 << 20) + 100, Some(1000)).await;
    assert_eq!(part, vec![((2 << 20) + 100, 1000)]);
    let snap = ok(s.snap_create(fx.pool).await);
    let snapc = SnapContext::from_snaps([snap]);
    ok(s.operate(
        io,
        "o",
        &WriteOp::new().write(1 << 20, Bytes::from(pattern(4096, 7))),
        &snapc,
    )
    .await);
    assert_eq!(extents(Some(snap), 0, None).await, whole);
    let head = extents(None, 0, None).await;
    assert_eq!(head, sparse(None, 0, None).await);
    let mut covered = ExtentSet::new();
    for (offset, length) in &head {
        covered.insert(*offset, *length);
    }
    assert!(
        covered.contains_range(1 << 20, 4096),
        "a new write is found: {head:?}"
    );
    fails(
        s.read_op(io, "absent", &ReadOp::new().extents(0, None), None)
            .await,
        ErrorKind::NotFound,
    );
    fx.cleanup().await;
}

/// Checksums digest each chunk where the data lies: equal to the digests of the bytes a read
/// returns, zeros past the end, the version asked for at a snapshot, `NotFound` when absent.
pub async fn objects_checksum_digests_chunks(h: &dyn Harness) {
    let fx = Fixture::new(h, "checksum").await;
    let (s, io) = (&fx.store, &fx.io);
    let digests = async |snap: Option<SnapId>, offset: u64, length: u64, chunk: u64| {
        let mut res = ok(s
            .read_op(
                io,
                "o",
                &ReadOp::new().checksum(offset, length, chunk),
                snap,
            )
            .await);
        res.take_checksums(0).unwrap_or_default()
    };
    let a = pattern(100_000, 3);
    ok(s.write(io, "o", 0, Bytes::from(a.clone())).await);
    let expected = digest::chunk_digests(&a, 131_072, 16_384);
    assert_eq!(expected.len(), 8);
    assert_eq!(digests(None, 0, 131_072, 16_384).await, expected);
    assert_eq!(
        digests(None, 16_384, 32_768, 16_384).await,
        expected[1..3].to_vec()
    );
    assert_eq!(
        digests(None, 1 << 20, 8192, 4096).await,
        digest::zero_digests(8192, 4096),
        "bytes past the end digest as zeros"
    );
    // A hole inside the object digests as the zeros a read returns there.
    ok(s.write(io, "o", 600_000, Bytes::from(pattern(5000, 4)))
        .await);
    let full = ok(s.read(io, "o", 0, None).await);
    assert_eq!(
        digests(None, 0, 1 << 20, 65_536).await,
        digest::chunk_digests(&full, 1 << 20, 65_536)
    );
    ok(s.operate(
        io,
        "o",
        &WriteOp::new().truncate(100_000),
        &SnapContext::empty(),
    )
    .await);
    let snap = ok(s.snap_create(fx.pool).await);
    let snapc = SnapContext::from_snaps([snap]);
    ok(s.operate(
        io,
        "o",
        &WriteOp::new().write(0, Bytes::from_static(b"changed")),
        &snapc,
    )
    .await);
    assert_ne!(digests(None, 0, 131_072, 16_384).await[0], expected[0]);
    assert_eq!(digests(Some(snap), 0, 131_072, 16_384).await, expected);
    fails(
        s.read_op(io, "absent", &ReadOp::new().checksum(0, 4096, 4096), None)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.read_op(io, "o", &ReadOp::new().checksum(0, 4096, 0), None)
            .await,
        ErrorKind::InvalidArgument,
    );
    fx.cleanup().await;
}

/// Assertions and comparisons guard a batch: when one fails, no step of the batch applies.
pub async fn objects_assertions_guard_batches(h: &dyn Harness) {
    let fx = Fixture::new(h, "assert").await;
    let (s, io) = (&fx.store, &fx.io);
    let snapc = SnapContext::empty();
    ok(s.operate(io, "o", &WriteOp::new().create(true), &snapc)
        .await);
    fails(
        s.operate(io, "o", &WriteOp::new().create(true), &snapc)
            .await,
        ErrorKind::AlreadyExists,
    );
    ok(s.operate(io, "o", &WriteOp::new().create(false), &snapc)
        .await);
    fails(
        s.operate(io, "none", &WriteOp::new().assert_exists(), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.operate(
            io,
            "none",
            &WriteOp::new().assert_exists().write(0, &b"x"[..]),
            &snapc,
        )
        .await,
        ErrorKind::NotFound,
    );
    assert!(!ok(s.exists(io, "none").await));

    let v = ok(s.write(io, "o", 0, Bytes::from_static(b"base")).await);
    let op = WriteOp::new()
        .write(0, &b"new!"[..])
        .omap_set([("k", "v")])
        .assert_version(v + 100);
    let err = fails(
        s.operate(io, "o", &op, &snapc).await,
        ErrorKind::VersionMismatch,
    );
    assert_eq!(err.subject(), &io.object_subject("o"));
    assert_eq!(ok(s.read(io, "o", 0, None).await), "base");
    assert!(ok(s.omap_get_all(io, "o").await).is_empty());
    assert_eq!(ok(s.stat(io, "o").await).version, v);
    let v2 = ok(s
        .operate(
            io,
            "o",
            &WriteOp::new().assert_version(v).write(0, &b"next"[..]),
            &snapc,
        )
        .await);
    assert!(v2 > v);

    ok(
        s.operate(io, "o", &WriteOp::new().xattr_set("a", &b"1"[..]), &snapc)
            .await,
    );
    let op = WriteOp::new()
        .cmp_xattr("a", CmpOp::Eq, &b"2"[..])
        .write(0, &b"XXXX"[..]);
    fails(
        s.operate(io, "o", &op, &snapc).await,
        ErrorKind::ComparisonFailed,
    );
    let op = WriteOp::new()
        .cmp_xattr("a", CmpOp::Eq, &b"1"[..])
        .write(0, &b"cmp1"[..]);
    ok(s.operate(io, "o", &op, &snapc).await);
    let op = WriteOp::new()
        .cmp_xattr("missing", CmpOp::Eq, Bytes::new())
        .cmp_xattr("a", CmpOp::Lt, &b"2"[..]);
    ok(s.operate(io, "o", &op, &snapc).await);

    let op = WriteOp::new()
        .cmp_ext(0, &b"cmp1"[..])
        .write(0, &b"ext1"[..]);
    ok(s.operate(io, "o", &op, &snapc).await);
    let op = WriteOp::new()
        .cmp_ext(0, &b"nope"[..])
        .write(0, &b"ext2"[..]);
    fails(
        s.operate(io, "o", &op, &snapc).await,
        ErrorKind::ComparisonFailed,
    );
    let op = WriteOp::new().cmp_ext(2, &b"t1\0\0"[..]);
    ok(s.operate(io, "o", &op, &snapc).await);
    assert_eq!(ok(s.read(io, "o", 0, None).await), "ext1");

    let before = ok(s.stat(io, "o").await).version;
    let same = ok(s
        .operate(io, "o", &WriteOp::new().assert_exists(), &snapc)
        .await);
    assert_eq!(
        same, before,
        "a batch that changes nothing keeps the version"
    );
    fx.cleanup().await;
}

/// Bad names, sizes, pools and snapshot contexts are typed errors and change nothing; steps
/// that need an existing object fail on an absent one.
pub async fn objects_reject_bad_input(h: &dyn Harness) {
    let fx = Fixture::new(h, "bad").await;
    let (s, io) = (&fx.store, &fx.io);
    let snapc = SnapContext::empty();
    let data = Bytes::from_static(b"x");
    fails(
        s.write_full(io, "", data.clone()).await,
        ErrorKind::InvalidArgument,
    );
    let long = "o".repeat(limits::MAX_OBJECT_NAME + 1);
    fails(
        s.write_full(io, &long, data.clone()).await,
        ErrorKind::InvalidArgument,
    );
    fails(
        s.write(io, "o", limits::MAX_OBJECT_SIZE, data.clone())
            .await,
        ErrorKind::InvalidArgument,
    );
    let op = WriteOp::new().truncate(limits::MAX_OBJECT_SIZE + 1);
    fails(
        s.operate(io, "o", &op, &snapc).await,
        ErrorKind::InvalidArgument,
    );
    let op = WriteOp::new().xattr_set("n".repeat(limits::MAX_XATTR_NAME + 1), data.clone());
    fails(
        s.operate(io, "o", &op, &snapc).await,
        ErrorKind::InvalidArgument,
    );
    let bad_snapc = SnapContext {
        seq: 1,
        snaps: vec![SnapId(1), SnapId(2)],
    };
    fails(
        s.operate(io, "o", &WriteOp::new().write(0, data.clone()), &bad_snapc)
            .await,
        ErrorKind::InvalidArgument,
    );
    let unknown = IoCtx::new(PoolId(u64::MAX / 2));
    let err = fails(
        s.write_full(&unknown, "o", data.clone()).await,
        ErrorKind::NotFound,
    );
    assert_eq!(err.subject(), &Subject::PoolId(PoolId(u64::MAX / 2)));
    assert!(
        !ok(s.exists(io, "o").await),
        "nothing was created by refused batches"
    );

    fails(
        s.operate(io, "o", &WriteOp::new().omap_remove(["k"]), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.operate(io, "o", &WriteOp::new().omap_clear(), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.operate(io, "o", &WriteOp::new().xattr_remove("a"), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.operate(io, "o", &WriteOp::new().remove(), &snapc).await,
        ErrorKind::NotFound,
    );
    assert!(!ok(s.exists(io, "o").await));

    ok(s.write_full(io, "o", data.clone()).await);
    ok(s.remove(io, "o").await);
    fails(
        s.operate(io, "o", &WriteOp::new().xattr_remove("a"), &snapc)
            .await,
        ErrorKind::NotFound,
    );
    fails(
        s.omap_get_by_keys(io, "o", &["k"]).await,
        ErrorKind::NotFound,
    );
    fx.cleanup().await;
}

/// Large, unaligned and overlapping writes land exactly, including whole-object rewrites.
pub async fn objects_large_and_unaligned_writes(h: &dyn Harness) {
    let fx = Fixture::new(h, "large").await;
    let (s, io) = (&fx.store, &fx.io);
    let mut expect = pattern(4 << 20, 9);
    ok(s.write_full(io, "o", Bytes::from(expect.clone())).await);
    let patch = pattern(3 << 20, 77);
    ok(s.write(io, "o", 12345, Bytes::from(patch.clone())).await);
    expect[12345..12345 + patch.len()].copy_from_slice(&patch);
    let small = pattern(777, 5);
    ok(
        s.write(io, "o", (4 << 20) - 100, Bytes::from(small.clone()))
            .await,
    );
    expect.resize((4 << 20) + 677, 0);
    expect[(4 << 20) - 100..].copy_from_slice(&small);
    assert_eq!(ok(s.read(io, "o", 0, None).await), expect);
    assert_eq!(
        ok(s.read(io, "o", 4095, Some(3)).await),
        &expect[4095..4098]
    );

    let whole = pattern(4 << 20, 200);
    ok(s.write(io, "o", 0, Bytes::from(whole.clone())).await);
    expect[..whole.len()].copy_from_slice(&whole);
    assert_eq!(ok(s.read(io, "o", 0, None).await), expect);
    fx.cleanup().await;
}
