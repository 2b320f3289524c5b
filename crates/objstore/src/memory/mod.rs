//! The in-memory backend: the reference implementation of the contract.
//!
//! Everything lives in one [`MemoryCluster`] behind a mutex, so every operation is trivially
//! atomic and consistent. Several client sessions share a cluster ([`MemoryStore::connect`]),
//! standing in for several processes: a session is "gone" once its handle is dropped, which is
//! how the conformance suite exercises dead lock holders and watchers. Nothing is durable.

mod blocks;
mod object;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result, Subject};
use crate::lock::{LockInfo, LockOptions, LockState};
use crate::op::{ReadOp, ReadResult, WriteOp};
use crate::snapset::SnapSet;
use crate::store::ObjectStore;
use crate::types::{
    ClientId, ClientInfo, IoCtx, ListOptions, ListPage, PoolId, PoolInfo, SnapContext, SnapId,
    limits,
};
use crate::validate;
use crate::watch::{Notification, NotifyAck, NotifyResult, Watch, WatchEvent, WatcherInfo};

use object::Object;

/// A pool of the memory backend.
#[derive(Debug)]
struct Pool {
    name: String,
    snap_seq: u64,
    removed_snaps: BTreeSet<u64>,
    last_version: u64,
    namespaces: BTreeSet<String>,
    objects: BTreeMap<(String, String), Object>,
}

#[derive(Debug)]
struct WatchEntry {
    client: ClientInfo,
    alive: Weak<()>,
    pool: PoolId,
    namespace: String,
    oid: String,
    events: mpsc::UnboundedSender<WatchEvent>,
}

#[derive(Debug, Default)]
struct State {
    pools: BTreeMap<u64, Pool>,
    next_pool: u64,
    config: BTreeMap<String, Bytes>,
    clients: HashMap<ClientId, Weak<()>>,
    watches: BTreeMap<u64, WatchEntry>,
    next_cookie: u64,
    next_notify: u64,
}

/// The shared state of memory sessions: pools, objects, config keys, watches.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    state: Mutex<State>,
    next_client: AtomicU64,
}

/// A client session on a [`MemoryCluster`].
#[derive(Debug)]
pub struct MemoryStore {
    cluster: Arc<MemoryCluster>,
    client: ClientInfo,
    alive: Arc<()>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// Creates a new, empty cluster and a session on it.
    pub fn new() -> Self {
        MemoryStore::connect_to(Arc::new(MemoryCluster::default()))
    }

    /// Opens another session on the same cluster, as a second process would.
    pub fn connect(&self) -> Self {
        MemoryStore::connect_to(self.cluster.clone())
    }

    fn connect_to(cluster: Arc<MemoryCluster>) -> Self {
        let id = ClientId(cluster.next_client.fetch_add(1, Ordering::Relaxed) + 1);
        let client = ClientInfo {
            id,
            addr: format!("memory session {}", id.0),
        };
        let alive = Arc::new(());
        lock_state(&cluster)
            .clients
            .insert(id, Arc::downgrade(&alive));
        MemoryStore {
            cluster,
            client,
            alive,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.cluster)
    }
}

fn lock_state(cluster: &MemoryCluster) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave half-applied state: every mutation is
    // computed on a copy first and stored with a single assignment.
    cluster
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    fn pool(&self, id: PoolId) -> Result<&Pool> {
        self.pools
            .get(&id.0)
            .ok_or_else(|| Error::not_found(Subject::PoolId(id)))
    }

    fn pool_mut(&mut self, id: PoolId) -> Result<&mut Pool> {
        self.pools
            .get_mut(&id.0)
            .ok_or_else(|| Error::not_found(Subject::PoolId(id)))
    }

    /// Returns the pool of `io` after checking that its namespace exists.
    fn pool_of(&self, io: &IoCtx) -> Result<&Pool> {
        let pool = self.pool(io.pool())?;
        if !io.namespace().is_empty() && !pool.namespaces.contains(io.namespace()) {
            return Err(Error::not_found(io.namespace_subject()));
        }
        Ok(pool)
    }

    fn pool_of_mut(&mut self, io: &IoCtx) -> Result<&mut Pool> {
        self.pool_of(io)?;
        self.pool_mut(io.pool())
    }

    fn object(&self, io: &IoCtx, oid: &str) -> Result<&Object> {
        self.pool_of(io)?
            .objects
            .get(&(io.namespace().to_owned(), oid.to_owned()))
            .ok_or_else(|| Error::not_found(io.object_subject(oid)))
    }

    fn client_alive(&self, id: ClientId) -> bool {
        self.clients.get(&id).is_some_and(|w| w.strong_count() > 0)
    }

    fn check_snap(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        let p = self.pool(pool)?;
        if snap.0 == 0 || snap.0 > p.snap_seq || p.removed_snaps.contains(&snap.0) {
            return Err(Error::not_found(Subject::Snapshot { pool, snap }));
        }
        Ok(())
    }

    /// Tells the watchers of removed objects that their watch is gone and forgets them.
    fn drop_watches(&mut self, keep: impl Fn(&WatchEntry) -> bool) {
        let gone: Vec<u64> = self
            .watches
            .iter()
            .filter(|(_, w)| !keep(w))
            .map(|(c, _)| *c)
            .collect();
        for cookie in gone {
            if let Some(w) = self.watches.remove(&cookie) {
                let err = Error::not_found(Subject::Object {
                    pool: w.pool,
                    namespace: w.namespace.clone(),
                    oid: w.oid.clone(),
                });
                let _ = w.events.send(WatchEvent::Disconnected(err));
            }
        }
    }

    fn live_watchers(&self, io: &IoCtx, oid: &str) -> Vec<(u64, &WatchEntry)> {
        self.watches
            .iter()
            .filter(|(_, w)| w.pool == io.pool() && w.namespace == io.namespace() && w.oid == oid)
            .filter(|(_, w)| w.alive.strong_count() > 0 && !w.events.is_closed())
            .map(|(c, w)| (*c, w))
            .collect()
    }
}

fn object_key(io: &IoCtx, oid: &str) -> (String, String) {
    (io.namespace().to_owned(), oid.to_owned())
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn client(&self) -> ClientInfo {
        self.client.clone()
    }

    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        validate::pool_name(name)?;
        let mut state = self.state();
        if state.pools.values().any(|p| p.name == name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                Subject::Pool(name.to_owned()),
            ));
        }
        state.next_pool += 1;
        let id = state.next_pool;
        state.pools.insert(
            id,
            Pool {
                name: name.to_owned(),
                snap_seq: 0,
                removed_snaps: BTreeSet::new(),
                last_version: 0,
                namespaces: BTreeSet::new(),
                objects: BTreeMap::new(),
            },
        );
        Ok(PoolId(id))
    }

    async fn pool_remove(&self, name: &str) -> Result<()> {
        validate::pool_name(name)?;
        let mut state = self.state();
        let id = state
            .pools
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
            .ok_or_else(|| Error::not_found(Subject::Pool(name.to_owned())))?;
        state.pools.remove(&id);
        state.drop_watches(|w| w.pool != PoolId(id));
        Ok(())
    }

    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        let state = self.state();
        Ok(state
            .pools
            .iter()
            .map(|(id, p)| PoolInfo {
                id: PoolId(*id),
                name: p.name.clone(),
            })
            .collect())
    }

    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
        validate::pool_name(name)?;
        let state = self.state();
        state
            .pools
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, p)| PoolInfo {
                id: PoolId(*id),
                name: p.name.clone(),
            })
            .ok_or_else(|| Error::not_found(Subject::Pool(name.to_owned())))
    }

    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
        let state = self.state();
        let pool = state.pool(id)?;
        Ok(PoolInfo {
            id,
            name: pool.name.clone(),
        })
    }

    async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        let mut state = self.state();
        let pool = state.pool_mut(io.pool())?;
        if !pool.namespaces.insert(io.namespace().to_owned()) {
            return Err(Error::new(ErrorKind::AlreadyExists, io.namespace_subject()));
        }
        Ok(())
    }

    async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        let mut state = self.state();
        let pool = state.pool_of_mut(io)?;
        if pool.objects.keys().any(|(ns, _)| ns == io.namespace()) {
            return Err(Error::new(ErrorKind::Busy, io.namespace_subject())
                .with_detail("namespace still holds objects"));
        }
        pool.namespaces.remove(io.namespace());
        Ok(())
    }

    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
        let state = self.state();
        Ok(state.pool(pool)?.namespaces.iter().cloned().collect())
    }

    async fn config_key_get(&self, key: &str) -> Result<Bytes> {
        validate::config_key(key, None)?;
        self.state()
            .config
            .get(key)
            .cloned()
            .ok_or_else(|| Error::not_found(Subject::ConfigKey(key.to_owned())))
    }

    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
        validate::config_key(key, Some(&value))?;
        self.state().config.insert(key.to_owned(), value);
        Ok(())
    }

    async fn config_key_remove(&self, key: &str) -> Result<()> {
        validate::config_key(key, None)?;
        self.state()
            .config
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(Subject::ConfigKey(key.to_owned())))
    }

    async fn config_key_list(&self) -> Result<Vec<String>> {
        Ok(self.state().config.keys().cloned().collect())
    }

    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        let mut state = self.state();
        let pool = state.pool_mut(pool)?;
        pool.snap_seq += 1;
        Ok(SnapId(pool.snap_seq))
    }

    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        let mut state = self.state();
        let p = state.pool_mut(pool)?;
        if snap.0 == 0 || snap.0 > p.snap_seq {
            return Err(Error::not_found(Subject::Snapshot { pool, snap }));
        }
        p.removed_snaps.insert(snap.0);
        for object in p.objects.values_mut() {
            object.trim(snap);
        }
        p.objects.retain(|_, o| !o.is_gone());
        Ok(())
    }

    async fn read_op(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult> {
        validate::read_op(io, oid, op)?;
        let state = self.state();
        state.pool_of(io)?;
        if let Some(snap) = snap {
            state.check_snap(io.pool(), snap)?;
        }
        let subject = io.object_subject(oid);
        let content = state.object(io, oid)?.content_at(snap, &subject)?;
        object::evaluate_read(content, op, &subject)
    }

    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        validate::write_op(io, oid, op, snapc)?;
        let mut state = self.state();
        let pool = state.pool_of_mut(io)?;
        let key = object_key(io, oid);
        let subject = io.object_subject(oid);
        let mut object = pool.objects.remove(&key).unwrap_or_default();
        let last_version = &mut pool.last_version;
        let result = object.apply(op, snapc, &pool.removed_snaps, &subject, || {
            *last_version += 1;
            *last_version
        });
        let removed_head = object.head.is_none();
        if !object.is_gone() {
            pool.objects.insert(key, object);
        }
        if result.is_ok() && removed_head {
            state.drop_watches(|w| {
                !(w.pool == io.pool() && w.namespace == io.namespace() && w.oid == oid)
            });
        }
        result
    }

    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
        validate::io_ctx(io)?;
        let max = limits::page_len(opts.max);
        let state = self.state();
        let pool = state.pool_of(io)?;
        let ns = io.namespace().to_owned();
        let start = opts
            .cursor
            .clone()
            .unwrap_or_default()
            .max(opts.prefix.clone());
        let mut names = pool
            .objects
            .range((ns.clone(), start)..)
            .take_while(|((n, _), _)| *n == ns)
            .filter(|((_, name), _)| opts.cursor.as_ref().is_none_or(|c| name > c))
            .take_while(|((_, name), _)| name.starts_with(opts.prefix.as_str()))
            .filter(|(_, o)| o.head.is_some())
            .map(|((_, name), _)| name.clone());
        let page: Vec<String> = names.by_ref().take(max).collect();
        let next = if names.next().is_some() {
            page.last().cloned()
        } else {
            None
        };
        Ok(ListPage { names: page, next })
    }

    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
        validate::object_name(io, oid)?;
        let state = self.state();
        Ok(state.object(io, oid)?.snap_set())
    }

    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
        validate::object_name(io, oid)?;
        let mut state = self.state();
        let object = state.object(io, oid)?;
        if object.head.is_none() {
            return Err(Error::not_found(io.object_subject(oid)));
        }
        state.next_cookie += 1;
        let cookie = state.next_cookie;
        let (tx, rx) = mpsc::unbounded_channel();
        state.watches.insert(
            cookie,
            WatchEntry {
                client: self.client.clone(),
                alive: Arc::downgrade(&self.alive),
                pool: io.pool(),
                namespace: io.namespace().to_owned(),
                oid: oid.to_owned(),
                events: tx,
            },
        );
        Ok(Watch::new(cookie, rx))
    }

    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
        validate::object_name(io, oid)?;
        let mut state = self.state();
        match state.watches.get(&cookie) {
            Some(w) if w.client.id == self.client.id => {
                state.watches.remove(&cookie);
                Ok(())
            }
            _ => Err(Error::not_found(Subject::Watch(cookie))),
        }
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
        let pending = {
            let mut state = self.state();
            let object = state.object(io, oid)?;
            if object.head.is_none() {
                return Err(Error::not_found(io.object_subject(oid)));
            }
            state.next_notify += 1;
            let notify_id = state.next_notify;
            let mut pending = Vec::new();
            for (cookie, w) in state.live_watchers(io, oid) {
                let (tx, rx) = oneshot::channel();
                let note = Notification::new(notify_id, self.client.clone(), payload.clone(), tx);
                if w.events.send(WatchEvent::Notify(note)).is_ok() {
                    pending.push((
                        WatcherInfo {
                            client: w.client.clone(),
                            cookie,
                        },
                        rx,
                    ));
                }
            }
            pending
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut result = NotifyResult::default();
        for (watcher, rx) in pending {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(reply)) => result.acks.push(NotifyAck { watcher, reply }),
                _ => result.timeouts.push(watcher),
            }
        }
        Ok(result)
    }

    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
        validate::object_name(io, oid)?;
        let state = self.state();
        state.object(io, oid)?;
        Ok(state
            .live_watchers(io, oid)
            .into_iter()
            .map(|(cookie, w)| WatcherInfo {
                client: w.client.clone(),
                cookie,
            })
            .collect())
    }

    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
        validate::lock_options(io, oid, opts)?;
        let mut state = self.state();
        let pool = state.pool_of_mut(io)?;
        let key = object_key(io, oid);
        let subject = || Subject::Lock {
            oid: oid.to_owned(),
            name: opts.name.clone(),
        };
        let current = pool
            .objects
            .get(&key)
            .and_then(|o| o.locks.get(&opts.name).cloned());
        let next = LockState::acquire(current, &self.client, opts, SystemTime::now(), subject)?;
        pool.last_version += 1;
        let version = pool.last_version;
        let object = pool.objects.entry(key).or_default();
        let head = object.head.get_or_insert_with(object::Content::empty);
        head.version = version;
        object.locks.insert(opts.name.clone(), next);
        Ok(())
    }

    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
        self.release(io, oid, name, self.client.id, cookie)
    }

    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
        validate::lock_name(io, oid, name)?;
        let state = self.state();
        let object = state.object(io, oid)?;
        if object.head.is_none() {
            return Err(Error::not_found(io.object_subject(oid)));
        }
        let Some(lock) = object.locks.get(name).cloned() else {
            return Ok(LockInfo {
                kind: None,
                tag: String::new(),
                lockers: Vec::new(),
            });
        };
        lock.describe(SystemTime::now(), |client| Ok(state.client_alive(client)))
    }

    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
        validate::object_name(io, oid)?;
        let state = self.state();
        let object = state.object(io, oid)?;
        if object.head.is_none() {
            return Err(Error::not_found(io.object_subject(oid)));
        }
        let now = SystemTime::now();
        Ok(object
            .locks
            .iter()
            .filter(|(_, l)| l.holds.iter().any(|h| h.expiration.is_none_or(|e| e > now)))
            .map(|(name, _)| name.clone())
            .collect())
    }

    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        self.release(io, oid, name, client, cookie)
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

impl MemoryStore {
    fn release(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        validate::lock_name(io, oid, name)?;
        validate::lock_field(io, oid, "cookie", cookie)?;
        let mut state = self.state();
        let pool = state.pool_of_mut(io)?;
        let key = object_key(io, oid);
        let subject = || Subject::Lock {
            oid: oid.to_owned(),
            name: name.to_owned(),
        };
        let object = pool
            .objects
            .get_mut(&key)
            .filter(|o| o.head.is_some())
            .ok_or_else(|| Error::not_found(io.object_subject(oid)))?;
        let lock = object
            .locks
            .get_mut(name)
            .ok_or_else(|| Error::not_found(subject()))?;
        lock.expire(SystemTime::now());
        lock.release(client, cookie, subject)?;
        if lock.holds.is_empty() {
            object.locks.remove(name);
        }
        pool.last_version += 1;
        if let Some(head) = object.head.as_mut() {
            head.version = pool.last_version;
        }
        Ok(())
    }
}
