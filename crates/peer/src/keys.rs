//! Gateway keys: a name, a secret and what the key may do, kept in the served store's
//! config-keys under [`PREFIX`] (which no client of the gateway can read or change).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use rbdx_objstore::{Error, ErrorKind, ObjectStore, Result, Subject};
use serde::{Deserialize, Serialize};

use crate::handshake::{SECRET_LEN, random};

/// The config-key prefix of everything the gateway keeps (keys, its certificate).
pub const PREFIX: &str = "rbdx/gateway/";
const KEY_PREFIX: &str = "rbdx/gateway/key/";
/// The config-key holding the gateway's own certificate and private key.
pub const TLS_KEY: &str = "rbdx/gateway/tls";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Everything.
    Rw,
    /// Reads only.
    Ro,
    /// Reads of its pools, and the few writes a mirroring peer makes (see [`crate::caps`]).
    MirrorPeer,
}

impl Profile {
    /// Returns the profile's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Rw => "rw",
            Profile::Ro => "ro",
            Profile::MirrorPeer => "mirror-peer",
        }
    }

    /// Parses a profile name.
    pub fn parse(text: &str) -> Option<Profile> {
        match text {
            "rw" => Some(Profile::Rw),
            "ro" => Some(Profile::Ro),
            "mirror-peer" => Some(Profile::MirrorPeer),
            _ => None,
        }
    }
}

/// One key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's name, e.g. `client.site-b`.
    pub name: String,
    /// The secret, base64.
    pub secret: String,
    /// What it may do.
    pub profile: Profile,
    /// The pools it is limited to; empty means every pool.
    #[serde(default)]
    pub pools: Vec<String>,
    /// When it was made, seconds since the Unix epoch.
    pub created: u64,
}

impl KeyRecord {
    /// Returns the secret's bytes.
    pub fn secret_bytes(&self) -> Result<Vec<u8>> {
        decode_secret(&self.secret)
    }

    /// Returns the name of the key's own records at a mirroring peer: its name without the
    /// `client.` prefix.
    pub fn owner(&self) -> &str {
        self.name.strip_prefix("client.").unwrap_or(&self.name)
    }

    /// Returns true if the key may reach pool `name`.
    pub fn allows_pool(&self, name: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == name)
    }
}

/// Decodes a secret as a client config holds it.
pub fn decode_secret(text: &str) -> Result<Vec<u8>> {
    let bytes = B64.decode(text.trim()).map_err(|_| {
        Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail("the key is not base64")
    })?;
    if bytes.len() != SECRET_LEN {
        return Err(
            Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(format!(
                "the key is {} bytes long, a gateway key is {SECRET_LEN}",
                bytes.len()
            )),
        );
    }
    Ok(bytes)
}

/// Normalises a key name: `site-b` becomes `client.site-b`, as Ceph names users.
pub fn entity_name(name: &str) -> Result<String> {
    let full = if name.contains('.') {
        name.to_owned()
    } else {
        format!("client.{name}")
    };
    let ok = !name.is_empty()
        && full.len() <= 128
        && full
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(
            Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(format!(
                "key name \"{name}\" must be 1-128 letters, digits, '.', '_' or '-'"
            )),
        );
    }
    Ok(full)
}

fn config_key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

/// The keys of a store.
#[derive(Debug, Clone)]
pub struct Keys {
    store: Arc<dyn ObjectStore>,
}

impl Keys {
    /// The keys kept in `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Keys {
        Keys { store }
    }

    /// Makes a key; `AlreadyExists` if the name is taken.
    pub async fn create(
        &self,
        name: &str,
        profile: Profile,
        pools: Vec<String>,
    ) -> Result<KeyRecord> {
        let name = entity_name(name)?;
        let owner = name.strip_prefix("client.").unwrap_or(&name);
        if profile == Profile::MirrorPeer && owner.contains('.') {
            return Err(
                Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(format!(
                    "a mirror-peer key's name must have no '.' after 'client.' ({name}): its \
                     records are named after it"
                )),
            );
        }
        if self.get(&name).await?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                Subject::ConfigKey(config_key(&name)),
            )
            .with_detail(format!("gateway key {name} exists")));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let record = KeyRecord {
            name: name.clone(),
            secret: B64.encode(random::<SECRET_LEN>()),
            profile,
            pools,
            created,
        };
        let json = serde_json::to_vec(&record).map_err(|e| {
            Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(e.to_string())
        })?;
        self.store
            .config_key_set(&config_key(&name), Bytes::from(json))
            .await?;
        Ok(record)
    }

    /// Returns key `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<KeyRecord>> {
        let key = config_key(name);
        match self.store.config_key_get(&key).await {
            Ok(value) => serde_json::from_slice(&value).map(Some).map_err(|e| {
                Error::new(ErrorKind::Corrupt, Subject::ConfigKey(key))
                    .with_detail(format!("gateway key record: {e}"))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists every key, sorted by name.
    pub async fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        for key in self.store.config_key_list().await? {
            if let Some(name) = key.strip_prefix(KEY_PREFIX)
                && let Some(record) = self.get(name).await?
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Removes key `name`; `NotFound` if there is none.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let name = entity_name(name)?;
        self.store
            .config_key_remove(&config_key(&name))
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::not_found(Subject::ConfigKey(config_key(&name)))
                        .with_detail(format!("no gateway key {name}"))
                } else {
                    e
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use rbdx_objstore::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn keys_are_made_listed_and_removed() {
        let keys = Keys::new(Arc::new(MemoryStore::new()));
        let k = keys
            .create("site-b", Profile::MirrorPeer, vec!["rbd".into()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.name, "client.site-b");
        assert_eq!(k.owner(), "site-b");
        assert_eq!(k.secret_bytes().map(|s| s.len()).ok(), Some(SECRET_LEN));
        assert!(
            keys.create("client.site-b", Profile::Ro, vec![])
                .await
                .is_err_and(|e| e.kind() == ErrorKind::AlreadyExists)
        );
        let listed = keys.list().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, vec![k]);
        assert!(keys.remove("site-b").await.is_ok());
        assert!(
            keys.remove("site-b")
                .await
                .is_err_and(|e| e.kind() == ErrorKind::NotFound)
        );
        assert!(entity_name("bad name").is_err());
        assert!(
            keys.create("client.a.b", Profile::MirrorPeer, vec![])
                .await
                .is_err_and(|e| e.kind() == ErrorKind::InvalidArgument)
        );
    }
}
