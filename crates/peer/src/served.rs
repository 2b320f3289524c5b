//! Where this site's gateway last served: recorded by `rbdx gateway serve`, read when a key
//! or a mirroring bootstrap token is made, so that they name the endpoint and certificate a
//! peer should use.

use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::{Error, ErrorKind, ObjectStore, Result, Subject};
use serde::{Deserialize, Serialize};

use crate::keys::PREFIX;

/// The gateway's endpoint and certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The address it listened on (`HOST:PORT`).
    pub endpoint: String,
    /// The SHA-256 fingerprint of its certificate.
    pub fingerprint: String,
}

fn key() -> String {
    format!("{PREFIX}served")
}

/// Records where the gateway serves.
pub async fn record(store: &Arc<dyn ObjectStore>, served: &Served) -> Result<()> {
    let json = serde_json::to_vec(served).unwrap_or_default();
    store.config_key_set(&key(), Bytes::from(json)).await
}

/// Returns where the gateway last served, if it ever did.
pub async fn last(store: &Arc<dyn ObjectStore>) -> Result<Option<Served>> {
    match store.config_key_get(&key()).await {
        Ok(v) => Ok(serde_json::from_slice(&v).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Returns the endpoint and fingerprint a peer should use: `endpoint` if given, else where
/// the gateway served (an unspecified address replaced by this host's name); the fingerprint
/// is the served certificate's, else the stored identity's.
pub async fn announced(
    store: &Arc<dyn ObjectStore>,
    endpoint: Option<String>,
) -> Result<(String, String)> {
    let served = last(store).await?;
    let endpoint =
        match (endpoint, &served) {
            (Some(e), _) => e,
            (None, Some(s)) => public_endpoint(&s.endpoint)?,
            (None, None) => {
                return Err(Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(
                "no gateway endpoint known: give --endpoint HOST:PORT (or run `rbdx gateway \
                 serve` once)",
            ));
            }
        };
    let fingerprint = match served {
        Some(s) => s.fingerprint,
        None => crate::server::stored_identity(store).await?.fingerprint()?,
    };
    Ok((endpoint, fingerprint))
}

/// Replaces an unspecified listening address by this host's name.
fn public_endpoint(endpoint: &str) -> Result<String> {
    let addr: std::net::SocketAddr = endpoint.parse().map_err(|_| {
        Error::new(ErrorKind::Corrupt, Subject::Store)
            .with_detail(format!("bad recorded gateway endpoint {endpoint}"))
    })?;
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        return Ok(format!("{host}:{}", addr.port()));
    }
    Ok(endpoint.to_owned())
}
