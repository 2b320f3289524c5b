//! Which store a command uses: the embedded `dir` store in `--data-dir` (or `RBDX_DATA_DIR`,
//! or `~/.local/share/rbdx/<cluster>`). A new embedded store gets the pool `rbd`, as a Ceph
//! cluster set up for RBD has.

use std::path::PathBuf;
use std::sync::Arc;

use rbdx_objstore::{ErrorKind, ObjectStore};
use rbdx_objstore_dir::DirStore;

use crate::args::Global;
use crate::error::{CliError, CliResult};

/// The pool new embedded stores start with.
pub const DEFAULT_POOL: &str = "rbd";

/// Returns the data directory selected by the global options.
pub fn data_dir(global: &Global) -> CliResult<PathBuf> {
    if let Some(dir) = &global.data_dir {
        return Ok(dir.clone());
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| CliError::invalid("no --data-dir given and no HOME to find the default"))?;
    Ok(base.join("rbdx").join(&global.cluster))
}

/// Opens the store selected by the global options.
pub async fn open(global: &Global) -> CliResult<Arc<dyn ObjectStore>> {
    let dir = data_dir(global)?;
    let fresh = !dir.join("meta.db").exists();
    let store = DirStore::open(&dir)?;
    if fresh {
        match store.pool_create(DEFAULT_POOL).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Arc::new(store))
}
