//! The `dir` backend in the object-store registry.
//!
//! Settings: `data_dir` (the store's directory, created on first use) and `default_pool` (a
//! pool the store gets when it is new).

use std::sync::Arc;

use async_trait::async_trait;
use rbdx_objstore::registry::{BackendConfig, BackendFactory, ensure_pool};
use rbdx_objstore::{ObjectStore, Result};

use crate::DirStore;

/// Opens `dir` stores.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirBackend;

#[async_trait]
impl BackendFactory for DirBackend {
    fn name(&self) -> &'static str {
        "dir"
    }

    async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>> {
        let mut reader = config.reader();
        let dir = reader.required_path("data_dir")?;
        let pool = reader.optional("default_pool");
        reader.finish()?;
        let fresh = !crate::files::Layout::new(&dir).db().exists();
        let store = DirStore::open(&dir)?;
        if fresh && let Some(pool) = pool {
            ensure_pool(&store, &pool).await?;
        }
        Ok(Arc::new(store))
    }
}
