//! A pool namespace's mirroring configuration: the omap of its `rbd_mirroring` object.
//!
//! Keys written only by this site: `mode`, `mirror_uuid`, `peer_<uuid>`, `image_<image id>`,
//! `global_<global id>`, `status_<global id>`, `lease_<global id>`, `daemon_<id>`. Keys a
//! peer writes under its own key name: `peer.<owner>` and `status.<owner>.<global id>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::mirroring::MirrorMode;
use rbdx_image::{Error, ErrorKind, Result};
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::omap::{self, MIRRORING, json, parse};
use crate::peer::{Direction, Peer, PeerSecret, Registration, secret_key};
use crate::status::Status;

/// A pool's mirroring mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Not mirrored.
    Disabled,
    /// Images are mirrored once enabled one by one.
    Image,
    /// Every image with the journaling feature is mirrored (journal mode).
    Pool,
}

impl PoolMode {
    /// Parses `image`, `pool` or `disabled`.
    pub fn parse(text: &str) -> Option<PoolMode> {
        match text {
            "image" => Some(PoolMode::Image),
            "pool" => Some(PoolMode::Pool),
            "disabled" => Some(PoolMode::Disabled),
            _ => None,
        }
    }

    /// Returns the name `rbd` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Disabled => "disabled",
            PoolMode::Image => "image",
            PoolMode::Pool => "pool",
        }
    }
}

/// Whether an image's mirroring is on or being turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Mirrored.
    Enabled,
    /// Being disabled: peers remove their copies.
    Disabling,
}

/// A mirrored image of the pool (`image_<image id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The id that names the image at every site.
    pub global_id: String,
    /// Journal or snapshot mode.
    pub mode: MirrorMode,
    /// Enabled or being disabled.
    pub state: ImageState,
}

/// Everything `rbd_mirroring` holds, read at once.
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Every entry, by key.
    pub raw: BTreeMap<String, Bytes>,
    /// The object's version when read.
    pub version: u64,
}

impl PoolConfig {
    /// Returns the mode.
    pub fn mode(&self) -> PoolMode {
        self.raw
            .get("mode")
            .and_then(|v| PoolMode::parse(&String::from_utf8_lossy(v)))
            .unwrap_or(PoolMode::Disabled)
    }

    /// Returns the pool's mirror UUID, if mirroring was ever enabled.
    pub fn mirror_uuid(&self) -> Option<String> {
        self.raw
            .get("mirror_uuid")
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Returns the records under `prefix`, keyed by what follows it; records that do not
    /// parse are skipped with a warning.
    pub fn records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> BTreeMap<String, T> {
        self.raw
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| match parse::<T>(k, v) {
                Ok(r) => Some((k[prefix.len()..].to_owned(), r)),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            })
            .collect()
    }

    /// Returns the peers.
    pub fn peers(&self) -> Vec<Peer> {
        self.records::<Peer>("peer_").into_values().collect()
    }

    /// Returns the mirrored images by image id.
    pub fn images(&self) -> BTreeMap<String, ImageRecord> {
        self.records("image_")
    }

    /// Returns the image id of the image with global id `global_id`, if it is here.
    pub fn image_by_global(&self, global_id: &str) -> Option<String> {
        self.raw
            .get(&format!("global_{global_id}"))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Returns the registrations peers wrote, by key owner.
    pub fn registrations(&self) -> BTreeMap<String, Registration> {
        self.records::<Registration>("peer.")
            .into_iter()
            .filter(|(owner, _)| !owner.contains('.'))
            .collect()
    }

    /// Returns the statuses this site's daemons wrote, by global id.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.records("status_")
    }

    /// Returns the statuses peers' daemons wrote, by (key owner, global id).
    pub fn peer_statuses(&self) -> BTreeMap<(String, String), Status> {
        self.records::<Status>("status.")
            .into_iter()
            .filter_map(|(rest, s)| {
                let (owner, gid) = rest.split_once('.')?;
                Some(((owner.to_owned(), gid.to_owned()), s))
            })
            .collect()
    }
}

/// The mirroring configuration of one pool namespace.
#[derive(Debug, Clone)]
pub struct PoolMirror {
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
}

impl PoolMirror {
    /// Returns the configuration of pool namespace `io`.
    pub fn new(store: Arc<dyn ObjectStore>, io: IoCtx) -> PoolMirror {
        PoolMirror { store, io }
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Returns the pool namespace.
    pub fn io_ctx(&self) -> &IoCtx {
        &self.io
    }

    /// Reads everything.
    pub async fn load(&self) -> Result<PoolConfig> {
        let (raw, version) = omap::read(&self.store, &self.io, MIRRORING, "").await?;
        Ok(PoolConfig { raw, version })
    }

    /// Sets and removes entries.
    pub async fn update(&self, set: Vec<(String, Bytes)>, remove: Vec<String>) -> Result<()> {
        omap::update(&self.store, &self.io, set, remove).await
    }

    /// Sets the mode; a pool's mirror UUID is made the first time.
    pub async fn set_mode(&self, mode: PoolMode) -> Result<()> {
        let config = self.load().await?;
        let mut set = vec![("mode".to_owned(), Bytes::from(mode.as_str()))];
        if config.mirror_uuid().is_none() {
            set.push(("mirror_uuid".into(), Bytes::from(rbdx_image::new_uuid()?)));
        }
        self.update(set, Vec::new()).await
    }

    /// Writes a peer record.
    pub async fn put_peer(&self, peer: &Peer) -> Result<()> {
        self.update(
            vec![(format!("peer_{}", peer.uuid), json(peer))],
            Vec::new(),
        )
        .await
    }

    /// Removes a peer record and its secret.
    pub async fn remove_peer(&self, uuid: &str) -> Result<()> {
        self.update(Vec::new(), vec![format!("peer_{uuid}")])
            .await?;
        match self
            .store
            .config_key_remove(&secret_key(self.io.pool().0, uuid))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == StoreKind::NotFound => Ok(()),
            Err(e) => Err(Error::store("cannot remove the peer's secret", e)),
        }
    }

    /// Returns how to reach peer `uuid`, if recorded.
    pub async fn peer_secret(&self, uuid: &str) -> Result<Option<PeerSecret>> {
        let key = secret_key(self.io.pool().0, uuid);
        match self.store.config_key_get(&key).await {
            Ok(v) => Ok(Some(parse(&key, &v)?)),
            Err(e) if e.kind() == StoreKind::NotFound => Ok(None),
            Err(e) => Err(Error::store(format!("cannot read config-key {key}"), e)),
        }
    }

    /// Records how to reach peer `uuid`.
    pub async fn set_peer_secret(&self, uuid: &str, secret: &PeerSecret) -> Result<()> {
        let key = secret_key(self.io.pool().0, uuid);
        self.store
            .config_key_set(&key, json(secret))
            .await
            .map_err(|e| Error::store(format!("cannot set config-key {key}"), e))
    }

    /// Tells the mirror daemons watching this configuration (at this site, and peers' through
    /// the gateway) that its images changed; best effort.
    pub async fn announce(&self) {
        let _ = self
            .store
            .notify(
                &self.io,
                MIRRORING,
                Bytes::from_static(b"mirroring_update"),
                std::time::Duration::from_secs(1),
            )
            .await;
    }

    /// Writes an image record and its global id index.
    pub async fn put_image(&self, image_id: &str, record: &ImageRecord) -> Result<()> {
        self.update(
            vec![
                (format!("image_{image_id}"), json(record)),
                (
                    format!("global_{}", record.global_id),
                    Bytes::from(image_id.to_owned()),
                ),
            ],
            Vec::new(),
        )
        .await
    }

    /// Removes an image record with its index, status and lease.
    pub async fn remove_image(&self, image_id: &str, global_id: &str) -> Result<()> {
        self.update(
            Vec::new(),
            vec![
                format!("image_{image_id}"),
                format!("global_{global_id}"),
                format!("status_{global_id}"),
                format!("lease_{global_id}"),
            ],
        )
        .await
    }

    /// Writes this site's status of image `global_id`.
    pub async fn put_status(&self, global_id: &str, status: &Status) -> Result<()> {
        self.update(
            vec![(format!("status_{global_id}"), json(status))],
            Vec::new(),
        )
        .await
    }

    /// Turns the registrations peers wrote into peer records (with the secret of a two-way
    /// import moved to a config-key); returns the configuration as it is afterwards.
    pub async fn adopt(&self) -> Result<PoolConfig> {
        let config = self.load().await?;
        let mut changed = false;
        for (owner, reg) in config.registrations() {
            let peers = config.peers();
            let existing = peers.iter().find(|p| {
                (!p.fsid.is_empty() && p.fsid == reg.fsid) || p.site_name == reg.site_name
            });
            let mut peer = match existing {
                Some(p) => p.clone(),
                None => Peer {
                    uuid: rbdx_image::new_uuid()?,
                    site_name: reg.site_name.clone(),
                    mirror_uuid: String::new(),
                    direction: Direction::TxOnly,
                    client_name: String::new(),
                    fsid: reg.fsid.clone(),
                },
            };
            let before = peer.clone();
            peer.site_name = reg.site_name.clone();
            peer.fsid = reg.fsid.clone();
            peer.mirror_uuid = reg.mirror_uuid.clone();
            if let Some(client) = &reg.client_name {
                peer.client_name = client.clone();
            }
            if reg.secret.is_some()
                || reg.direction == Direction::RxTx
                || peer.direction == Direction::RxOnly
            {
                peer.direction = Direction::RxTx;
            }
            if let Some(secret) = &reg.secret {
                self.set_peer_secret(&peer.uuid, secret).await?;
                let mut kept = reg.clone();
                kept.secret = None;
                self.update(vec![(format!("peer.{owner}"), json(&kept))], Vec::new())
                    .await?;
                changed = true;
            }
            if existing.is_none() || peer != before {
                self.put_peer(&peer).await?;
                changed = true;
            }
        }
        if changed {
            self.load().await
        } else {
            Ok(config)
        }
    }
}

/// Refuses a pool whose mirroring is disabled.
pub fn require_enabled(config: &PoolConfig, pool: &str) -> Result<()> {
    if config.mode() == PoolMode::Disabled {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("mirroring is not enabled on pool {pool}"),
        ));
    }
    Ok(())
}
