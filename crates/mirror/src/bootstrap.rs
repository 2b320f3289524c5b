//! `mirror pool peer bootstrap create|import`: exchanging a token makes two sites peers.

use std::sync::Arc;

use rbdx_image::{Error, ErrorKind, Result};
use rbdx_objstore::{IoCtx, ObjectStore};
use rbdx_peer::{Keys, Profile, RemoteConfig, RemoteStore};

use crate::omap::{self, MIRRORING, json};
use crate::peer::{Direction, Peer, PeerSecret, Registration};
use crate::pool::{PoolMirror, PoolMode, require_enabled};
use crate::status::now_secs;
use crate::token::Token;

/// Prefix of the keys bootstrap tokens carry.
pub const KEY_PREFIX: &str = "rbd-mirror-peer-";

fn pool_io(pool: rbdx_objstore::PoolInfo) -> IoCtx {
    IoCtx::new(pool.id)
}

/// Makes a new `mirror-peer` key for pool `pool` and returns its name (without `client.`)
/// and secret.
async fn new_key(store: &Arc<dyn ObjectStore>, pool: &str) -> Result<(String, String)> {
    let suffix: String = rbdx_image::new_uuid()?
        .chars()
        .filter(|c| *c != '-')
        .take(12)
        .collect();
    let name = format!("{KEY_PREFIX}{suffix}");
    let record = Keys::new(store.clone())
        .create(&name, Profile::MirrorPeer, vec![pool.to_owned()])
        .await
        .map_err(|e| Error::store("cannot create the peer's key", e))?;
    Ok((name, record.secret))
}

/// Creates a bootstrap token for pool `pool`: a new `mirror-peer` key and where this site's
/// gateway serves (`endpoint` overrides the address it announced).
pub async fn create(
    store: &Arc<dyn ObjectStore>,
    pool: &str,
    site_name: Option<&str>,
    endpoint: Option<String>,
) -> Result<Token> {
    let pool_id = store
        .pool_lookup(pool)
        .await
        .map_err(|e| Error::store(format!("pool {pool}"), e))?;
    let config = PoolMirror::new(store.clone(), pool_io(pool_id))
        .load()
        .await?;
    require_enabled(&config, pool)?;
    if let Some(name) = site_name {
        crate::site::set_name(store, name).await?;
    }
    let (endpoint, fingerprint) = rbdx_peer::served::announced(store, endpoint)
        .await
        .map_err(|e| Error::store("this site's gateway", e))?;
    let fsid = crate::site::fsid(store, true).await?;
    let site_name = crate::site::name(store, true).await?;
    let (client_id, key) = new_key(store, pool).await?;
    Ok(Token {
        fsid,
        site_name,
        client_id,
        key,
        endpoint,
        fingerprint,
    })
}

/// How to import a token.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Set this site's name first.
    pub site_name: Option<String>,
    /// `rx-only`, or `rx-tx` (the default): the peer also receives from this site.
    pub direction: Direction,
    /// For `rx-tx`: the endpoint the peer should use for this site (default: where this
    /// site's gateway announced it serves).
    pub endpoint: Option<String>,
}

/// Connects to the site a token names.
pub async fn connect(token: &Token) -> Result<RemoteStore> {
    let cfg = RemoteConfig::new(
        &token.endpoint,
        &token.fingerprint,
        &token.client_id,
        &token.key,
    )
    .map_err(|e| Error::store("the bootstrap token", e))?;
    RemoteStore::connect(cfg).await.map_err(|e| {
        Error::store(
            format!("cannot reach the peer site's gateway at {}", token.endpoint),
            e,
        )
    })
}

/// Imports a bootstrap token into pool `pool`: checks the peer (reachable with the token's
/// key, another site, the pool mirrored there), registers this site there for `rx-tx`, and
/// records the peer here. Nothing is recorded when a check fails.
pub async fn import(
    store: &Arc<dyn ObjectStore>,
    pool: &str,
    token: &Token,
    options: &ImportOptions,
) -> Result<Peer> {
    let pool_id = store
        .pool_lookup(pool)
        .await
        .map_err(|e| Error::store(format!("pool {pool}"), e))?;
    let local = PoolMirror::new(store.clone(), pool_io(pool_id));
    if let Some(name) = &options.site_name {
        crate::site::check_name(name)?;
    }
    let local_fsid = crate::site::fsid(store, true).await?;
    if token.fsid == local_fsid {
        return Err(Error::invalid(
            "cannot import a token of this site: it is for the peer site to import",
        ));
    }
    let remote_store: Arc<dyn ObjectStore> = Arc::new(connect(token).await?);
    let remote_fsid = crate::site::fsid(&remote_store, false).await?;
    if remote_fsid != token.fsid {
        return Err(Error::invalid(format!(
            "the gateway at {} serves site {remote_fsid}, not site {} that the token names",
            token.endpoint, token.fsid
        )));
    }
    let local_name = match &options.site_name {
        Some(n) => n.clone(),
        None => crate::site::name(store, true).await?,
    };
    let remote_name = crate::site::name(&remote_store, false).await?;
    if remote_name == local_name {
        return Err(Error::invalid(format!(
            "cannot import a token for duplicate site name {remote_name}: give each site its \
             own name (--site-name)"
        )));
    }
    let remote_pool = remote_store
        .pool_lookup(pool)
        .await
        .map_err(|e| Error::store(format!("the peer site has no pool {pool}"), e))?;
    let remote = PoolMirror::new(remote_store.clone(), pool_io(remote_pool));
    let remote_config = remote.load().await?;
    if remote_config.mode() == PoolMode::Disabled {
        return Err(Error::new(
            ErrorKind::Store(crate::image::ENOSYS),
            format!("mirroring is not enabled on pool {pool} at site {remote_name}"),
        ));
    }
    let remote_uuid = remote_config.mirror_uuid().unwrap_or_default();
    if let Some(name) = &options.site_name {
        crate::site::set_name(store, name).await?;
    }
    let mut config = local.load().await?;
    if config.mode() == PoolMode::Disabled {
        local.set_mode(remote_config.mode()).await?;
        config = local.load().await?;
    }
    let local_uuid = config
        .mirror_uuid()
        .ok_or_else(|| Error::corrupt("the pool's mirroring has no mirror UUID"))?;
    if options.direction == Direction::RxTx {
        let (endpoint, fingerprint) = rbdx_peer::served::announced(store, options.endpoint.clone())
            .await
            .map_err(|e| {
                Error::store(
                    "a two-way peer must reach this site's gateway (run `rbdx gateway \
                         serve` here, give --endpoint, or import with --direction rx-only)",
                    e,
                )
            })?;
        let (client_id, key) = new_key(store, pool).await?;
        let registration = Registration {
            site_name: local_name.clone(),
            fsid: local_fsid.clone(),
            mirror_uuid: local_uuid.clone(),
            direction: Direction::RxTx,
            client_name: Some(format!("client.{client_id}")),
            secret: Some(PeerSecret {
                endpoint,
                fingerprint,
                key,
            }),
            updated: now_secs(),
        };
        let written = omap::change(
            &remote_store,
            remote.io_ctx(),
            MIRRORING,
            vec![(format!("peer.{}", token.client_id), json(&registration))],
            Vec::new(),
            None,
        )
        .await;
        if let Err(e) = written {
            let _ = Keys::new(store.clone()).remove(&client_id).await;
            return Err(Error::store("cannot register this site at the peer", e));
        }
    }
    let existing = config
        .peers()
        .into_iter()
        .find(|p| p.fsid == token.fsid || p.site_name == remote_name);
    let peer = Peer {
        uuid: match &existing {
            Some(p) => p.uuid.clone(),
            None => rbdx_image::new_uuid()?,
        },
        site_name: remote_name,
        mirror_uuid: remote_uuid,
        direction: options.direction,
        client_name: format!("client.{}", token.client_id),
        fsid: token.fsid.clone(),
    };
    local
        .set_peer_secret(
            &peer.uuid,
            &PeerSecret {
                endpoint: token.endpoint.clone(),
                fingerprint: token.fingerprint.clone(),
                key: token.key.clone(),
            },
        )
        .await?;
    local.put_peer(&peer).await?;
    Ok(peer)
}
