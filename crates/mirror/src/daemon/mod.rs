//! The mirror daemon (`rbdx mirror daemon`, the rbd-mirror equivalent).
//!
//! It runs at a receiving site. Every second it reads the mirroring configuration of each
//! pool namespace, connects to the peers it receives from, and makes sure every image
//! mirrored at a peer has a replayer here: one task per image, holding the image's lease so
//! that two daemons of a site never replay the same image. Images are shared between the
//! daemons that are alive; a lease not renewed for [`lease::LEASE`] is taken over.

mod journal;
pub mod lease;
mod relation;
mod replayer;
mod report;
pub mod site;
mod snapshot;
mod sync;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rbdx_image::{Cluster, Error, Result};
use rbdx_objstore::{IoCtx, ObjectStore};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::omap::{self, MIRRORING, json};
use crate::peer::{Direction, Peer, PeerSecret, Registration};
use crate::pool::{PoolConfig, PoolMode};
use crate::status::{Status, StatusState, now_secs};
pub use relation::{Relation, relation};
use replayer::Replayer;
use site::{Remote, Side, owner_of};
use sync::PeerStores;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The daemon's id, unique among the daemons of a site; a daemon restarted under the
    /// same id takes its images back at once.
    pub id: String,
    /// Initial copies (and resyncs) run at once.
    pub max_concurrent_syncs: usize,
    /// How often the configuration is read again.
    pub scan_interval: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            id: hostname(),
            max_concurrent_syncs: 5,
            scan_interval: Duration::from_millis(250),
        }
    }
}

/// Returns this host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Opens the store of a peer site.
#[async_trait]
pub trait Connector: Send + Sync + Debug {
    /// Connects to `peer`, with its recorded secret if there is one.
    async fn connect(
        &self,
        peer: &Peer,
        secret: Option<&PeerSecret>,
    ) -> Result<Arc<dyn ObjectStore>>;
}

/// Connects to a peer's gateway with the endpoint, fingerprint and key recorded for it.
#[derive(Debug, Default)]
pub struct GatewayConnector;

#[async_trait]
impl Connector for GatewayConnector {
    async fn connect(
        &self,
        peer: &Peer,
        secret: Option<&PeerSecret>,
    ) -> Result<Arc<dyn ObjectStore>> {
        let secret = secret.ok_or_else(|| {
            Error::invalid(format!(
                "peer {} has no recorded endpoint and key",
                peer.site_name
            ))
        })?;
        let cfg = rbdx_peer::RemoteConfig::new(
            &secret.endpoint,
            &secret.fingerprint,
            &peer.client_name,
            &secret.key,
        )
        .map_err(|e| Error::store(format!("peer {}", peer.site_name), e))?;
        let store = rbdx_peer::RemoteStore::connect(cfg).await.map_err(|e| {
            Error::store(
                format!(
                    "cannot reach peer {} at {}",
                    peer.site_name, secret.endpoint
                ),
                e,
            )
        })?;
        Ok(Arc::new(store))
    }
}

/// Connects to the peer of `local`'s pool namespace named by `peer` (its uuid or site name),
/// or to its only peer, as the daemon does (for commands that compare or copy between sites).
pub async fn connect_peer(local: &Side, peer: Option<&str>) -> Result<Remote> {
    let config = local.mirror().adopt().await?;
    let peers = config.peers();
    let chosen = match peer {
        Some(p) => peers
            .iter()
            .find(|x| x.uuid == p || x.site_name == p)
            .ok_or_else(|| Error::not_found(format!("no peer {p} in pool {}", local.pool_name)))?,
        None => match peers.as_slice() {
            [only] => only,
            [] => {
                return Err(Error::not_found(format!(
                    "pool {} has no mirror peer",
                    local.pool_name
                )));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "pool {} has several peers; name one with --peer",
                    local.pool_name
                )));
            }
        },
    };
    let owner = owner_of(chosen)?;
    let secret = local.mirror().peer_secret(&chosen.uuid).await?;
    let store = GatewayConnector.connect(chosen, secret.as_ref()).await?;
    let pool = store.pool_lookup(&local.pool_name).await.map_err(|e| {
        Error::store(
            format!("pool {} at peer {}", local.pool_name, chosen.site_name),
            e,
        )
    })?;
    Ok(Remote {
        peer: chosen.clone(),
        owner,
        side: Side {
            cluster: rbdx_journal::cluster(store),
            io: IoCtx::with_namespace(pool.id, local.io.namespace()),
            pool_name: local.pool_name.clone(),
        },
    })
}

/// What the replayers of a daemon share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub service: String,
    pub site_name: String,
    pub fsid: String,
    pub syncs: Semaphore,
    pub stores: Arc<PeerStores>,
    /// This site, with a migration opener that reaches the peers (initial copies read
    /// through it).
    pub cluster: Cluster,
}

/// A running replayer.
#[derive(Debug)]
struct Running {
    io: IoCtx,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    renewed: Instant,
}

/// A connected peer.
#[derive(Debug)]
struct Connection {
    store: Arc<dyn ObjectStore>,
    pinged: Option<Instant>,
}

/// The mirror daemon of one site.
#[derive(Debug)]
pub struct Daemon {
    cluster: Cluster,
    options: DaemonOptions,
    connector: Arc<dyn Connector>,
}

/// How often a lease is renewed.
const RENEW: Duration = Duration::from_secs(4);
/// How often a registration is written at a peer.
const PING: Duration = Duration::from_secs(30);
/// How often the daemon writes its heartbeat, reports the primaries and runs schedules.
const HEARTBEAT: Duration = Duration::from_secs(2);

type Key = (u64, String, String);

impl Daemon {
    /// Returns the daemon of the site `cluster` reaches.
    pub fn new(cluster: Cluster, options: DaemonOptions, connector: Arc<dyn Connector>) -> Daemon {
        Daemon {
            cluster,
            options,
            connector,
        }
    }

    /// Runs until `stop` resolves; then lets every replayer finish what it is applying, saves
    /// positions, and gives up its leases.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let store = self.cluster.store().clone();
        let site_name = crate::site::name(&store, true).await?;
        let fsid = crate::site::fsid(&store, true).await?;
        let stores = Arc::new(PeerStores::default());
        let cluster = self
            .cluster
            .clone()
            .with_sources(Arc::new(sync::opener(stores.clone())));
        let shared = Arc::new(Shared {
            cluster,
            fsid,
            service: format!("{} on {}", self.options.id, hostname()),
            site_name,
            syncs: Semaphore::new(self.options.max_concurrent_syncs.max(1)),
            stores,
        });
        let mut state = ScanState::default();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                scanned = self.scan(&shared, &mut state) => {
                    if let Err(e) = scanned {
                        tracing::warn!("mirror daemon: {e}");
                    }
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(self.options.scan_interval) => {}
                _ = state.wake.notified() => {}
            }
        }
        tracing::info!("mirror daemon: stopping {} replayers", state.running.len());
        for r in state.running.values() {
            let _ = r.stop.send(true);
        }
        for ((_, _, gid), r) in state.running.drain() {
            let _ = r.task.await;
            let _ = lease::release(&store, &r.io, &gid, &self.options.id).await;
        }
        Ok(())
    }

    /// Reads every pool namespace once and starts, renews or ends replayers.
    async fn scan(&self, shared: &Arc<Shared>, state: &mut ScanState) -> Result<()> {
        let store = self.cluster.store().clone();
        let finished: Vec<Key> = state
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            if let Some(r) = state.running.remove(&key) {
                // Free at once for another daemon (a stopped or finished replayer).
                let _ = lease::release(&store, &r.io, &key.2, &self.options.id).await;
            }
        }
        let mut renewing = Vec::new();
        for (key, r) in &state.running {
            if r.renewed.elapsed() >= RENEW {
                renewing.push(key.clone());
            }
        }
        for key in renewing {
            let Some(r) = state.running.get_mut(&key) else {
                continue;
            };
            match lease::take(&store, &r.io, &key.2, &self.options.id).await {
                Ok(true) => r.renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!("image {}: lease taken by another daemon", key.2);
                    let _ = r.stop.send(true);
                }
                Err(e) => tracing::warn!("image {}: cannot renew its lease: {e}", key.2),
            }
        }
        let pools = store
            .pool_list()
            .await
            .map_err(|e| Error::store("cannot list pools", e))?;
        for pool in pools {
            let mut namespaces = vec![String::new()];
            if let Ok(more) = store.namespace_list(pool.id).await {
                namespaces.extend(more);
            }
            for ns in namespaces {
                let side = Side {
                    cluster: shared.cluster.clone(),
                    io: IoCtx::with_namespace(pool.id, &ns),
                    pool_name: pool.name.clone(),
                };
                if let Err(e) = self.scan_pool(shared, state, &side).await {
                    tracing::warn!("mirror daemon: pool {}: {e}", pool.name);
                }
            }
        }
        Ok(())
    }

    async fn scan_pool(
        &self,
        shared: &Arc<Shared>,
        state: &mut ScanState,
        local: &Side,
    ) -> Result<()> {
        let config = local.mirror().adopt().await?;
        if config.mode() == PoolMode::Disabled {
            return Ok(());
        }
        state.watch(local.store(), &local.io, "local");
        let pool_key = (local.io.pool().0, local.io.namespace().to_owned());
        let due = state
            .reported
            .get(&pool_key)
            .is_none_or(|t| t.elapsed() >= HEARTBEAT);
        if due {
            state
                .live
                .insert(pool_key.clone(), self.heartbeat(local, &config).await?);
            self.report_primaries(shared, state, local, &config).await;
            state.reported.insert(pool_key.clone(), Instant::now());
        }
        let live = state.live.get(&pool_key).copied().unwrap_or(1);
        for peer in config.peers() {
            if !peer.direction.receives() {
                continue;
            }
            let remote = match self.connect(shared, state, local, &config, &peer).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("mirror daemon: peer {}: {e}", peer.site_name);
                    continue;
                }
            };
            state.watch(remote.side.store(), &remote.side.io, &peer.uuid);
            let remote_config = remote.side.mirror().load().await?;
            if remote_config.mode() == PoolMode::Disabled {
                continue;
            }
            let mut wanted: BTreeSet<String> = remote_config
                .images()
                .into_values()
                .map(|r| r.global_id)
                .collect();
            wanted.extend(config.images().into_values().map(|r| r.global_id));
            let share = wanted.len().div_ceil(live.max(1));
            self.give_back(state, local, share);
            for gid in wanted {
                let key = (
                    local.io.pool().0,
                    local.io.namespace().to_owned(),
                    gid.clone(),
                );
                if state.running.contains_key(&key) {
                    continue;
                }
                let mine = state
                    .running
                    .keys()
                    .filter(|(p, n, _)| *p == key.0 && *n == key.1)
                    .count();
                if mine >= share {
                    continue;
                }
                if !lease::take(local.store(), &local.io, &gid, &self.options.id).await? {
                    continue;
                }
                let (tx, rx) = watch::channel(false);
                let replayer = Replayer::new(
                    local.clone(),
                    remote.clone(),
                    gid.clone(),
                    rx,
                    shared.clone(),
                );
                let task = tokio::spawn(async move { replayer.run().await });
                state.running.insert(
                    key,
                    Running {
                        io: local.io.clone(),
                        stop: tx,
                        task,
                        renewed: Instant::now(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Stops the replayers of pool namespace `local` beyond `share` (another daemon came up),
    /// so that the others can take their images.
    fn give_back(&self, state: &mut ScanState, local: &Side, share: usize) {
        let mine: Vec<&Key> = state
            .running
            .iter()
            .filter(|((p, n, _), r)| {
                *p == local.io.pool().0 && *n == local.io.namespace() && !*r.stop.borrow()
            })
            .map(|(k, _)| k)
            .collect();
        for key in mine.iter().skip(share) {
            if let Some(r) = state.running.get(*key) {
                tracing::info!("image {}: leaving it to another daemon", key.2);
                let _ = r.stop.send(true);
            }
        }
    }

    /// Writes this daemon's heartbeat; returns how many daemons of the site are alive.
    async fn heartbeat(&self, local: &Side, config: &PoolConfig) -> Result<usize> {
        let record = lease::DaemonRecord {
            id: self.options.id.clone(),
            hostname: hostname(),
            pid: std::process::id(),
            heartbeat: now_secs(),
        };
        local
            .mirror()
            .update(
                vec![(format!("daemon_{}", self.options.id), json(&record))],
                Vec::new(),
            )
            .await?;
        let now = now_secs();
        let others = config
            .records::<lease::DaemonRecord>("daemon_")
            .into_values()
            .filter(|d| d.id != self.options.id && now.saturating_sub(d.heartbeat) <= 15)
            .count();
        Ok(others + 1)
    }

    /// Reports the images that are primary here, and remembers them (no replayer needed).
    async fn report_primaries(
        &self,
        shared: &Arc<Shared>,
        state: &mut ScanState,
        local: &Side,
        config: &PoolConfig,
    ) {
        let statuses = config.statuses();
        let schedules = match crate::schedule::load(local.store()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("mirror daemon: snapshot schedules: {e}");
                Vec::new()
            }
        };
        for (id, record) in config.images() {
            let key = (
                local.io.pool().0,
                local.io.namespace().to_owned(),
                record.global_id.clone(),
            );
            let (name, header) = match local.image(&id).await {
                Ok(Some(found)) => found,
                _ => continue,
            };
            if !header.mirror.as_ref().is_some_and(|m| m.primary) {
                continue;
            }
            let replayed = state.running.contains_key(&key);
            if record.mode == rbdx_image::mirroring::MirrorMode::Snapshot
                && let Err(e) = run_schedule(local, &schedules, &name, &header).await
            {
                tracing::warn!("image {name}: scheduled mirror snapshot: {e}");
            }
            if replayed {
                // Its replayer reports it, at both sites.
                continue;
            }
            let fresh = statuses.get(&record.global_id).is_some_and(|s| {
                s.state == StatusState::Stopped
                    && now_secs().saturating_sub(s.last_update) < report::REFRESH.as_secs()
            });
            if fresh {
                continue;
            }
            let status = Status {
                state: StatusState::Stopped,
                description: "local image is primary".into(),
                last_update: now_secs(),
                service: shared.service.clone(),
                site_name: shared.site_name.clone(),
                synced: None,
            };
            if let Err(e) = local.mirror().put_status(&record.global_id, &status).await {
                tracing::warn!("cannot write the status of image {}: {e}", record.global_id);
            }
        }
    }

    /// Returns the peer's side of this pool namespace, connecting (and announcing this site
    /// there) if need be; `None` if the peer has no such pool.
    async fn connect(
        &self,
        shared: &Arc<Shared>,
        state: &mut ScanState,
        local: &Side,
        config: &PoolConfig,
        peer: &Peer,
    ) -> Result<Option<Remote>> {
        let owner = owner_of(peer)?;
        if !state.connections.contains_key(&peer.uuid) {
            let secret = local.mirror().peer_secret(&peer.uuid).await?;
            let store = self.connector.connect(peer, secret.as_ref()).await?;
            state.connections.insert(
                peer.uuid.clone(),
                Connection {
                    store,
                    pinged: None,
                },
            );
        }
        let connection = state
            .connections
            .get_mut(&peer.uuid)
            .ok_or_else(|| Error::busy("peer connection lost"))?;
        let store = connection.store.clone();
        let pool = match store.pool_lookup(&local.pool_name).await {
            Ok(p) => p,
            Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                state.connections.remove(&peer.uuid);
                return Err(Error::store(format!("peer {}", peer.site_name), e));
            }
        };
        let io = IoCtx::with_namespace(pool.id, local.io.namespace());
        if connection.pinged.is_none_or(|t| t.elapsed() >= PING) {
            ping(&store, &io, &owner, shared, config).await?;
            connection.pinged = Some(Instant::now());
        }
        Ok(Some(Remote {
            peer: peer.clone(),
            owner,
            side: Side {
                cluster: rbdx_journal::cluster(store),
                io,
                pool_name: local.pool_name.clone(),
            },
        }))
    }
}

/// Announces this site at a peer (`peer.<owner>`), so that it lists this site as a peer
/// that receives from it; a registration the peer has not adopted yet is left alone.
async fn ping(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    owner: &str,
    shared: &Shared,
    config: &PoolConfig,
) -> Result<()> {
    let key = format!("peer.{owner}");
    let (entries, _) = omap::read(store, io, MIRRORING, &key).await?;
    let existing: Option<Registration> = entries
        .get(&key)
        .and_then(|v| crate::omap::parse(&key, v).ok());
    if existing.as_ref().is_some_and(|r| r.secret.is_some()) {
        return Ok(());
    }
    let registration = Registration {
        site_name: shared.site_name.clone(),
        fsid: shared.fsid.clone(),
        mirror_uuid: config.mirror_uuid().unwrap_or_default(),
        direction: match existing.map(|r| r.direction) {
            Some(Direction::RxTx) => Direction::RxTx,
            _ => Direction::TxOnly,
        },
        client_name: None,
        secret: None,
        updated: now_secs(),
    };
    omap::change(
        store,
        io,
        MIRRORING,
        vec![(key, json(&registration))],
        Vec::new(),
        None,
    )
    .await
    .map_err(|e| Error::store("cannot announce this site at the peer", e))
}

impl ScanState {
    /// Watches the `rbd_mirroring` object of `io` in `store` (of site `site`), unless it is
    /// watched already, so that a change wakes the scan at once.
    fn watch(&mut self, store: &Arc<dyn ObjectStore>, io: &IoCtx, site: &str) {
        let key = (site.to_owned(), io.pool().0, io.namespace().to_owned());
        if self.watches.get(&key).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (store, io, wake) = (store.clone(), io.clone(), self.wake.clone());
        let task = tokio::spawn(async move {
            let Ok(mut watch) = store.watch(&io, MIRRORING).await else {
                return;
            };
            while let Some(event) = watch.next().await {
                match event {
                    rbdx_objstore::WatchEvent::Notify(n) => {
                        n.ack(bytes::Bytes::new());
                        wake.notify_one();
                    }
                    _ => break,
                }
            }
        });
        self.watches.insert(key, task);
    }
}

impl Drop for ScanState {
    fn drop(&mut self) {
        for task in self.watches.values() {
            task.abort();
        }
    }
}

/// Takes a mirror snapshot of primary image `name` if a schedule is due since its newest.
async fn run_schedule(
    local: &Side,
    schedules: &[crate::schedule::Schedule],
    name: &str,
    header: &rbdx_image::Header,
) -> Result<()> {
    let applying =
        crate::schedule::applying(schedules, &local.pool_name, local.io.namespace(), name);
    if applying.is_empty() {
        return Ok(());
    }
    let now = now_secs() as i64;
    let newest = header
        .snapshots
        .values()
        .filter(|s| s.namespace.mirror().is_some_and(|m| m.state.is_primary()))
        .map(|s| s.timestamp.0 as i64)
        .max()
        .unwrap_or(i64::MIN);
    let mut due = false;
    for s in applying {
        if s.last_due(now)?.is_some_and(|t| newest < t) {
            due = true;
        }
    }
    if due {
        let id = crate::image::snapshot(&local.images(), name).await?;
        tracing::info!("image {name}: scheduled mirror snapshot {id}");
    }
    Ok(())
}

/// The replayers and connections a daemon keeps between scans.
#[derive(Debug, Default)]
struct ScanState {
    /// Woken when a watched mirroring configuration changes.
    wake: Arc<tokio::sync::Notify>,
    /// Watches of `rbd_mirroring` objects, by (site, pool, namespace).
    watches: HashMap<(String, u64, String), JoinHandle<()>>,
    running: HashMap<Key, Running>,
    connections: HashMap<String, Connection>,
    /// When each pool namespace's heartbeat and primaries were last written.
    reported: HashMap<(u64, String), Instant>,
    /// How many daemons each pool namespace has alive.
    live: HashMap<(u64, String), usize>,
}
