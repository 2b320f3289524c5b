//! The `remote` object-store backend: a client of a gateway.
//!
//! Every [`ObjectStore`] call is one request on a pipelined connection. When the connection
//! drops, the client reconnects (for up to [`RemoteConfig::reconnect_timeout`]) and resumes
//! its session at the gateway, which still holds its watches and locks and remembers the
//! answers of recent requests, so a resent request is never applied twice. If the gateway
//! lost the session (it restarted, or the grace period passed), requests that read are sent
//! again, a request that changes state and was in flight fails (its outcome is unknown), and
//! every watch reports [`WatchEvent::Disconnected`], as the contract says of an expired
//! session.

mod link;

pub use link::{TlsReader, TlsWriter, open};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::registry::BackendFactory;
use rbdx_objstore::{
    BackendConfig, ClientId, ClientInfo, Error, ErrorKind, IoCtx, ListOptions, ListPage, LockInfo,
    LockOptions, NotifyResult, ObjectStore, PoolId, PoolInfo, ReadOp, ReadResult, Result,
    SnapContext, SnapId, SnapSet, Subject, Watch, WatchEvent, WatcherInfo, WriteOp,
};
use tokio::sync::{Semaphore, mpsc};

use crate::keys::decode_secret;
use crate::message::{Reply, Request};
use crate::tls::parse_fingerprint;
use link::{Answer, Link, Watches};

/// How a client reaches a gateway.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `HOST:PORT` of the gateway.
    pub endpoint: String,
    /// The gateway certificate's fingerprint (`sha256:...`).
    pub fingerprint: String,
    /// The key's name, e.g. `client.site-b`.
    pub name: String,
    /// The key's secret.
    pub secret: Vec<u8>,
    /// Ask for zstd-compressed frames.
    pub compress: bool,
    /// Bytes per second sent to the gateway, if limited.
    pub bandwidth_limit: Option<u64>,
    /// How long a connection and its handshake may take.
    pub connect_timeout: Duration,
    /// How long to keep trying to reconnect after a dropped connection.
    pub reconnect_timeout: Duration,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("endpoint", &self.endpoint)
            .field("fingerprint", &self.fingerprint)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RemoteConfig {
    /// A configuration with the default timeouts, no compression and no bandwidth limit.
    pub fn new(endpoint: &str, fingerprint: &str, name: &str, key: &str) -> Result<RemoteConfig> {
        Ok(RemoteConfig {
            endpoint: endpoint.to_owned(),
            fingerprint: parse_fingerprint(fingerprint)?,
            name: crate::keys::entity_name(name)?,
            secret: decode_secret(key)?,
            compress: false,
            bandwidth_limit: None,
            connect_timeout: Duration::from_secs(2),
            reconnect_timeout: Duration::from_secs(60),
        })
    }
}

#[derive(Debug)]
struct Shared {
    cfg: RemoteConfig,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    watches: Watches,
    client: Mutex<ClientInfo>,
    next_id: AtomicU64,
    resumed: AtomicU64,
    slots: Semaphore,
    window: Semaphore,
    window_bytes: usize,
}

/// A session on a gateway's store.
#[derive(Debug)]
pub struct RemoteStore {
    shared: Arc<Shared>,
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        if let Ok(guard) = self.shared.link.try_lock()
            && let Some(link) = guard.as_ref()
        {
            link.bye();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unexpected(req: &str, reply: &Reply) -> Error {
    Error::new(ErrorKind::Protocol, Subject::Store)
        .with_detail(format!("the gateway answered {req} with {reply:?}"))
}

impl RemoteStore {
    /// Connects to the gateway and opens a session.
    pub async fn connect(cfg: RemoteConfig) -> Result<RemoteStore> {
        let watches: Watches = Arc::new(Mutex::new(link::WatchTable::default()));
        let link = link::connect(&cfg, None, watches.clone()).await?;
        let max = link.welcome.max_requests.clamp(1, 4096) as usize;
        let window = usize::try_from(link.welcome.window)
            .unwrap_or(usize::MAX)
            .clamp(1 << 20, 1 << 30);
        let client = link.welcome.client.clone();
        Ok(RemoteStore {
            shared: Arc::new(Shared {
                cfg,
                link: tokio::sync::Mutex::new(Some(Arc::new(link))),
                watches,
                client: Mutex::new(client),
                next_id: AtomicU64::new(1),
                resumed: AtomicU64::new(0),
                slots: Semaphore::new(max),
                window: Semaphore::new(window),
                window_bytes: window,
            }),
        })
    }

    /// Returns how many times a dropped connection was replaced with the session kept.
    pub fn resumed(&self) -> u64 {
        self.shared.resumed.load(Ordering::Relaxed)
    }

    /// Returns the live link, reconnecting if `lost` (the link a request was lost on) is still
    /// the current one. Returns the link and whether the session changed since `lost`.
    async fn link(&self, lost: Option<&Arc<Link>>) -> Result<(Arc<Link>, bool)> {
        let mut current = self.shared.link.lock().await;
        if let Some(link) = current.as_ref()
            && !link.is_dead()
            && lost.is_none_or(|l| !Arc::ptr_eq(l, link))
        {
            let changed = lost.is_some_and(|l| l.welcome.session != link.welcome.session);
            return Ok((link.clone(), changed));
        }
        let resume = current.as_ref().map(|l| l.resume());
        let old_session = resume.map(|r| r.session);
        let deadline = Instant::now() + self.shared.cfg.reconnect_timeout;
        let mut pause = Duration::from_millis(100);
        let link = loop {
            match link::connect(&self.shared.cfg, resume, self.shared.watches.clone()).await {
                Ok(link) => break link,
                Err(e) if Instant::now() >= deadline || e.kind() == ErrorKind::PermissionDenied => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("reconnecting to {}: {e}", self.shared.cfg.endpoint);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        };
        let changed = !link.welcome.resumed || old_session != Some(link.welcome.session);
        if changed {
            tracing::warn!(
                "the gateway at {} lost this client's session; watches must be set up again",
                self.shared.cfg.endpoint
            );
            *lock(&self.shared.client) = link.welcome.client.clone();
            let lost = lock(&self.shared.watches).drain();
            for w in lost {
                let _ = w.send(WatchEvent::Disconnected(
                    Error::new(ErrorKind::NotFound, Subject::Store)
                        .with_detail("the gateway lost this client's session"),
                ));
            }
        } else {
            self.shared.resumed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("resumed the session at {}", self.shared.cfg.endpoint);
        }
        let link = Arc::new(link);
        *current = Some(link.clone());
        Ok((link, changed))
    }

    /// Sends `req` and waits for its answer, across reconnects.
    async fn call(&self, req: Request) -> Result<Reply> {
        let payload = req.encode_rope();
        let _slot = self.shared.slots.acquire().await.map_err(closed)?;
        let credit = crate::codec::rope_len(&payload).min(self.shared.window_bytes) as u32;
        let _credit = self
            .shared
            .window
            .acquire_many(credit)
            .await
            .map_err(closed)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (mut link, _) = self.link(None).await?;
        loop {
            match link.call(id, payload.clone()).await {
                Answer::Reply(r) => return r,
                Answer::Lost(e) => {
                    tracing::debug!("{} lost: {e}", req.name());
                    let (next, changed) = self.link(Some(&link)).await?;
                    if changed && req.changes_state() {
                        return Err(Error::new(ErrorKind::Io, Subject::Store).with_detail(
                            format!(
                                "the gateway at {} lost this client's session while {} was in \
                             flight; whether it was applied is unknown",
                                self.shared.cfg.endpoint,
                                req.name()
                            ),
                        ));
                    }
                    link = next;
                }
            }
        }
    }
}

fn closed(_: tokio::sync::AcquireError) -> Error {
    Error::new(ErrorKind::Io, Subject::Store).with_detail("the remote store is closed")
}

macro_rules! expect {
    ($self:ident, $req:expr, $pat:pat => $out:expr) => {{
        let req = $req;
        let name = req.name();
        match $self.call(req).await? {
            $pat => Ok($out),
            other => Err(unexpected(name, &other)),
        }
    }};
}

#[async_trait]
impl ObjectStore for RemoteStore {
    fn client(&self) -> ClientInfo {
        lock(&self.shared.client).clone()
    }

    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        expect!(self, Request::PoolCreate(name.into()), Reply::PoolId(id) => id)
    }

    async fn pool_remove(&self, name: &str) -> Result<()> {
        expect!(self, Request::PoolRemove(name.into()), Reply::Unit => ())
    }

    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        expect!(self, Request::PoolList, Reply::Pools(p) => p)
    }

    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
        expect!(self, Request::PoolLookup(name.into()), Reply::Pool(p) => p)
    }

    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
        expect!(self, Request::PoolById(id), Reply::Pool(p) => p)
    }

    async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        expect!(self, Request::NamespaceCreate(io.clone()), Reply::Unit => ())
    }

    async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        expect!(self, Request::NamespaceRemove(io.clone()), Reply::Unit => ())
    }

    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
        expect!(self, Request::NamespaceList(pool), Reply::Names(n) => n)
    }

    async fn config_key_get(&self, key: &str) -> Result<Bytes> {
        expect!(self, Request::ConfigKeyGet(key.into()), Reply::Bytes(b) => b)
    }

    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
        expect!(self, Request::ConfigKeySet(key.into(), value), Reply::Unit => ())
    }

    async fn config_key_remove(&self, key: &str) -> Result<()> {
        expect!(self, Request::ConfigKeyRemove(key.into()), Reply::Unit => ())
    }

    async fn config_key_list(&self) -> Result<Vec<String>> {
        expect!(self, Request::ConfigKeyList, Reply::Names(n) => n)
    }

    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        expect!(self, Request::SnapCreate(pool), Reply::Snap(s) => s)
    }

    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        expect!(self, Request::SnapRemove(pool, snap), Reply::Unit => ())
    }

    async fn read_op(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult> {
        let req = Request::Read {
            io: io.clone(),
            oid: oid.into(),
            op: op.clone(),
            snap,
        };
        expect!(self, req, Reply::Read(r) => r)
    }

    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        let req = Request::Operate {
            io: io.clone(),
            oid: oid.into(),
            op: op.clone(),
            snapc: snapc.clone(),
        };
        expect!(self, req, Reply::Version(v) => v)
    }

    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
        expect!(self, Request::ListObjects(io.clone(), opts.clone()), Reply::Page(p) => p)
    }

    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
        expect!(self, Request::ListSnaps(io.clone(), oid.into()), Reply::SnapSet(s) => s)
    }

    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = lock(&self.shared.watches).generation;
        let cookie = expect!(self, Request::Watch(io.clone(), oid.into()), Reply::Watch(c) => c)?;
        let mut table = lock(&self.shared.watches);
        if table.generation == generation {
            table.add(cookie, tx);
        } else {
            // The session changed while the watch was being set up: it is already gone.
            let _ = tx.send(WatchEvent::Disconnected(
                Error::new(ErrorKind::NotFound, Subject::Store)
                    .with_detail("the gateway lost this client's session"),
            ));
        }
        drop(table);
        Ok(Watch::new(cookie, rx))
    }

    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
        lock(&self.shared.watches).remove(cookie);
        expect!(self, Request::Unwatch(io.clone(), oid.into(), cookie), Reply::Unit => ())
    }

    async fn notify(
        &self,
        io: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        let req = Request::Notify {
            io: io.clone(),
            oid: oid.into(),
            payload,
            timeout,
        };
        expect!(self, req, Reply::Notify(r) => r)
    }

    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
        expect!(self, Request::ListWatchers(io.clone(), oid.into()), Reply::Watchers(w) => w)
    }

    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
        expect!(self, Request::Lock(io.clone(), oid.into(), opts.clone()), Reply::Unit => ())
    }

    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
        let req = Request::Unlock(io.clone(), oid.into(), name.into(), cookie.into());
        expect!(self, req, Reply::Unit => ())
    }

    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
        expect!(self, Request::LockInfo(io.clone(), oid.into(), name.into()), Reply::Lock(l) => l)
    }

    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
        expect!(self, Request::LockList(io.clone(), oid.into()), Reply::Names(n) => n)
    }

    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        let req = Request::LockBreak(io.clone(), oid.into(), name.into(), client, cookie.into());
        expect!(self, req, Reply::Unit => ())
    }

    async fn flush(&self) -> Result<()> {
        expect!(self, Request::Flush, Reply::Unit => ())
    }
}

/// The `remote` backend: settings `endpoint`, `fingerprint`, `name`, `key` or `key_file`,
/// and optionally `compress` (`true`/`false`) and `bandwidth_limit` (bytes per second).
#[derive(Debug, Clone, Copy, Default)]
pub struct RemoteBackend;

/// Reads a `remote` backend configuration.
pub fn config_from(config: &BackendConfig) -> Result<RemoteConfig> {
    let invalid = |d: String| Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(d);
    let mut r = config.reader();
    let endpoint = r.required("endpoint")?;
    let fingerprint = r.required("fingerprint")?;
    let name = r.required("name")?;
    let key = r.optional("key");
    let key_file = r.optional_path("key_file");
    let compress = r.optional("compress");
    let bandwidth = r.optional("bandwidth_limit");
    r.finish()?;
    let key = match (key, key_file) {
        (Some(k), None) => k,
        (None, Some(path)) => {
            std::fs::read_to_string(&path).map_err(|e| Error::io(Subject::Path(path.clone()), e))?
        }
        (Some(_), Some(_)) => return Err(invalid("give key or key_file, not both".into())),
        (None, None) => {
            return Err(invalid(
                "backend \"remote\" needs key = \"...\" or key_file".into(),
            ));
        }
    };
    let mut cfg = RemoteConfig::new(&endpoint, &fingerprint, &name, &key)?;
    cfg.compress = match compress.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(format!(
                "compress = \"{other}\" is not true or false"
            )));
        }
    };
    cfg.bandwidth_limit =
        match bandwidth {
            None => None,
            Some(b) => Some(b.parse::<u64>().map_err(|_| {
                invalid(format!("bandwidth_limit = \"{b}\" is not bytes per second"))
            })?),
        };
    Ok(cfg)
}

#[async_trait]
impl BackendFactory for RemoteBackend {
    fn name(&self) -> &'static str {
        "remote"
    }

    async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(RemoteStore::connect(config_from(config)?).await?))
    }
}
