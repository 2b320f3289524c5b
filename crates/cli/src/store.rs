//! Opening the store a command uses (see [`crate::cluster`] for how it is chosen). A new
//! embedded store gets the pool `rbd`, as a Ceph cluster set up for RBD has.

use std::path::Path;
use std::sync::Arc;

use rbdx_objstore::{ErrorKind, ObjectStore};
use rbdx_objstore_dir::DirStore;

use crate::args::Global;
use crate::cluster::{self, RadosTarget, Target};
use crate::error::CliResult;

/// The pool new embedded stores start with.
pub const DEFAULT_POOL: &str = "rbd";

/// Opens the store selected by the global options.
pub async fn open(global: &Global) -> CliResult<Arc<dyn ObjectStore>> {
    match cluster::resolve(global)? {
        Target::Dir(dir) => open_dir(&dir).await,
        Target::Rados(target) => open_rados(target).await,
    }
}

async fn open_dir(dir: &Path) -> CliResult<Arc<dyn ObjectStore>> {
    let fresh = !dir.join("meta.db").exists();
    let store = DirStore::open(dir)?;
    if fresh {
        match store.pool_create(DEFAULT_POOL).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Arc::new(store))
}

#[cfg(feature = "rados")]
async fn open_rados(target: RadosTarget) -> CliResult<Arc<dyn ObjectStore>> {
    use rbdx_objstore_rados::{RadosConfig, RadosStore};
    let mut config = RadosConfig::from_ceph_conf(target.ceph_conf).with_name(target.name);
    if let Some(keyring) = target.keyring {
        config = config.with_keyring(keyring);
    }
    Ok(Arc::new(RadosStore::connect(config).await?))
}

#[cfg(not(feature = "rados"))]
async fn open_rados(target: RadosTarget) -> CliResult<Arc<dyn ObjectStore>> {
    Err(crate::error::CliError::with_code(
        format!(
            "{} names a Ceph cluster, but this rbdx was built without the rados backend \
             (build it with `cargo build --release --features rados`)",
            target.ceph_conf.display()
        ),
        95,
    ))
}
