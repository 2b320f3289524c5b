//! Self-managed snapshots: clones, reads at snapshots, exact overlaps, trimming.

use bytes::Bytes;

use crate::testkit::model::ObjectImage;
use crate::testkit::{Fixture, Harness, eventually, fails, ok};
use crate::{
    ErrorKind, Extent, IoCtx, ObjectStore, ObjectStoreExt, PoolId, ReadOp, SnapContext, SnapId,
    SnapSet, Subject, WriteOp,
};

fn filled(len: usize, byte: u8) -> Vec<u8> {
    vec![byte; len]
}

/// Waits, within the backend's trim grace, until trimming left `oid` with `clones` clones;
/// returns its snapshot set.
async fn trimmed_to(
    h: &dyn Harness,
    s: &dyn ObjectStore,
    io: &IoCtx,
    oid: &str,
    clones: usize,
) -> SnapSet {
    let grace = h.capabilities().snap_trim_grace;
    let mut last = ok(s.list_snaps(io, oid).await);
    eventually(
        grace,
        &format!("clones of '{oid}' not trimmed"),
        async || {
            last = ok(s.list_snaps(io, oid).await);
            last.clones.len() == clones
        },
    )
    .await;
    last
}

/// Waits, within the backend's trim grace, until trimming removed what was left of `oid`.
async fn trimmed_away(h: &dyn Harness, s: &dyn ObjectStore, io: &IoCtx, oid: &str) {
    let grace = h.capabilities().snap_trim_grace;
    eventually(
        grace,
        &format!("'{oid}' not trimmed away"),
        async || match s.list_snaps(io, oid).await {
            Ok(_) => false,
            Err(e) if e.kind() == ErrorKind::NotFound => true,
            Err(e) => panic!("list_snaps: {e}"),
        },
    )
    .await;
}

async fn data_at(s: &dyn ObjectStore, io: &IoCtx, oid: &str, snap: SnapId) -> Vec<u8> {
    ok(s.read_at(io, oid, 0, None, Some(snap)).await).to_vec()
}

/// Every snapshot keeps the content (data and omap) the object had when it was taken, through
/// partial writes, truncation, removal and recreation; objects created later are absent at it.
pub async fn snapshots_preserve_content_at_each_snap(h: &dyn Harness) {
    let fx = Fixture::new(h, "snap").await;
    let (s, io) = (&*fx.store, &fx.io);
    let first = WriteOp::new()
        .write_full(filled(16384, b'a'))
        .omap_set([("k", "1")]);
    ok(s.operate(io, "o", &first, &SnapContext::empty()).await);

    let s1 = ok(s.snap_create(fx.pool).await);
    let c1 = SnapContext::from_snaps([s1]);
    let op = WriteOp::new()
        .write(4096, filled(4096, b'b'))
        .omap_set([("k", "2")]);
    ok(s.operate(io, "o", &op, &c1).await);
    ok(s.operate(io, "o", &WriteOp::new().write(0, &b"A"[..]), &c1)
        .await);
    let mut after1 = filled(16384, b'a');
    after1[4096..8192].fill(b'b');
    after1[0] = b'A';

    let s2 = ok(s.snap_create(fx.pool).await);
    assert!(s2 > s1);
    let c2 = SnapContext::from_snaps([s2, s1]);
    ok(s.operate(io, "o", &WriteOp::new().truncate(10240), &c2)
        .await);
    ok(s.operate(
        io,
        "o",
        &WriteOp::new().write(12288, filled(2048, b'c')),
        &c2,
    )
    .await);
    ok(
        s.operate(io, "late", &WriteOp::new().write_full(&b"late"[..]), &c2)
            .await,
    );
    let mut after2 = after1[..10240].to_vec();
    after2.resize(12288, 0);
    after2.extend(filled(2048, b'c'));

    let s3 = ok(s.snap_create(fx.pool).await);
    let c3 = SnapContext::from_snaps([s3, s2, s1]);
    ok(s.operate(io, "o", &WriteOp::new().remove(), &c3).await);
    let s4 = ok(s.snap_create(fx.pool).await);
    let c4 = SnapContext::from_snaps([s4, s3, s2, s1]);
    ok(
        s.operate(io, "o", &WriteOp::new().write_full(filled(3000, b'd')), &c4)
            .await,
    );
    ok(s.operate(io, "o", &WriteOp::new().write(0, &b"D"[..]), &c4)
        .await);

    assert_eq!(data_at(s, io, "o", s1).await, filled(16384, b'a'));
    assert_eq!(data_at(s, io, "o", s2).await, after1);
    assert_eq!(data_at(s, io, "o", s3).await, after2);
    let err = fails(
        s.read_at(io, "o", 0, None, Some(s4)).await,
        ErrorKind::NotFound,
    );
    assert_eq!(err.subject(), &io.object_subject("o"));
    let mut head = filled(3000, b'd');
    head[0] = b'D';
    assert_eq!(ok(s.read(io, "o", 0, None).await), head);

    let at_s1 = ok(ObjectImage::load(s, io, "o", Some(s1)).await);
    assert_eq!(at_s1.omap.get("k").map(|v| &v[..]), Some(&b"1"[..]));
    let at_s2 = ok(ObjectImage::load(s, io, "o", Some(s2)).await);
    assert_eq!(at_s2.omap.get("k").map(|v| &v[..]), Some(&b"2"[..]));
    let stat = ok(s.read_op(io, "o", &ReadOp::new().stat(), Some(s3)).await);
    assert_eq!(stat.stat(0).map(|st| st.size), Some(14336));

    fails(
        s.read_at(io, "late", 0, None, Some(s1)).await,
        ErrorKind::NotFound,
    );
    fails(
        s.read_at(io, "late", 0, None, Some(s2)).await,
        ErrorKind::NotFound,
    );
    assert_eq!(data_at(s, io, "late", s3).await, b"late");

    let set = ok(s.list_snaps(io, "o").await);
    assert_eq!(set.seq, s4.0);
    assert_eq!(set.head_size, Some(3000));
    let ids: Vec<SnapId> = set.clones.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        vec![s1, s2, s3],
        "one clone per snapshot interval with writes"
    );
    let snaps: Vec<Vec<SnapId>> = set.clones.iter().map(|c| c.snaps.clone()).collect();
    assert_eq!(snaps, vec![vec![s1], vec![s2], vec![s3]]);
    let sizes: Vec<u64> = set.clones.iter().map(|c| c.size).collect();
    assert_eq!(sizes, vec![16384, 16384, 14336]);
    fx.cleanup().await;
}

/// Clone overlaps are exactly the ranges a later write did not touch, and bytes inside an
/// overlap are equal in the clone and the next newer version.
pub async fn snapshots_overlaps_are_exact(h: &dyn Harness) {
    let fx = Fixture::new(h, "overlap").await;
    let (s, io) = (&*fx.store, &fx.io);
    let base: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 + 1).collect();
    ok(s.write_full(io, "o", Bytes::from(base)).await);
    let s1 = ok(s.snap_create(fx.pool).await);
    let c1 = SnapContext::from_snaps([s1]);
    ok(s.operate(
        io,
        "o",
        &WriteOp::new()
            .write(1000, filled(3000, 7))
            .zero(20000, 10000),
        &c1,
    )
    .await);
    let s2 = ok(s.snap_create(fx.pool).await);
    let c2 = SnapContext::from_snaps([s2, s1]);
    ok(s.operate(io, "o", &WriteOp::new().truncate(50000), &c2)
        .await);
    ok(
        s.operate(io, "o", &WriteOp::new().write(60000, filled(10000, 9)), &c2)
            .await,
    );
    let s3 = ok(s.snap_create(fx.pool).await);
    let c3 = SnapContext::from_snaps([s3, s2, s1]);
    ok(
        s.operate(io, "o", &WriteOp::new().write(0, filled(10, 3)), &c3)
            .await,
    );

    let set = ok(s.list_snaps(io, "o").await);
    let overlaps: Vec<Vec<Extent>> = set.clones.iter().map(|c| c.overlap.clone()).collect();
    assert_eq!(
        overlaps,
        vec![
            vec![
                Extent::new(0, 1000),
                Extent::new(4000, 16000),
                Extent::new(30000, 35536)
            ],
            vec![Extent::new(0, 50000)],
            vec![Extent::new(10, 69990)],
        ]
    );
    let versions = [
        data_at(s, io, "o", s1).await,
        data_at(s, io, "o", s2).await,
        data_at(s, io, "o", s3).await,
        ok(s.read(io, "o", 0, None).await).to_vec(),
    ];
    for (index, clone) in set.clones.iter().enumerate() {
        for e in &clone.overlap {
            let range = e.offset as usize..e.end() as usize;
            assert_eq!(versions[index][range.clone()], versions[index + 1][range]);
        }
    }
    fx.cleanup().await;
}

/// Removing a snapshot drops clones that serve no other snapshot, folds overlaps into the
/// next older clone, keeps other snapshots readable, and forgets objects left with nothing;
/// removing it again succeeds, an id never allocated does not.
pub async fn snapshots_removal_trims_clones(h: &dyn Harness) {
    let fx = Fixture::new(h, "trim").await;
    let (s, io) = (&*fx.store, &fx.io);
    let mut live: Vec<SnapId> = Vec::new();
    let take = async |live: &mut Vec<SnapId>| {
        let snap = ok(s.snap_create(fx.pool).await);
        live.push(snap);
        (snap, SnapContext::from_snaps(live.clone()))
    };

    ok(s.write_full(io, "x", Bytes::from(filled(8192, b'a'))).await);
    let (s1, c) = take(&mut live).await;
    ok(
        s.operate(io, "x", &WriteOp::new().write(0, filled(4096, b'b')), &c)
            .await,
    );
    let (s2, c) = take(&mut live).await;
    ok(
        s.operate(io, "x", &WriteOp::new().write(4096, filled(4096, b'c')), &c)
            .await,
    );
    ok(s.snap_remove(fx.pool, s1).await);
    live.retain(|x| *x != s1);
    let set = trimmed_to(h, s, io, "x", 1).await;
    assert_eq!(set.clones[0].id, s2);
    assert_eq!(set.clones[0].overlap, vec![Extent::new(0, 4096)]);
    let err = fails(
        s.read_at(io, "x", 0, None, Some(s1)).await,
        ErrorKind::NotFound,
    );
    let removed = Subject::Snapshot {
        pool: fx.pool,
        snap: s1,
    };
    assert!(
        err.subject() == &removed || err.subject() == &io.object_subject("x"),
        "{err}"
    );
    let mut expect = filled(4096, b'b');
    expect.extend(filled(4096, b'a'));
    assert_eq!(data_at(s, io, "x", s2).await, expect);

    ok(s.operate(
        io,
        "y",
        &WriteOp::new().write_full(filled(12288, b'a')),
        &SnapContext::from_snaps(live.clone()),
    )
    .await);
    let (s3, c) = take(&mut live).await;
    ok(
        s.operate(io, "y", &WriteOp::new().write(0, filled(4096, b'b')), &c)
            .await,
    );
    let (s4, c) = take(&mut live).await;
    ok(
        s.operate(io, "y", &WriteOp::new().write(4096, filled(4096, b'c')), &c)
            .await,
    );
    let (s5, c) = take(&mut live).await;
    ok(
        s.operate(io, "y", &WriteOp::new().write(8192, filled(4096, b'd')), &c)
            .await,
    );
    ok(s.snap_remove(fx.pool, s4).await);
    live.retain(|x| *x != s4);
    let set = trimmed_to(h, s, io, "y", 2).await;
    let ids: Vec<SnapId> = set.clones.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![s3, s5]);
    assert_eq!(set.clones[0].overlap, vec![Extent::new(8192, 4096)]);
    assert_eq!(data_at(s, io, "y", s3).await, filled(12288, b'a'));
    let mut bca = filled(4096, b'b');
    bca.extend(filled(4096, b'c'));
    bca.extend(filled(4096, b'a'));
    assert_eq!(data_at(s, io, "y", s5).await, bca);

    let create = WriteOp::new().write_full(filled(100, b'z'));
    ok(
        s.operate(io, "z", &create, &SnapContext::from_snaps(live.clone()))
            .await,
    );
    let (s6, c) = take(&mut live).await;
    ok(s.operate(io, "z", &WriteOp::new().remove(), &c).await);
    assert_eq!(data_at(s, io, "z", s6).await, filled(100, b'z'));
    assert!(!ok(s.exists(io, "z").await));
    ok(s.snap_remove(fx.pool, s6).await);
    trimmed_away(h, s, io, "z").await;

    ok(s.snap_remove(fx.pool, s1).await);
    let err = fails(
        s.snap_remove(fx.pool, SnapId(s6.0 + 1000)).await,
        ErrorKind::NotFound,
    );
    assert!(matches!(err.subject(), Subject::Snapshot { .. }), "{err}");
    for snap in [s2, s3, s5] {
        ok(s.snap_remove(fx.pool, snap).await);
    }
    trimmed_to(h, s, io, "y", 0).await;
    trimmed_to(h, s, io, "x", 0).await;
    fx.cleanup().await;
}

/// Snapshot ids grow; unknown snapshot ids, unknown pools and malformed contexts are typed
/// errors.
pub async fn snapshots_reject_bad_ids_and_contexts(h: &dyn Harness) {
    let fx = Fixture::new(h, "snapbad").await;
    let (s, io) = (&*fx.store, &fx.io);
    ok(s.write_full(io, "o", Bytes::from_static(b"data")).await);
    let a = ok(s.snap_create(fx.pool).await);
    let b = ok(s.snap_create(fx.pool).await);
    assert!(b > a && a.0 > 0);
    for bad in [SnapId(0), SnapId(b.0 + 100)] {
        let err = fails(
            s.read_at(io, "o", 0, None, Some(bad)).await,
            ErrorKind::NotFound,
        );
        assert_eq!(
            err.subject(),
            &Subject::Snapshot {
                pool: fx.pool,
                snap: bad
            }
        );
    }
    fails(
        s.snap_create(PoolId(u64::MAX / 2)).await,
        ErrorKind::NotFound,
    );
    let unordered = SnapContext {
        seq: b.0,
        snaps: vec![a, b],
    };
    fails(
        s.operate(io, "o", &WriteOp::new().write(0, &b"x"[..]), &unordered)
            .await,
        ErrorKind::InvalidArgument,
    );
    let above_seq = SnapContext {
        seq: a.0,
        snaps: vec![b],
    };
    fails(
        s.operate(io, "o", &WriteOp::new().write(0, &b"x"[..]), &above_seq)
            .await,
        ErrorKind::InvalidArgument,
    );
    assert_eq!(ok(s.read(io, "o", 0, None).await), "data");
    assert!(ok(s.list_snaps(io, "o").await).clones.is_empty());
    fx.cleanup().await;
}
