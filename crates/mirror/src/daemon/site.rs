//! The two sides a replayer works between: this site's pool namespace and the peer's.

use std::sync::Arc;

use rbdx_image::{Cluster, Error, Header, Images, Result};
use rbdx_objstore::{IoCtx, ObjectStore};

use crate::omap;
use crate::peer::Peer;
use crate::pool::PoolMirror;

/// One pool namespace at one site.
#[derive(Debug, Clone)]
pub struct Side {
    /// The store and its drivers.
    pub cluster: Cluster,
    /// The pool namespace.
    pub io: IoCtx,
    /// The pool's name (the same at both sites).
    pub pool_name: String,
}

impl Side {
    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.cluster.store()
    }

    /// Returns the mirroring configuration.
    pub fn mirror(&self) -> PoolMirror {
        PoolMirror::new(self.store().clone(), self.io.clone())
    }

    /// Returns the images.
    pub fn images(&self) -> Images {
        Images::new(self.cluster.clone(), self.io.clone())
    }

    /// Returns the name of image `id`, from the pool directory.
    pub async fn image_name(&self, id: &str) -> Result<Option<String>> {
        let key = format!("id_{id}");
        let (entries, _) =
            omap::read(self.store(), &self.io, rbdx_image::names::DIRECTORY, &key).await?;
        Ok(entries
            .get(&key)
            .map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    /// Returns the name and header of image `id`, or `None` if it is gone.
    pub async fn image(&self, id: &str) -> Result<Option<(String, Header)>> {
        let Some(name) = self.image_name(id).await? else {
            return Ok(None);
        };
        match self.images().header_by_id(id, &name).await {
            Ok(h) => Ok(Some((name, h))),
            Err(e) if e.kind() == rbdx_image::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A peer site as the daemon reaches it, for one pool namespace.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The peer record.
    pub peer: Peer,
    /// The name of the key used there, without `client.`: also this site's journal client
    /// id and status owner there.
    pub owner: String,
    /// The peer's side.
    pub side: Side,
}

impl Remote {
    /// The name under which the migration opener finds this peer's store.
    pub fn cluster_name(&self) -> String {
        format!("mirror-peer:{}", self.peer.uuid)
    }
}

/// Returns the error for a peer whose key name is missing.
pub fn owner_of(peer: &Peer) -> Result<String> {
    let owner = peer
        .client_name
        .strip_prefix("client.")
        .unwrap_or(&peer.client_name);
    if owner.is_empty() || owner.contains('.') {
        return Err(Error::invalid(format!(
            "peer {} has no usable key name ({}); re-import its bootstrap token",
            peer.site_name, peer.client_name
        )));
    }
    Ok(owner.to_owned())
}
