//! Many writes queued at once for the same objects: the writer plans runs of plain data
//! writes to one object together. Each request must still get its own version, and the object
//! must end as if the requests had run one by one in the order of those versions.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, SnapContext, WriteOp};
use rbdx_objstore_dir::DirStore;

use common::Rng;

const SPAN: usize = 256 << 10;
const NAMES: [&str; 3] = ["base", "fresh", "other"];

/// One queued request and how it changes the model.
#[derive(Clone, Debug)]
enum Step {
    Write(usize, Vec<u8>),
    Full(Vec<u8>),
    Zero(usize, usize),
    Truncate(usize),
    /// An omap change: never merged, so it splits a run of writes.
    Omap(u32),
}

impl Step {
    fn op(&self) -> WriteOp {
        match self {
            Step::Write(at, data) => WriteOp::new().write(*at as u64, Bytes::from(data.clone())),
            Step::Full(data) => WriteOp::new().write_full(Bytes::from(data.clone())),
            Step::Zero(at, len) => WriteOp::new().zero(*at as u64, *len as u64),
            Step::Truncate(size) => WriteOp::new().truncate(*size as u64),
            Step::Omap(n) => {
                WriteOp::new().omap_set([("k".to_owned(), Bytes::from(n.to_string()))])
            }
        }
    }

    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Step::Write(at, bytes) => {
                if data.len() < at + bytes.len() {
                    data.resize(at + bytes.len(), 0);
                }
                data[*at..at + bytes.len()].copy_from_slice(bytes);
            }
            Step::Full(bytes) => *data = bytes.clone(),
            Step::Zero(at, len) if *at < data.len() => {
                if at + len >= data.len() {
                    data.truncate(*at);
                } else {
                    data[*at..at + len].fill(0);
                }
            }
            Step::Zero(..) | Step::Omap(_) => {}
            Step::Truncate(size) => data.resize(*size, 0),
        }
    }
}

fn random_step(rng: &mut Rng, fill: u8) -> Step {
    let at = rng.below(SPAN);
    let len = 512 * (1 + rng.below(32));
    match rng.below(20) {
        0 => Step::Full(vec![fill; len]),
        1 => Step::Truncate(rng.below(SPAN)),
        2 | 3 => Step::Zero(at, len),
        4 => Step::Omap(u32::from(fill)),
        _ => Step::Write(at, vec![fill; len]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_keep_their_order_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    store
        .write_full(&io, "base", Bytes::from(vec![7u8; SPAN]))
        .await
        .unwrap();
    let mut model: Vec<Option<Vec<u8>>> = vec![Some(vec![7u8; SPAN]), None, None];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);

    for round in 0..40u32 {
        let mut tasks = Vec::new();
        for n in 0..48u32 {
            let object = if rng.below(4) == 0 { 2 } else { rng.below(2) };
            let fill = ((round * 48 + n) % 253) as u8 + 1;
            let step = random_step(&mut rng, fill);
            let store = store.clone();
            let io = io.clone();
            let op = step.op();
            tasks.push((
                object,
                step,
                tokio::spawn(async move {
                    store
                        .operate(&io, NAMES[object], &op, &SnapContext::empty())
                        .await
                }),
            ));
        }
        let mut done: Vec<Vec<(u64, Step)>> = vec![Vec::new(); NAMES.len()];
        for (object, step, task) in tasks {
            let version = task.await.unwrap().unwrap();
            done[object].push((version, step));
        }
        for (object, mut steps) in done.into_iter().enumerate() {
            steps.sort_by_key(|(v, _)| *v);
            for pair in steps.windows(2) {
                assert!(
                    pair[0].0 < pair[1].0,
                    "round {round}: two requests to {} got version {}",
                    NAMES[object],
                    pair[0].0
                );
            }
            for (_, step) in &steps {
                step.apply(model[object].get_or_insert_with(Vec::new));
            }
            let expected = model[object].as_ref().unwrap();
            let got = store
                .read(&io, NAMES[object], 0, Some(2 * SPAN as u64))
                .await
                .unwrap();
            assert!(
                got.as_ref() == expected.as_slice(),
                "round {round}: {} holds {} bytes, the model {}",
                NAMES[object],
                got.len(),
                expected.len()
            );
            if let Some((last, _)) = steps.last() {
                let stat = store.stat(&io, NAMES[object]).await.unwrap();
                assert_eq!(stat.version, *last, "round {round}: {}", NAMES[object]);
            }
        }
    }
}

/// A request that leaves an absent object absent still takes a version: the object's creation
/// afterwards gets a later one (two requests answered with one version broke the test above
/// when a zero of `fresh` came before its first write).
#[tokio::test]
async fn a_change_that_leaves_an_object_absent_uses_up_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).unwrap();
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let snapc = SnapContext::empty();
    let zeroed = store
        .operate(&io, "x", &WriteOp::new().zero(0, 4096), &snapc)
        .await
        .unwrap();
    assert!(store.stat(&io, "x").await.is_err(), "a zero created x");
    let created = store
        .operate(
            &io,
            "x",
            &WriteOp::new().write(0, Bytes::from_static(b"a")),
            &snapc,
        )
        .await
        .unwrap();
    assert!(
        created > zeroed,
        "the zero got version {zeroed}, the creation {created}"
    );
}
