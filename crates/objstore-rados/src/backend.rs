//! The `rados` backend in the object-store registry.
//!
//! Settings: `ceph_conf` (the cluster's `ceph.conf`, required), `keyring` (a keyring other
//! than the one the `ceph.conf` names) and `id` or `name` (the cephx user: `id = "admin"` is
//! `name = "client.admin"`, the default).

use std::sync::Arc;

use async_trait::async_trait;
use rbdx_objstore::registry::{BackendConfig, BackendFactory};
use rbdx_objstore::{Error, ErrorKind, ObjectStore, Result, Subject};

use crate::{RadosConfig, RadosStore};

/// Connects to Ceph clusters.
#[derive(Debug, Clone, Copy, Default)]
pub struct RadosBackend;

#[async_trait]
impl BackendFactory for RadosBackend {
    fn name(&self) -> &'static str {
        "rados"
    }

    async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>> {
        let mut reader = config.reader();
        let ceph_conf = reader.required_path("ceph_conf")?;
        let keyring = reader.optional_path("keyring");
        let id = reader.optional("id");
        let name = reader.optional("name");
        reader.finish()?;
        let mut rados = RadosConfig::from_ceph_conf(ceph_conf);
        rados = match (id, name) {
            (Some(_), Some(_)) => {
                return Err(Error::new(ErrorKind::InvalidArgument, Subject::Store)
                    .with_detail("give the cephx user as id or as name, not both"));
            }
            (Some(id), None) => rados.with_id(&id),
            (None, Some(name)) => rados.with_name(name),
            (None, None) => rados,
        };
        if let Some(keyring) = keyring {
            rados = rados.with_keyring(keyring);
        }
        Ok(Arc::new(RadosStore::connect(rados).await?))
    }
}
