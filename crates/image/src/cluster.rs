//! A store with the drivers the image layer needs on it.
//!
//! Images reach two kinds of driver that live in crates above this one: the journal of an
//! image with the journaling feature (`rbdx-journal`) and the source of a migration destination
//! (the source drivers, through `rbdx-migration`). A [`Cluster`] carries both with the store,
//! so that one process can hold several stores with different drivers (the two sites of
//! mirroring, the two ends of a copy between stores): nothing is process-wide. Every image
//! opened through a cluster, and every image such an image opens in turn (its clone parent, a
//! live migration source), uses the same drivers.
//!
//! ```
//! # async fn demo() -> rbdx_image::Result<()> {
//! use std::sync::Arc;
//! use rbdx_image::{Cluster, Images};
//! use rbdx_objstore::{IoCtx, MemoryStore, ObjectStore};
//!
//! let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
//! let pool = store.pool_create("rbd").await.map_err(|e| rbdx_image::Error::store("pool", e))?;
//! let cluster = Cluster::new(store); // live migration only, no journals
//! let images = Images::new(cluster, IoCtx::new(pool));
//! images.create("vm1", &rbdx_image::CreateOptions::new(1 << 20)).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use rbdx_objstore::ObjectStore;

use crate::error::{Error, ErrorKind, Result};
use crate::journaling::JournalOpener;
use crate::migration::{NativeOpener, SourceOpener};

/// A store and the drivers images on it use.
#[derive(Clone)]
pub struct Cluster {
    store: Arc<dyn ObjectStore>,
    journals: Option<Arc<dyn JournalOpener>>,
    sources: Arc<dyn SourceOpener>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("store", &self.store)
            .field("journals", &self.journals)
            .field("sources", &self.sources)
            .finish()
    }
}

impl Cluster {
    /// Returns `store` with no journal implementation (images with the journaling feature
    /// cannot be written) and live migration sources only ([`NativeOpener`]).
    pub fn new(store: Arc<dyn ObjectStore>) -> Cluster {
        Cluster {
            store,
            journals: None,
            sources: Arc::new(NativeOpener),
        }
    }

    /// Uses `journals` for the journals of images with the journaling feature.
    pub fn with_journals(mut self, journals: Arc<dyn JournalOpener>) -> Cluster {
        self.journals = Some(journals);
        self
    }

    /// Opens the sources of migration destinations with `sources`.
    pub fn with_sources(mut self, sources: Arc<dyn SourceOpener>) -> Cluster {
        self.sources = sources;
        self
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Returns the opener of migration sources.
    pub fn sources(&self) -> &Arc<dyn SourceOpener> {
        &self.sources
    }

    /// Returns the journal implementation, if the cluster has one.
    pub fn journals(&self) -> Option<&Arc<dyn JournalOpener>> {
        self.journals.as_ref()
    }

    /// Returns the journal implementation, or why journaling images cannot be changed.
    pub(crate) fn require_journals(&self) -> Result<&Arc<dyn JournalOpener>> {
        self.journals.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "this image has the journaling feature, but no journal implementation was \
                 given with its store",
            )
        })
    }
}

impl From<Arc<dyn ObjectStore>> for Cluster {
    fn from(store: Arc<dyn ObjectStore>) -> Cluster {
        Cluster::new(store)
    }
}
