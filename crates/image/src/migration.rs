//! The image layer's side of migration: the `migration` header record that links a source and
//! a destination, and the [`MigrationSource`] a destination reads through to.
//!
//! While an image is the destination of a migration, its migration source plays the part a
//! clone's parent plays: reads of objects the destination does not have yet come from the
//! source (at the source snapshot that a destination snapshot was made from, or the source's
//! head), and the first write to such an object copies the source's object up first, with its
//! whole snapshot history (see `copyup`). The source is another rbdx image (live migration,
//! opened here) or an external source (import-only; opened by a [`SourceOpener`] that the
//! layers above supply).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::{IoCtx, PoolId};
use serde::{Deserialize, Serialize};

use crate::allocation::Allocation;
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::header::Protection;
use crate::image::{Image, OpenOptions};

/// Which side of a migration an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationRole {
    /// The image being moved away: read-only, in the trash until commit or abort.
    Source,
    /// The image being filled.
    Destination,
}

/// The steps of a migration, as `status` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    /// Prepare started and has not finished.
    Preparing,
    /// Prepared: the destination reads through to the source.
    Prepared,
    /// The background copy is running or was interrupted.
    Executing,
    /// Every object has been copied.
    Executed,
    /// Commit passed its point of no return on the destination; the source is being removed.
    Committing,
    /// Abort started and has not finished.
    Aborting,
}

impl MigrationState {
    /// Returns the state as `status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            MigrationState::Preparing => "preparing",
            MigrationState::Prepared => "prepared",
            MigrationState::Executing => "executing",
            MigrationState::Executed => "executed",
            MigrationState::Committing => "committing",
            MigrationState::Aborting => "aborting",
        }
    }
}

/// The `migration` record of an image header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// This image's side.
    pub role: MigrationRole,
    /// Pool id of the other image (for import-only destinations: unused, 0).
    pub pool_id: u64,
    /// Namespace of the other image.
    pub namespace: String,
    /// Name of the other image.
    pub image_name: String,
    /// Id of the other image (empty for import-only destinations).
    pub image_id: String,
    /// The source spec JSON of an import-only migration, as given (`config://` references
    /// stay references).
    #[serde(default)]
    pub source_spec: Option<String>,
    /// Destination snapshot id -> the source snapshot it was made from (a source snapshot
    /// id, or an index into an external source's snapshots). Destination snapshots missing
    /// here were taken during the migration and show the source's head.
    #[serde(default)]
    pub snap_map: BTreeMap<u64, u64>,
    /// Bytes of the source's head that show through the destination.
    pub overlap: u64,
    /// Whether the destination drops the source's parent (copies its data instead).
    pub flatten: bool,
    /// Where the migration stands.
    pub state: MigrationState,
    /// Why the last step failed, if it did.
    #[serde(default)]
    pub state_description: String,
}

impl MigrationSpec {
    /// Returns true for an import-only migration.
    pub fn is_import(&self) -> bool {
        self.source_spec.is_some()
    }

    /// Returns the pool namespace of the other image.
    pub fn io_ctx(&self) -> IoCtx {
        IoCtx::with_namespace(PoolId(self.pool_id), &self.namespace)
    }
}

/// A snapshot of a migration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSnapshot {
    /// What [`MigrationSpec::snap_map`] stores for it.
    pub key: u64,
    /// Its name.
    pub name: String,
    /// The image size at the snapshot.
    pub size: u64,
    /// Whether it is protected (only rbdx images have protection).
    pub protected: bool,
    /// When it was taken, if known (seconds, nanoseconds since the epoch).
    pub timestamp: Option<(u64, u32)>,
}

/// A read-only image that a migration destination is filled from. `snap` selects a
/// snapshot by its [`SourceSnapshot::key`], or the head with `None`.
#[async_trait]
pub trait MigrationSource: Send + Sync + std::fmt::Debug {
    /// Describes the source for messages.
    fn describe(&self) -> String;

    /// Returns the size of the head.
    fn size(&self) -> u64;

    /// Returns the snapshots, oldest first.
    fn snapshots(&self) -> Vec<SourceSnapshot>;

    /// Returns the size of a view.
    fn view_size(&self, snap: Option<u64>) -> Result<u64> {
        match snap {
            None => Ok(self.size()),
            Some(key) => self
                .snapshots()
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.size)
                .ok_or_else(|| {
                    Error::not_found(format!("{} has no snapshot {key}", self.describe()))
                }),
        }
    }

    /// Reads `length` bytes at `offset` of a view.
    async fn read(&self, snap: Option<u64>, offset: u64, length: u64) -> Result<Bytes>;

    /// Reads the data of `[offset, offset + length)` of a view as (offset, bytes) runs in
    /// order, leaving out all-zero 4 KiB blocks (and, where the source can tell without
    /// reading, its holes). The default reads the whole range.
    async fn read_data(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, Bytes)>> {
        let data = self.read(snap, offset, length).await?;
        Ok(crate::layering::nonzero_writes(offset, &data))
    }

    /// Returns which bytes of a view must be copied (data) and which need not (holes).
    async fn allocation(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Allocation>>;

    /// Lets go of what the source holds open (watches on a cluster); the destination calls
    /// it when it is closed.
    async fn close(&self) {}
}

/// Opens the source of a migration destination from its `migration` record.
#[async_trait]
pub trait SourceOpener: Send + Sync + std::fmt::Debug {
    /// Opens the source `spec` names, for a destination in `cluster`.
    async fn open_source(
        &self,
        cluster: &Cluster,
        spec: &MigrationSpec,
    ) -> Result<Arc<dyn MigrationSource>>;
}

/// Opens live-migration sources (rbdx images in the same store); refuses import-only ones,
/// which need the source drivers of the layers above.
#[derive(Debug, Default)]
pub struct NativeOpener;

#[async_trait]
impl SourceOpener for NativeOpener {
    async fn open_source(
        &self,
        cluster: &Cluster,
        spec: &MigrationSpec,
    ) -> Result<Arc<dyn MigrationSource>> {
        if spec.is_import() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this image is the destination of an import-only migration; open it with a \
                 source opener (the rbdx tools do)",
            ));
        }
        Ok(Arc::new(
            NativeSource::open(
                cluster.clone(),
                spec.io_ctx(),
                &spec.image_name,
                &spec.image_id,
                spec.flatten,
            )
            .await?,
        ))
    }
}

/// An rbdx image as a migration source, with every snapshot open.
#[derive(Debug)]
pub struct NativeSource {
    head: Image,
    snaps: BTreeMap<u64, Image>,
    flatten: bool,
}

impl NativeSource {
    /// Opens image `id` (called `name`) of `io` read-only, at its head and every snapshot.
    /// With `flatten`, data its parent provides counts as data to copy.
    pub async fn open(
        cluster: impl Into<Cluster>,
        io: IoCtx,
        name: &str,
        id: &str,
        flatten: bool,
    ) -> Result<NativeSource> {
        let cluster = cluster.into();
        let ro = || OpenOptions::default().with_read_only(true);
        let head = Image::open_by_id(cluster.clone(), io.clone(), name, id, ro()).await?;
        let mut snaps = BTreeMap::new();
        for snap in head.header().snapshots.keys() {
            let image = Image::open_by_id(
                cluster.clone(),
                io.clone(),
                name,
                id,
                ro().with_snap_id(Some(*snap)),
            )
            .await?;
            snaps.insert(*snap, image);
        }
        Ok(NativeSource {
            head,
            snaps,
            flatten,
        })
    }

    fn view(&self, snap: Option<u64>) -> Result<&Image> {
        match snap {
            None => Ok(&self.head),
            Some(id) => self.snaps.get(&id).ok_or_else(|| {
                Error::not_found(format!(
                    "image {} has no snapshot id {id}",
                    self.head.name()
                ))
            }),
        }
    }
}

#[async_trait]
impl MigrationSource for NativeSource {
    fn describe(&self) -> String {
        format!("image {}", self.head.name())
    }

    fn size(&self) -> u64 {
        self.head.size()
    }

    fn snapshots(&self) -> Vec<SourceSnapshot> {
        self.head
            .header()
            .snapshots
            .values()
            .map(|s| SourceSnapshot {
                key: s.id,
                name: s.name.clone(),
                size: s.size,
                protected: s.protection == Protection::Protected,
                timestamp: Some(s.timestamp),
            })
            .collect()
    }

    async fn read(&self, snap: Option<u64>, offset: u64, length: u64) -> Result<Bytes> {
        self.view(snap)?.read(offset, length).await
    }

    async fn read_data(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<(u64, Bytes)>> {
        self.view(snap)?.read_data(offset, length).await
    }

    async fn allocation(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Allocation>> {
        let image = self.view(snap)?;
        if self.flatten {
            image.allocation(offset, length).await
        } else {
            image.own_allocation(offset, length).await
        }
    }

    async fn close(&self) {
        for image in std::iter::once(&self.head).chain(self.snaps.values()) {
            if let Err(e) = image.clone().close().await {
                tracing::debug!("closing migration source {}: {e}", image.name());
            }
        }
    }
}
