//! Opening the store a command uses: [`crate::cluster`] works out a backend configuration from
//! the global options and config files, and the registry of backends built into this binary
//! opens it. A new embedded store gets the pool `rbd`, as a Ceph cluster set up for RBD has.

use std::sync::Arc;

use rbdx_objstore::registry::MemoryBackend;
use rbdx_objstore::{BackendRegistry, ObjectStore};
use rbdx_objstore_dir::DirBackend;

use crate::args::Global;
use crate::cluster::{self, DEFAULT_POOL};
use crate::error::{CliError, CliResult};

/// Returns the object-store backends built into this binary: `dir`, `memory`, `remote` (a
/// gateway of another site), and `rados` with the `rados` feature.
pub fn registry() -> BackendRegistry {
    let mut registry = BackendRegistry::new();
    let builtin: Vec<Arc<dyn rbdx_objstore::BackendFactory>> = vec![
        Arc::new(DirBackend),
        Arc::new(MemoryBackend),
        Arc::new(rbdx_peer::RemoteBackend),
        #[cfg(feature = "rados")]
        Arc::new(rbdx_objstore_rados::RadosBackend),
    ];
    for factory in builtin {
        // The names above are distinct: registering cannot fail.
        let _ = registry.register(factory);
    }
    registry
}

/// Opens the store selected by the global options.
pub async fn open(global: &Global) -> CliResult<Arc<dyn ObjectStore>> {
    Ok(registry().open(&config(global)?).await?)
}

/// Returns the backend configuration of the store the global options select.
pub fn config(global: &Global) -> CliResult<rbdx_objstore::BackendConfig> {
    let mut config = cluster::resolve(global)?;
    if config.backend == "rados" && !cfg!(feature = "rados") {
        return Err(CliError::with_code(
            format!(
                "{} names a Ceph cluster, but this rbdx was built without the rados backend \
                 (build it with `cargo build --release --features rados`)",
                config.get("ceph_conf").unwrap_or("the configuration")
            ),
            95,
        ));
    }
    if matches!(config.backend.as_str(), "dir" | "memory") {
        config
            .settings
            .entry("default_pool".into())
            .or_insert_with(|| DEFAULT_POOL.to_owned());
    }
    Ok(config)
}

/// Opens the store of another cluster, named as `--cluster` names one (its rbdx config
/// `~/.config/rbdx/NAME.conf` or `/etc/rbdx/NAME.conf`, else its embedded store) or, as rbdx
/// extensions, by the path of a config file or of an embedded store's directory. The options
/// that select the current store (`--data-dir` or `RBDX_DATA_DIR`, `-c`, `--ceph-conf`, the
/// user and keyring) do not apply to it; `client` names its user.
pub async fn open_other(
    global: &Global,
    name: &str,
    client: Option<&str>,
) -> CliResult<Arc<dyn ObjectStore>> {
    let mut other = global.clone();
    other.data_dir = None;
    other.ceph_conf = None;
    other.conf = None;
    other.keyring = None;
    other.id = None;
    other.user_name = client.map(|c| {
        if c.contains('.') {
            c.to_owned()
        } else {
            format!("client.{c}")
        }
    });
    if name.contains('/') {
        let path = std::path::PathBuf::from(name);
        if path.is_dir() {
            other.data_dir = Some(path);
        } else {
            other.conf = Some(path);
        }
    } else {
        other.cluster = name.to_owned();
    }
    open(&other).await
}

#[cfg(test)]
mod tests {
    use super::registry;

    #[test]
    fn the_builtin_backends_are_registered() {
        let names = registry().names();
        assert!(
            names.contains(&"dir") && names.contains(&"memory"),
            "{names:?}"
        );
        assert_eq!(names.contains(&"rados"), cfg!(feature = "rados"));
    }
}
