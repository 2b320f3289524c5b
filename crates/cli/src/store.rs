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

/// Returns the object-store backends built into this binary: `dir`, `memory`, and `rados`
/// with the `rados` feature.
pub fn registry() -> BackendRegistry {
    let mut registry = BackendRegistry::new();
    let builtin: Vec<Arc<dyn rbdx_objstore::BackendFactory>> = vec![
        Arc::new(DirBackend),
        Arc::new(MemoryBackend),
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
    Ok(registry().open(&config).await?)
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
