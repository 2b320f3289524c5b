//! Sources of import-only migrations: any [`Format`] as a [`MigrationSource`], and the
//! [`SourceOpener`] that opens either kind of source from a destination's record.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_image::migration::{
    MigrationSource, MigrationSpec, NativeOpener, NativeSource, SourceOpener, SourceSnapshot,
};
use rbdx_image::{Allocation, Cluster, Error, ErrorKind, Result};
use rbdx_source::{ExtentKind, Format, OpenContext, SourceSpec};

/// Turns a source driver's error into an image-layer error with the same errno.
pub fn from_source(e: rbdx_source::Error) -> Error {
    use rbdx_source::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::Invalid => ErrorKind::InvalidArgument,
        K::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Store(e.errno()),
    };
    Error::new(kind, e.to_string())
}

/// An external image (a [`Format`]) as a migration source; snapshot keys are indexes.
#[derive(Debug)]
pub struct FormatSource {
    format: Box<dyn Format>,
}

impl FormatSource {
    /// Wraps an open format.
    pub fn new(format: Box<dyn Format>) -> FormatSource {
        FormatSource { format }
    }

    fn index(&self, snap: Option<u64>) -> Option<usize> {
        snap.map(|k| k as usize)
    }
}

#[async_trait]
impl MigrationSource for FormatSource {
    fn describe(&self) -> String {
        self.format.describe()
    }

    fn size(&self) -> u64 {
        self.format.size()
    }

    fn snapshots(&self) -> Vec<SourceSnapshot> {
        self.format
            .snapshots()
            .iter()
            .enumerate()
            .map(|(i, s)| SourceSnapshot {
                key: i as u64,
                name: s.name.clone(),
                size: s.size,
                protected: false,
                timestamp: None,
            })
            .collect()
    }

    async fn read(&self, snap: Option<u64>, offset: u64, length: u64) -> Result<Bytes> {
        self.format
            .read(self.index(snap), offset, length)
            .await
            .map_err(from_source)
    }

    async fn allocation(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Allocation>> {
        let extents = self
            .format
            .extents(self.index(snap), offset, length)
            .await
            .map_err(from_source)?;
        Ok(extents
            .into_iter()
            .map(|e| Allocation {
                offset: e.offset,
                length: e.length,
                data: e.kind == ExtentKind::Data,
            })
            .collect())
    }
}

/// Opens the source of any migration destination: rbdx images of the store for live
/// migrations, source drivers for import-only ones.
#[derive(Debug)]
pub struct Opener {
    ctx: OpenContext,
}

impl Opener {
    /// Returns an opener that opens external sources with `ctx`.
    pub fn new(ctx: OpenContext) -> Opener {
        Opener { ctx }
    }

    /// Opens the store of the cluster the rbdx tools name `name`.
    pub async fn cluster_store(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<dyn rbdx_objstore::ObjectStore>> {
        self.ctx
            .cluster(Some(name), None)
            .await
            .map_err(from_source)
    }

    /// Opens an external source from its spec JSON.
    pub async fn open_spec(&self, json: &str) -> Result<Box<dyn Format>> {
        let spec = SourceSpec::parse(json).map_err(from_source)?;
        self.ctx
            .registry()
            .open(&spec, &self.ctx)
            .await
            .map_err(from_source)
    }
}

#[async_trait]
impl SourceOpener for Opener {
    async fn open_source(
        &self,
        cluster: &Cluster,
        spec: &MigrationSpec,
    ) -> Result<Arc<dyn MigrationSource>> {
        if let Some(name) = spec.copy.as_ref().and_then(|c| c.cluster.as_deref()) {
            // A deep copy from another store: its images, read through the same drivers.
            let store = self
                .ctx
                .cluster(Some(name), None)
                .await
                .map_err(from_source)?;
            let there = Cluster::new(store).with_sources(cluster.sources().clone());
            return Ok(Arc::new(
                NativeSource::open(
                    there,
                    spec.io_ctx(),
                    &spec.image_name,
                    &spec.image_id,
                    spec.flatten,
                )
                .await?,
            ));
        }
        match &spec.source_spec {
            Some(json) => Ok(Arc::new(FormatSource::new(self.open_spec(json).await?))),
            None => NativeOpener.open_source(cluster, spec).await,
        }
    }
}
