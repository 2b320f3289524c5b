//! [`RadosStore`]: the object-store contract on a Ceph cluster.
//!
//! Reads and write batches, the hot path, are submitted with librados' asynchronous
//! completions and awaited. The other librados calls block their thread until the cluster
//! answers, so they run on tokio's blocking threads. Either way at most [`MAX_CALLS`] run at
//! a time. I/O contexts are kept in a pool per (pool, namespace) and reused; each carries
//! per-call state (read snapshot, write snapshot context) that every call sets before use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::snapset::SnapSet;
use rbdx_objstore::{
    ClientId, ClientInfo, Error, ErrorKind, IoCtx, ListOptions, ListPage, LockInfo, LockOptions,
    NotifyResult, ObjectStore, PoolId, PoolInfo, ReadOp, ReadResult, Result, SnapContext, SnapId,
    Subject, Watch, WatcherInfo, WriteOp, validate,
};
use tokio::sync::Semaphore;

use crate::cluster::{Cluster, Io};
use crate::config::RadosConfig;
use crate::namespaces::SeenNamespaces;
use crate::watch::Registration;
use crate::{aio, readop, writeop};

/// The most librados calls one session runs at once.
const MAX_CALLS: usize = 64;

/// The most idle I/O contexts kept per (pool, namespace).
const IDLE_IOS: usize = 32;

/// A client session on a Ceph cluster.
#[derive(Debug, Clone)]
pub struct RadosStore {
    inner: Arc<Inner>,
}

/// The session's state, shared with watch callbacks and blocking calls.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) client: ClientInfo,
    pub(crate) fsid: Option<String>,
    pub(crate) config: RadosConfig,
    permits: Arc<Semaphore>,
    ios: Mutex<HashMap<(PoolId, String), Vec<Io>>>,
    pub(crate) watches: Mutex<HashMap<u64, Registration>>,
    pub(crate) namespaces: SeenNamespaces,
    /// The newest snapshot id known per pool.
    pub(crate) snap_seqs: Mutex<HashMap<PoolId, u64>>,
    /// Dropped last: every I/O context above belongs to it.
    pub(crate) cluster: Cluster,
}

/// Locks a mutex, ignoring poisoning (the guarded maps stay consistent at every step).
pub(crate) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn call_failed(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, Subject::Store).with_detail(format!("librados call failed: {e}"))
}

impl RadosStore {
    /// Connects to the cluster `config` names; fails within its connect timeout if no monitor
    /// answers or the credentials are refused.
    pub async fn connect(config: RadosConfig) -> Result<RadosStore> {
        tokio::task::spawn_blocking(move || RadosStore::connect_blocking(config))
            .await
            .map_err(call_failed)?
    }

    /// Connects without a runtime; see [`RadosStore::connect`].
    pub fn connect_blocking(config: RadosConfig) -> Result<RadosStore> {
        let cluster = Cluster::connect(&config)?;
        let id = cluster.instance_id();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let program = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let addr = format!(
            "{} ({}/pid {} {program})",
            cluster.addr(),
            host.trim(),
            std::process::id()
        );
        Ok(RadosStore {
            inner: Arc::new(Inner {
                client: ClientInfo {
                    id: ClientId(id),
                    addr,
                },
                fsid: cluster.fsid(),
                config,
                permits: Arc::new(Semaphore::new(MAX_CALLS)),
                ios: Mutex::new(HashMap::new()),
                watches: Mutex::new(HashMap::new()),
                namespaces: SeenNamespaces::default(),
                snap_seqs: Mutex::new(HashMap::new()),
                cluster,
            }),
        })
    }

    /// Returns the connection settings.
    pub fn config(&self) -> &RadosConfig {
        &self.inner.config
    }
}

impl Inner {
    /// Runs a blocking librados call on a blocking thread, within the session's call limit.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(call_failed)?;
        self.blocking(f).await
    }

    /// Runs a blocking librados call on a blocking thread, outside the call limit: for the
    /// short calls that a call holding a permit needs (so that they cannot wait on each
    /// other).
    async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(call_failed)?
    }

    /// Runs `f` with an I/O context on `ctx`, outside the call limit (for answers that calls
    /// inside the limit may be waiting for).
    pub(crate) async fn run_unlimited<T, F>(self: &Arc<Self>, ctx: &IoCtx, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Io, &IoCtx) -> Result<T> + Send + 'static,
    {
        let (inner, ctx) = (Arc::clone(self), ctx.clone());
        tokio::task::spawn_blocking(move || inner.with_io(&ctx, f))
            .await
            .map_err(call_failed)?
    }

    /// Runs `f` with an I/O context on `ctx` on a blocking thread.
    pub(crate) async fn io_call<T, F>(self: &Arc<Self>, ctx: &IoCtx, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Io, &IoCtx) -> Result<T> + Send + 'static,
    {
        let ctx = ctx.clone();
        self.run(move |inner| inner.with_io(&ctx, f)).await
    }

    fn with_io<T>(&self, ctx: &IoCtx, f: impl FnOnce(&mut Io, &IoCtx) -> Result<T>) -> Result<T> {
        let mut io = match self.idle_io(ctx) {
            Some(io) => io,
            None => self.cluster.io(ctx.pool(), ctx.namespace())?,
        };
        let result = f(&mut io, ctx);
        self.put_io(ctx, io);
        result.map_err(|e| self.name_missing_pool(ctx.pool(), e))
    }

    fn idle_io(&self, ctx: &IoCtx) -> Option<Io> {
        let key = (ctx.pool(), ctx.namespace().to_owned());
        guard(&self.ios).get_mut(&key).and_then(Vec::pop)
    }

    fn put_io(&self, ctx: &IoCtx, io: Io) {
        let key = (ctx.pool(), ctx.namespace().to_owned());
        let mut ios = guard(&self.ios);
        let idle = ios.entry(key).or_default();
        if idle.len() < IDLE_IOS {
            idle.push(io);
        }
    }

    /// Takes an idle I/O context on `ctx`, opening one on a blocking thread if there is none
    /// (opening may wait for the monitors when the pool is unknown).
    async fn take_io(self: &Arc<Self>, ctx: &IoCtx) -> Result<Io> {
        match self.idle_io(ctx) {
            Some(io) => Ok(io),
            None => {
                let ctx = ctx.clone();
                self.blocking(move |inner| inner.cluster.io(ctx.pool(), ctx.namespace()))
                    .await
            }
        }
    }

    /// Submits an operation with an I/O context on `ctx` and waits for its completion, within
    /// the session's call limit; the context goes back to the pool right after submission.
    async fn submit_and_wait<T, R, Fut>(
        self: &Arc<Self>,
        ctx: &IoCtx,
        submit: impl FnOnce(&mut Io) -> Result<R>,
        wait: impl FnOnce(R) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let _permit = self.permits.acquire().await.map_err(call_failed)?;
        let mut io = self.take_io(ctx).await?;
        let submitted = submit(&mut io);
        // librados keeps what an operation in flight needs of the context (a reference for
        // writes; the shim holds one for reads), so it can serve the next call at once.
        self.put_io(ctx, io);
        let result = match submitted {
            Ok(pending) => wait(pending).await,
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let pool = ctx.pool();
                Err(self
                    .blocking(move |inner| Ok(inner.name_missing_pool(pool, e)))
                    .await?)
            }
            other => other,
        }
    }

    /// Evaluates a compound read asynchronously.
    pub(crate) async fn read(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult> {
        self.submit_and_wait(
            ctx,
            |io| readop::submit(io, ctx, oid, op, snap.map(|s| s.0)),
            |receiver| readop::finish(receiver, ctx, oid, op),
        )
        .await
    }

    /// Applies a write batch asynchronously; returns the object's new version.
    pub(crate) async fn write(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        if op.steps().is_empty() {
            // RADOS answers an empty operation with version 0; the contract wants the current
            // one.
            return match self.read(ctx, oid, &ReadOp::new().stat(), None).await {
                Ok(result) => Ok(result.version),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            };
        }
        let subject = || ctx.object_subject(oid);
        self.submit_and_wait(
            ctx,
            |io| writeop::submit(io, ctx, oid, op, snapc),
            |receiver| async move {
                let done = aio::wait(receiver, subject).await?;
                writeop::finish(done, ctx, oid)
            },
        )
        .await
    }

    /// Turns "object not found" into "pool not found" when the pool is gone.
    fn name_missing_pool(&self, pool: PoolId, e: Error) -> Error {
        if e.kind() == ErrorKind::NotFound
            && matches!(e.subject(), Subject::Object { .. })
            && self.cluster.pool_name(pool).is_err()
        {
            return Error::not_found(Subject::PoolId(pool));
        }
        e
    }

    /// Drops the idle I/O contexts of a removed pool.
    pub(crate) fn forget_pool(&self, pool: PoolId) {
        guard(&self.ios).retain(|(p, _), _| *p != pool);
        self.namespaces.forget_pool(pool);
    }

    /// Fails with `NotFound` naming the namespace unless `ctx`'s namespace exists.
    pub(crate) async fn require_namespace(self: &Arc<Self>, ctx: &IoCtx) -> Result<()> {
        if ctx.namespace().is_empty() || self.namespaces.trusted(ctx) {
            return Ok(());
        }
        if self.namespace_exists(ctx).await? {
            self.namespaces.saw(ctx);
            Ok(())
        } else {
            Err(Error::not_found(ctx.namespace_subject()))
        }
    }

    /// Names the namespace instead of the object when a read failed because the namespace
    /// does not exist.
    pub(crate) async fn explain_read_error(self: &Arc<Self>, ctx: &IoCtx, e: Error) -> Error {
        if e.kind() != ErrorKind::NotFound
            || ctx.namespace().is_empty()
            || !matches!(e.subject(), Subject::Object { .. })
        {
            return e;
        }
        match self.require_namespace(ctx).await {
            Err(missing) if missing.kind() == ErrorKind::NotFound => missing,
            _ => e,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let watches: Vec<Registration> = guard(&self.watches).drain().map(|(_, r)| r).collect();
        for registration in &watches {
            registration.unwatch();
        }
        if !watches.is_empty() {
            self.cluster.watch_flush();
        }
        for registration in watches {
            registration.free();
        }
        guard(&self.ios).clear();
    }
}

#[async_trait]
impl ObjectStore for RadosStore {
    fn client(&self) -> ClientInfo {
        self.inner.client.clone()
    }

    fn fsid(&self) -> Option<String> {
        self.inner.fsid.clone()
    }

    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        validate::pool_name(name)?;
        self.inner.pool_create(name).await
    }

    async fn pool_remove(&self, name: &str) -> Result<()> {
        validate::pool_name(name)?;
        self.inner.pool_remove(name).await
    }

    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        self.inner.pool_list().await
    }

    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
        validate::pool_name(name)?;
        let name = name.to_owned();
        self.inner
            .run(move |inner| {
                let id = inner.cluster.pool_lookup(&name)?;
                Ok(PoolInfo { id, name })
            })
            .await
    }

    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
        self.inner
            .run(move |inner| {
                let name = inner.cluster.pool_name(id)?;
                Ok(PoolInfo { id, name })
            })
            .await
    }

    async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        self.inner.namespace_create(io).await
    }

    async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        self.inner.namespace_remove(io).await
    }

    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
        self.inner.namespace_list(pool).await
    }

    async fn config_key_get(&self, key: &str) -> Result<Bytes> {
        validate::config_key(key, None)?;
        self.inner.config_key_get(key).await
    }

    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
        validate::config_key(key, Some(&value))?;
        self.inner.config_key_set(key, value).await
    }

    async fn config_key_remove(&self, key: &str) -> Result<()> {
        validate::config_key(key, None)?;
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
        validate::read_op(io, oid, op)?;
        if let Some(snap) = snap {
            self.inner.require_snapshot(io.pool(), snap).await?;
        }
        match self.inner.read(io, oid, op, snap).await {
            Ok(result) => Ok(result),
            Err(e) => Err(self.inner.explain_read_error(io, e).await),
        }
    }

    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        validate::write_op(io, oid, op, snapc)?;
        self.inner.require_namespace(io).await?;
        self.inner.write(io, oid, op, snapc).await
    }

    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
        validate::io_ctx(io)?;
        self.inner.require_namespace(io).await?;
        self.inner.list_objects(io, opts).await
    }

    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
        validate::object_name(io, oid)?;
        let result = self.inner.list_snaps(io, oid).await;
        match result {
            Ok(set) => Ok(set),
            Err(e) => Err(self.inner.explain_read_error(io, e).await),
        }
    }

    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
        validate::object_name(io, oid)?;
        self.inner.require_namespace(io).await?;
        self.inner.watch(io, oid).await
    }

    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
        validate::object_name(io, oid)?;
        self.inner.unwatch(cookie).await
    }

    async fn notify(
        &self,
        io: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        validate::object_name(io, oid)?;
        validate::notify_payload(io, oid, payload.len())?;
        self.inner.require_namespace(io).await?;
        self.inner.notify(io, oid, payload, timeout).await
    }

    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
        validate::object_name(io, oid)?;
        let oid = oid.to_owned();
        let result = self
            .inner
            .io_call(io, move |h, ctx| crate::watch::list_watchers(h, ctx, &oid))
            .await;
        match result {
            Ok(watchers) => Ok(watchers),
            Err(e) => Err(self.inner.explain_read_error(io, e).await),
        }
    }

    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
        validate::lock_options(io, oid, opts)?;
        self.inner.require_namespace(io).await?;
        self.inner.lock(io, oid, opts).await
    }

    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
        validate::lock_name(io, oid, name)?;
        validate::lock_field(io, oid, "cookie", cookie)?;
        self.inner.unlock(io, oid, name, cookie).await
    }

    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
        validate::lock_name(io, oid, name)?;
        let result = self.inner.lock_info(io, oid, name).await;
        match result {
            Ok(info) => Ok(info),
            Err(e) => Err(self.inner.explain_read_error(io, e).await),
        }
    }

    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
        validate::object_name(io, oid)?;
        let result = self.inner.lock_list(io, oid).await;
        match result {
            Ok(names) => Ok(names),
            Err(e) => Err(self.inner.explain_read_error(io, e).await),
        }
    }

    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        validate::lock_name(io, oid, name)?;
        validate::lock_field(io, oid, "cookie", cookie)?;
        self.inner.lock_break(io, oid, name, client, cookie).await
    }

    async fn flush(&self) -> Result<()> {
        // RADOS acknowledges a write only once every replica has it on stable storage.
        Ok(())
    }
}
