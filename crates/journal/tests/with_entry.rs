//! Small journaled writes given to the journal with their entries: on the `dir` store, which
//! commits such a write in one transaction with its entry, the image and the journal both
//! hold every write, in order, also with snapshots, overlapping writes in flight and a
//! reopened store; and a write the store did not apply beside its entry is applied after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use rbdx_image::journaling::Event;
use rbdx_image::{CreateOptions, Features, Images, OpenOptions};
use rbdx_journal::{Journal, event};
use rbdx_objstore::snapset::SnapSet;
use rbdx_objstore::{
    ClientId, ClientInfo, Error, ErrorKind, IoCtx, ListOptions, ListPage, LockInfo, LockOptions,
    MemoryStore, NotifyResult, ObjectStore, ObjectWrite, PoolId, PoolInfo, ReadOp, ReadResult,
    Result, SnapContext, SnapId, Watch, WatcherInfo, WriteOp,
};
use rbdx_objstore_dir::DirStore;

const SIZE: u64 = 1 << 20;
const ORDER: u8 = 16;

fn open_images(store: Arc<dyn ObjectStore>, io: IoCtx) -> Images {
    Images::new(rbdx_journal::cluster(store), io)
}

async fn journaled_writes(store: &Arc<dyn ObjectStore>, io: &IoCtx, id: &str) -> Vec<(u64, Bytes)> {
    let journal = Journal::open(store.clone(), io.clone(), id).await.unwrap();
    journal
        .replay_from(None)
        .map_ok(|(_, e)| event::decode(&e.data).unwrap().0)
        .try_collect::<Vec<Event>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Event::Write { offset, data } => Some((offset, data)),
            _ => None,
        })
        .collect()
}

/// The `n`th write of the test: 512 bytes to 16 KiB, inside one 64 KiB object or across two.
fn nth(n: u64) -> (u64, Bytes) {
    let len = 512 * (1 + (n * 7) % 32);
    let offset = (n * 40_961) % (SIZE - len);
    (offset, Bytes::from(vec![(n % 251) as u8 + 1; len as usize]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_committed_with_their_entries_reach_the_image_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    assert!(store.commits_groups());
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let images = open_images(store.clone(), io.clone());
    images
        .create(
            "w",
            &CreateOptions::new(SIZE)
                .with_order(ORDER)
                .with_features(Features::DEFAULT.with(Features::JOURNALING)),
        )
        .await
        .unwrap();
    let image = Arc::new(images.open("w", OpenOptions::default()).await.unwrap());
    let id = image.id().to_owned();
    let mut model = vec![0u8; SIZE as usize];
    // One at a time, a snapshot now and then (the writes after it find their objects clean).
    for n in 0..120u64 {
        let (offset, data) = nth(n);
        image.write(offset, data.clone()).await.unwrap();
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        if n % 40 == 39 {
            image.snap_create(&format!("s{n}")).await.unwrap();
        }
    }
    // Sixteen in flight at once, some overlapping: they land in the order they were made.
    let batch: Vec<_> = (120..136u64)
        .map(|n| {
            let image = image.clone();
            let (offset, data) = nth(n % 8 + 120);
            let data = Bytes::from(vec![(n % 251) as u8 + 1; data.len()]);
            (offset, data.clone(), async move {
                image.write(offset, data).await
            })
        })
        .collect();
    let mut pending = Vec::new();
    for (offset, data, write) in batch {
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        pending.push(write);
    }
    for result in futures::future::join_all(pending).await {
        result.unwrap();
    }
    assert_eq!(
        image.read(0, SIZE).await.unwrap(),
        model,
        "read back while open"
    );
    Arc::try_unwrap(image).ok().unwrap().close().await.unwrap();
    drop(images);
    drop(store);

    let store: Arc<dyn ObjectStore> = Arc::new(DirStore::open(dir.path()).unwrap());
    let images = open_images(store.clone(), io.clone());
    let image = images
        .open("w", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert_eq!(
        image.read(0, SIZE).await.unwrap(),
        model,
        "read back after reopening"
    );
    image.close().await.unwrap();
    let written = journaled_writes(&store, &io, &id).await;
    assert_eq!(written.len(), 136, "every write is in the journal");
    let mut replayed = vec![0u8; SIZE as usize];
    for (offset, data) in written {
        replayed[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    }
    assert_eq!(
        replayed, model,
        "the journal replays to the image's content"
    );
}

/// A store that takes groups but fails every image object write given beside a journal
/// entry; single writes go through.
#[derive(Debug)]
struct RefusesGroupWrites {
    inner: MemoryStore,
    failed: AtomicUsize,
}

#[async_trait]
impl ObjectStore for RefusesGroupWrites {
    fn client(&self) -> ClientInfo {
        self.inner.client()
    }
    fn fsid(&self) -> Option<String> {
        self.inner.fsid()
    }
    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        self.inner.pool_create(name).await
    }
    async fn pool_remove(&self, name: &str) -> Result<()> {
        self.inner.pool_remove(name).await
    }
    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        self.inner.pool_list().await
    }
    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
        self.inner.pool_lookup(name).await
    }
    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
        self.inner.pool_by_id(id).await
    }
    async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        self.inner.namespace_create(io).await
    }
    async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        self.inner.namespace_remove(io).await
    }
    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
        self.inner.namespace_list(pool).await
    }
    async fn config_key_get(&self, key: &str) -> Result<Bytes> {
        self.inner.config_key_get(key).await
    }
    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner.config_key_set(key, value).await
    }
    async fn config_key_remove(&self, key: &str) -> Result<()> {
        self.inner.config_key_remove(key).await
    }
    async fn config_key_list(&self) -> Result<Vec<String>> {
        self.inner.config_key_list().await
    }
    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        self.inner.snap_create(pool).await
    }
    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        self.inner.snap_remove(pool, snap).await
    }
    async fn read_op(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult> {
        self.inner.read_op(io, oid, op, snap).await
    }
    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        self.inner.operate(io, oid, op, snapc).await
    }
    async fn operate_group(&self, writes: &[ObjectWrite]) -> Vec<Result<u64>> {
        // The journal's entries are written; every image object write beside them fails.
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            outcomes.push(if w.oid.starts_with("rbd_data.") {
                self.failed.fetch_add(1, Ordering::SeqCst);
                Err(Error::new(ErrorKind::Io, w.io.object_subject(&w.oid)).with_detail("refused"))
            } else {
                self.inner.operate(&w.io, &w.oid, &w.op, &w.snapc).await
            });
        }
        outcomes
    }
    fn commits_groups(&self) -> bool {
        true
    }
    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
        self.inner.list_objects_opts(io, opts).await
    }
    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
        self.inner.list_snaps(io, oid).await
    }
    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
        self.inner.watch(io, oid).await
    }
    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
        self.inner.unwatch(io, oid, cookie).await
    }
    async fn notify(
        &self,
        io: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        self.inner.notify(io, oid, payload, timeout).await
    }
    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
        self.inner.list_watchers(io, oid).await
    }
    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
        self.inner.lock_opts(io, oid, opts).await
    }
    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
        self.inner.unlock(io, oid, name, cookie).await
    }
    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
        self.inner.lock_info(io, oid, name).await
    }
    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
        self.inner.lock_list(io, oid).await
    }
    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        self.inner.lock_break(io, oid, name, client, cookie).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_not_committed_with_its_entry_is_applied_by_its_task() {
    let store = Arc::new(RefusesGroupWrites {
        inner: MemoryStore::new(),
        failed: AtomicUsize::new(0),
    });
    let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    let images = open_images(dyn_store.clone(), io.clone());
    images
        .create(
            "r",
            &CreateOptions::new(SIZE)
                .with_order(ORDER)
                .with_features(Features::DEFAULT.with(Features::JOURNALING)),
        )
        .await
        .unwrap();
    let image = images.open("r", OpenOptions::default()).await.unwrap();
    let id = image.id().to_owned();
    let mut model = vec![0u8; SIZE as usize];
    for n in 0..40u64 {
        let (offset, data) = nth(n);
        image.write(offset, data.clone()).await.unwrap();
        model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        assert_eq!(
            image.read(offset, data.len() as u64).await.unwrap(),
            data,
            "write {n} read back"
        );
    }
    assert!(
        store.failed.load(Ordering::SeqCst) > 0,
        "no write was given beside its entry"
    );
    image.close().await.unwrap();
    let image = images
        .open("r", OpenOptions::default().with_read_only(true))
        .await
        .unwrap();
    assert_eq!(image.read(0, SIZE).await.unwrap(), model);
    image.close().await.unwrap();
    assert_eq!(journaled_writes(&dyn_store, &io, &id).await.len(), 40);
}
