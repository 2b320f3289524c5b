//! What drivers get when they open: the registry (for nested streams), the way to resolve
//! `config://` secrets, and the rules for following references out of an image.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;
use crate::spec::CONFIG_KEY_PREFIX;

/// Where `config://` values come from: the cluster's config-key store.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Returns the value stored under `key`.
    async fn get(&self, key: &str) -> Result<String>;
}

/// Where native sources live: the cluster rbdx was pointed at, or another configured one.
#[async_trait]
pub trait Clusters: Send + Sync {
    /// Returns the store of cluster `name` (`None`: the current one), as cephx user `client`.
    async fn store(
        &self,
        name: Option<&str>,
        client: Option<&str>,
    ) -> Result<Arc<dyn rbdx_objstore::ObjectStore>>;
}

/// The context of opening a source.
#[derive(Clone)]
pub struct OpenContext {
    registry: Arc<Registry>,
    secrets: Option<Arc<dyn SecretStore>>,
    clusters: Option<Arc<dyn Clusters>>,
}

impl fmt::Debug for OpenContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenContext")
            .field("registry", &self.registry)
            .field("secrets", &self.secrets.is_some())
            .field("clusters", &self.clusters.is_some())
            .finish()
    }
}

impl OpenContext {
    /// Returns a context using `registry`, without a secret store.
    pub fn new(registry: Arc<Registry>) -> Self {
        OpenContext {
            registry,
            secrets: None,
            clusters: None,
        }
    }

    /// Uses `secrets` to resolve `config://` values.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Uses `clusters` to open native sources.
    pub fn with_clusters(mut self, clusters: Arc<dyn Clusters>) -> Self {
        self.clusters = Some(clusters);
        self
    }

    /// Returns the store of cluster `name` (`None`: the current one).
    pub async fn cluster(
        &self,
        name: Option<&str>,
        client: Option<&str>,
    ) -> Result<Arc<dyn rbdx_objstore::ObjectStore>> {
        let clusters = self.clusters.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "native sources need access to a cluster, which is not available here",
            )
        })?;
        clusters.store(name, client).await
    }

    /// Returns the registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Returns `value` with every string `config://<key>` replaced by the stored value.
    pub async fn resolve_all(&self, value: &Value) -> Result<Value> {
        Ok(match value {
            Value::String(s) if s.starts_with(CONFIG_KEY_PREFIX) => {
                Value::String(self.resolve(s).await?)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), Box::pin(self.resolve_all(v)).await?);
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    out.push(Box::pin(self.resolve_all(v)).await?);
                }
                Value::Array(out)
            }
            other => other.clone(),
        })
    }

    /// Returns `value`, or the secret it names if it is `config://<key>`.
    pub async fn resolve(&self, value: &str) -> Result<String> {
        let Some(key) = value.strip_prefix(CONFIG_KEY_PREFIX) else {
            return Ok(value.to_owned());
        };
        let store = self.secrets.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "'{value}' needs the cluster's config-key store, which is not available here"
                ),
            )
        })?;
        store.get(key).await
    }
}
