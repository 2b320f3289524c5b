//! The gateway: serves a site's store to its peers on one TLS port.
//!
//! Each authenticated client gets a session in the served store (opened through a
//! [`SessionSource`]); a session outlives a dropped connection for [`GatewayOptions::session_grace`]
//! so the client can resume it. Removing a key cuts its sessions within a second.

mod connection;
mod dispatch;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::{BackendConfig, BackendRegistry, ErrorKind, MemoryStore, ObjectStore, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::handshake::{Resume, random};
use crate::keys::{KeyRecord, Keys, TLS_KEY};
use crate::tls::Identity;
use session::Session;

/// Opens sessions on the served store, one per client session.
#[async_trait]
pub trait SessionSource: Send + Sync + std::fmt::Debug {
    /// Opens a new session, as a new process would.
    async fn open(&self) -> Result<Arc<dyn ObjectStore>>;
}

/// Sessions on a memory cluster (for tests and demos).
#[async_trait]
impl SessionSource for MemoryStore {
    async fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(self.connect()))
    }
}

/// Sessions opened from a backend configuration through a registry.
#[derive(Debug)]
pub struct BackendSource {
    /// The backends.
    pub registry: BackendRegistry,
    /// The served store's configuration.
    pub config: BackendConfig,
}

#[async_trait]
impl SessionSource for BackendSource {
    async fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        self.registry.open(&self.config).await
    }
}

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Bytes per second sent to each client, if limited.
    pub bandwidth_limit: Option<u64>,
    /// How long a session whose connection dropped is kept for the client to resume.
    pub session_grace: Duration,
    /// The most requests a client may have in flight.
    pub max_requests: u32,
    /// The flow-control window, in bytes, in each direction.
    pub window: u64,
    /// How long TLS and the handshake may take.
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent (clients ping every few seconds).
    pub idle_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            bandwidth_limit: None,
            session_grace: Duration::from_secs(30),
            max_requests: 256,
            window: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What connections share.
pub(crate) struct GatewayInner {
    source: Arc<dyn SessionSource>,
    keys: Keys,
    acceptor: TlsAcceptor,
    opts: GatewayOptions,
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    serial: AtomicU64,
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for GatewayInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayInner")
            .field("source", &self.source)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl GatewayInner {
    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the session to resume, or a new one; and whether it was resumed.
    async fn session_for(
        &self,
        key: &KeyRecord,
        resume: Option<Resume>,
    ) -> Result<(Arc<Session>, bool)> {
        if let Some(r) = resume {
            let found = self.table().get(&r.session).cloned();
            if let Some(s) = found
                && s.token == r.token
                && s.key.name == key.name
                && !s.is_closed()
            {
                return Ok((s, true));
            }
        }
        let store = self.source.open().await?;
        let session = Arc::new(Session::new(
            u64::from_le_bytes(random::<8>()),
            random::<16>(),
            key.clone(),
            store,
        ));
        self.table().insert(session.id, session.clone());
        Ok((session, false))
    }

    async fn end_session(&self, session: &Arc<Session>) {
        {
            let mut table = self.table();
            table.remove(&session.id);
            session.mark_closed();
        }
        session.close().await;
    }

    /// Ends sessions detached for longer than the grace period, and those whose key was
    /// removed or changed.
    async fn sweep(&self) {
        let all: Vec<Arc<Session>> = self.table().values().cloned().collect();
        if all.is_empty() {
            return;
        }
        let keys = self.keys.list().await.ok();
        for s in all {
            let expired = s
                .detached_for()
                .is_some_and(|d| d > self.opts.session_grace);
            let revoked = keys.as_ref().is_some_and(|keys| {
                !keys
                    .iter()
                    .any(|k| k.name == s.key.name && k.secret == s.key.secret)
            });
            if revoked {
                tracing::info!("key {} was removed: session {:x} cut", s.key.name, s.id);
            }
            if expired || revoked {
                self.end_session(&s).await;
            }
        }
    }
}

/// A gateway ready to serve.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
    fingerprint: String,
}

/// Returns the gateway certificate kept in `store`, making and keeping one the first time.
pub async fn stored_identity(store: &Arc<dyn ObjectStore>) -> Result<Identity> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stored {
        cert_pem: String,
        key_pem: String,
    }
    match store.config_key_get(TLS_KEY).await {
        Ok(value) => {
            let s: Stored = serde_json::from_slice(&value).map_err(|e| {
                rbdx_objstore::Error::new(
                    ErrorKind::Corrupt,
                    rbdx_objstore::Subject::ConfigKey(TLS_KEY.into()),
                )
                .with_detail(e.to_string())
            })?;
            Ok(Identity {
                cert_pem: s.cert_pem,
                key_pem: s.key_pem,
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let id = Identity::generate()?;
            let s = Stored {
                cert_pem: id.cert_pem.clone(),
                key_pem: id.key_pem.clone(),
            };
            let json = serde_json::to_vec(&s).unwrap_or_default();
            store.config_key_set(TLS_KEY, Bytes::from(json)).await?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

impl Gateway {
    /// Prepares a gateway serving `source`'s store with `identity`; `admin` is a session on
    /// the same store where the keys are kept.
    pub fn new(
        source: Arc<dyn SessionSource>,
        admin: Arc<dyn ObjectStore>,
        identity: &Identity,
        opts: GatewayOptions,
    ) -> Result<Gateway> {
        let acceptor = TlsAcceptor::from(identity.server_config()?);
        let (stopping, _) = watch::channel(false);
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                source,
                keys: Keys::new(admin),
                acceptor,
                opts,
                sessions: Mutex::new(HashMap::new()),
                serial: AtomicU64::new(1),
                stopping,
            }),
            fingerprint: identity.fingerprint()?,
        })
    }

    /// Returns the fingerprint of the certificate the gateway presents.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Returns the number of sessions (attached or waiting for their client).
    pub fn sessions(&self) -> usize {
        self.inner.table().len()
    }

    /// Serves connections from `listener` until `stop` completes; then answers what is in
    /// flight, closes every connection and ends every session.
    pub async fn serve(
        &self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let inner = self.inner.clone();
        let sweeper = tokio::spawn({
            let inner = inner.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    inner.sweep().await;
                }
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tasks.spawn(connection::serve(inner.clone(), tcp, peer));
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        inner.stopping.send_replace(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), drain)
            .await
            .is_err()
        {
            tasks.abort_all();
        }
        sweeper.abort();
        let all: Vec<Arc<Session>> = inner.table().drain().map(|(_, s)| s).collect();
        for s in all {
            s.close().await;
        }
        Ok(())
    }
}
