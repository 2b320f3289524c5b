//! Migration of rbdx images: live (between pools, namespaces or layouts, while clients keep
//! using the destination) and import-only (from an external source spec).
//!
//! The steps are Ceph's: [`Migration::prepare_live`] / [`Migration::prepare_import`] create
//! the destination, linked to the source, usable at once; [`Migration::execute`] copies
//! every object in the background; [`Migration::commit`] unlinks the two and deletes the
//! source; [`Migration::abort`] undoes everything. All state lives in the `migration`
//! records of the image headers (see `rbdx_image::migration`), and every step can be re-run
//! after a crash, or followed by `abort`.

#![warn(missing_docs, missing_debug_implementations)]

mod across;
mod copy;
mod finish;
pub use finish::ExecuteOptions;
mod prepare;
pub mod progress;
mod source;
mod verify;

use std::sync::Arc;

use rbdx_image::migration::{MigrationRole, MigrationSpec, MigrationState};
use rbdx_image::{Cluster, Error, Header, Images, Result};
use rbdx_objstore::{IoCtx, ObjectStore, PoolId};

pub use copy::ImageCopyOptions;
pub use prepare::{PrepareOptions, PrepareReport};
pub use progress::ProgressRecord;
pub use source::{FormatSource, Opener, from_source};
pub use verify::Mismatch;

/// Runs migration steps on one store.
#[derive(Debug, Clone)]
pub struct Migration {
    cluster: Cluster,
    store: Arc<dyn ObjectStore>,
    opener: Arc<Opener>,
}

/// A migration as `status` shows it, from the destination's side.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    /// The destination's record.
    pub spec: MigrationSpec,
    /// The destination, `pool/[namespace/]name`.
    pub destination: String,
    /// The destination's id.
    pub destination_id: String,
    /// The copy's progress, once execute has started.
    pub progress: Option<ProgressRecord>,
}

/// Returns `pool/[namespace/]name` for messages and `status`.
pub async fn image_path(store: &Arc<dyn ObjectStore>, io: &IoCtx, name: &str) -> String {
    let pool = store
        .pool_by_id(io.pool())
        .await
        .map_or_else(|_| io.pool().0.to_string(), |p| p.name);
    if io.namespace().is_empty() {
        format!("{pool}/{name}")
    } else {
        format!("{pool}/{}/{name}", io.namespace())
    }
}

/// Returns the migration of destination `name` of `dst`, or `None` if it is not migrating.
pub async fn status(
    store: &Arc<dyn ObjectStore>,
    dst: &Images,
    name: &str,
) -> Result<Option<MigrationStatus>> {
    let id = dst.lookup(name).await?;
    let header = dst.header_by_id(&id, name).await?;
    let Some(spec) = header.migration else {
        return Ok(None);
    };
    if spec.role != MigrationRole::Destination {
        return Ok(None);
    }
    Ok(Some(MigrationStatus {
        progress: progress::load(store, dst.io_ctx(), &id).await?,
        destination: image_path(store, dst.io_ctx(), name).await,
        destination_id: id,
        spec,
    }))
}

impl Migration {
    /// Returns a runner for the images of `cluster`, opening external sources with `opener`
    /// (the images' own source opener is made `opener` too, so that a destination reads its
    /// source however it was opened).
    pub fn new(cluster: Cluster, opener: Arc<Opener>) -> Migration {
        let cluster = cluster.with_sources(opener.clone());
        Migration {
            store: cluster.store().clone(),
            cluster,
            opener,
        }
    }

    /// Returns the store and its drivers.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Returns the opener of sources and other clusters.
    pub(crate) fn opener(&self) -> &Arc<Opener> {
        &self.opener
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Returns the images of a pool namespace.
    fn images(&self, io: IoCtx) -> Images {
        Images::new(self.cluster.clone(), io)
    }

    /// Reads the migration record of destination `name`; an error naming the image if it
    /// has none.
    async fn destination(
        &self,
        dst: &Images,
        name: &str,
    ) -> Result<(String, Header, MigrationSpec)> {
        let id = dst.lookup(name).await?;
        let header = dst.header_by_id(&id, name).await?;
        match header.migration.clone() {
            Some(spec) if spec.role == MigrationRole::Destination => Ok((id, header, spec)),
            _ => Err(Error::invalid(format!(
                "image {name} is not the destination of a migration"
            ))),
        }
    }

    /// Returns the migration of destination `name`, or `None` if it is not migrating.
    pub async fn status(&self, dst: &Images, name: &str) -> Result<Option<MigrationStatus>> {
        status(&self.store, dst, name).await
    }

    /// Finds the source of a live migration to `name` in `dst` that lost its destination
    /// (an abort cut short): a trashed image whose record points at that name.
    async fn orphaned_source(
        &self,
        dst: &Images,
        name: &str,
    ) -> Result<Option<(Images, String, String)>> {
        let pools = self
            .store
            .pool_list()
            .await
            .map_err(|e| Error::store("cannot list pools", e))?;
        for pool in pools {
            let mut namespaces = vec![String::new()];
            namespaces.extend(self.store.namespace_list(pool.id).await.unwrap_or_default());
            for ns in namespaces {
                let images = self.images(IoCtx::with_namespace(pool.id, &ns));
                let Ok(entries) = images.trash_list().await else {
                    continue;
                };
                for entry in entries {
                    let Ok(header) = images.header_by_id(&entry.id, &entry.name).await else {
                        continue;
                    };
                    if let Some(m) = header.migration
                        && m.role == MigrationRole::Source
                        && m.image_name == name
                        && PoolId(m.pool_id) == dst.io_ctx().pool()
                        && m.namespace == dst.io_ctx().namespace()
                    {
                        return Ok(Some((images, entry.id, entry.name)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sets the state of a migration record.
    async fn set_state(images: &Images, id: &str, name: &str, state: MigrationState) -> Result<()> {
        images
            .update_migration(id, name, |m| {
                if let Some(m) = m.as_mut() {
                    m.state = state;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}
