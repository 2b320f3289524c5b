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

pub use crate::copyup::COPYUP_XATTR;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::{Extent, ExtentSet, IoCtx, ObjectStore as _, PoolId, SnapSet};
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
    /// Set for a deep copy (`rbdx cp`, `rbdx deep cp`): a destination filled as a migration
    /// fills one, from a source that is only read (it gets no record, stays where it is and
    /// stays writable) and that commit leaves alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyOrigin>,
}

/// Where the source of a deep copy is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOrigin {
    /// The store the source is in, as the rbdx tools name a cluster (a cluster name, a
    /// config file or an embedded store's directory), when it is not the destination's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The source snapshot the destination's head is copied from (default: the source's
    /// head); the mirror daemon's initial sync copies a mirror snapshot so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_snap: Option<u64>,
    /// A live migration between clusters: the source is read-only while it runs, goes at
    /// commit, and takes back the destination's writes at abort.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

impl MigrationSpec {
    /// Returns true for an import-only migration.
    pub fn is_import(&self) -> bool {
        self.source_spec.is_some()
    }

    /// Returns true for a live migration, whose source has a record and goes at commit (not
    /// an import, not a deep copy).
    pub fn moves_source(&self) -> bool {
        !self.is_import() && self.copy.as_ref().is_none_or(|c| c.live)
    }

    /// The cluster of the other image, as the rbdx tools name it, when it is not this one's.
    pub fn other_cluster(&self) -> Option<&str> {
        self.copy.as_ref().and_then(|c| c.cluster.as_deref())
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

    /// Like [`MigrationSource::allocation`], as exact as the source can tell cheaply (block
    /// status answers use it). The default is [`MigrationSource::allocation`].
    async fn allocation_exact(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Allocation>> {
        self.allocation(snap, offset, length).await
    }

    /// Returns the ranges (image offsets, sorted) of `[offset, offset + length)` where view
    /// `to` may differ from the older view `from`: every byte that differs is inside them.
    /// `None` means the source cannot tell without reading both (the default); a copy then
    /// reads the whole range at `to`.
    async fn changed(
        &self,
        from: Option<u64>,
        to: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<Extent>>> {
        let _ = (from, to, offset, length);
        Ok(None)
    }

    /// Lets go of what the source holds open (watches on a cluster); the destination calls
    /// it when it is closed.
    async fn close(&self) {}
}

/// The version of an object a view reads: the head, a clone (by index), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Head,
    Clone(usize),
    Absent,
}

/// Resolves the version of an object that view `view` (a snapshot id, or the head) reads, as
/// the store does for self-managed snapshots.
fn version_at(set: &SnapSet, view: Option<u64>) -> Version {
    let head = if set.head_size.is_some() {
        Version::Head
    } else {
        Version::Absent
    };
    let Some(snap) = view else {
        return head;
    };
    if snap > set.seq {
        return head;
    }
    match set.clones.iter().position(|c| c.id.0 >= snap) {
        Some(i) if set.clones[i].snaps.first().is_some_and(|f| f.0 <= snap) => Version::Clone(i),
        _ => Version::Absent,
    }
}

/// Returns the ranges (object offsets) of `[offset, offset + length)` of an object where view
/// `to` may differ from the older view `from`, from the clones' overlaps.
fn changed_in_object(
    set: &SnapSet,
    from: Option<u64>,
    to: Option<u64>,
    offset: u64,
    length: u64,
) -> Vec<(u64, u64)> {
    let whole = vec![(offset, length)];
    let (a, b) = (version_at(set, from), version_at(set, to));
    if a == b {
        return Vec::new();
    }
    let (first, last) = match (a, b) {
        (Version::Clone(i), Version::Clone(j)) if i < j => (i, j),
        (Version::Clone(i), Version::Head) => (i, set.clones.len()),
        _ => return whole,
    };
    // Bytes identical in every version from `first` up to `last` did not change.
    let mut same = ExtentSet::from_range(offset, length);
    for clone in &set.clones[first..last] {
        let mut overlap = ExtentSet::new();
        for e in &clone.overlap {
            overlap.insert(e.offset, e.length);
        }
        let mut outside = ExtentSet::from_range(offset, length);
        for e in overlap.extents() {
            outside.subtract(e.offset, e.length);
        }
        for e in outside.extents() {
            same.subtract(e.offset, e.length);
        }
    }
    let mut changed = ExtentSet::from_range(offset, length);
    for e in same.extents() {
        changed.subtract(e.offset, e.length);
    }
    changed
        .extents()
        .iter()
        .map(|e| (e.offset, e.length))
        .collect()
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
        if let Some(cluster) = spec.copy.as_ref().and_then(|c| c.cluster.as_ref()) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "this image is being copied from cluster {cluster}; open it with a source \
                     opener that reaches that cluster (the rbdx tools do)"
                ),
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

    async fn allocation_exact(
        &self,
        snap: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Allocation>> {
        self.view(snap)?.allocation_exact(offset, length).await
    }

    async fn changed(
        &self,
        from: Option<u64>,
        to: Option<u64>,
        offset: u64,
        length: u64,
    ) -> Result<Option<Vec<Extent>>> {
        if from == to {
            return Ok(Some(Vec::new()));
        }
        let header = self.head.header();
        // A parent shows through absent objects, and views may have different parents.
        if header.parent.is_some() || header.snapshots.values().any(|s| s.parent.is_some()) {
            return Ok(None);
        }
        let inner = &self.head.inner;
        let mut out = ExtentSet::new();
        for e in header.layout.map(offset, length) {
            let oid = inner.data_oid(e.objectno);
            let set = match inner.store.list_snaps(&inner.data_io, &oid).await {
                Ok(set) => set,
                // Absent in every view: nothing changed.
                Err(err) if err.kind() == rbdx_objstore::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(Error::store(
                        format!("cannot list the clones of {oid}"),
                        err,
                    ));
                }
            };
            let start = offset + e.buffer_offset;
            for (o, len) in changed_in_object(&set, from, to, e.offset, e.length) {
                out.insert(start + (o - e.offset), len);
            }
        }
        Ok(Some(out.extents()))
    }

    async fn close(&self) {
        for image in std::iter::once(&self.head).chain(self.snaps.values()) {
            if let Err(e) = image.clone().close().await {
                tracing::debug!("closing migration source {}: {e}", image.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rbdx_objstore::{CloneInfo, SnapId};

    use super::*;

    /// An object written before snapshot 3 (clone 3, overlapping the head in [0, 8192) and
    /// [12288, 16384)) and again before snapshot 5 (clone 5, overlapping the head except in
    /// [0, 4096)); the head exists.
    fn history() -> SnapSet {
        SnapSet {
            seq: 5,
            clones: vec![
                CloneInfo {
                    id: SnapId(3),
                    snaps: vec![SnapId(3)],
                    overlap: vec![Extent::new(0, 8192), Extent::new(12288, 4096)],
                    size: 16384,
                },
                CloneInfo {
                    id: SnapId(5),
                    snaps: vec![SnapId(4), SnapId(5)],
                    overlap: vec![Extent::new(4096, 12288)],
                    size: 16384,
                },
            ],
            head_size: Some(16384),
        }
    }

    #[test]
    fn views_resolve_to_the_version_the_store_reads() {
        let set = history();
        assert_eq!(version_at(&set, Some(2)), Version::Absent);
        assert_eq!(version_at(&set, Some(3)), Version::Clone(0));
        assert_eq!(version_at(&set, Some(4)), Version::Clone(1));
        assert_eq!(version_at(&set, Some(6)), Version::Head);
        assert_eq!(version_at(&set, None), Version::Head);
    }

    #[test]
    fn changes_between_views_come_from_the_overlaps() {
        let set = history();
        // Same clone: nothing changed.
        assert!(changed_in_object(&set, Some(4), Some(5), 0, 16384).is_empty());
        // Snapshot 3 to snapshot 5: what clone 3 does not share with clone 5.
        assert_eq!(
            changed_in_object(&set, Some(3), Some(5), 0, 16384),
            vec![(8192, 4096)]
        );
        // Snapshot 5 to the head.
        assert_eq!(
            changed_in_object(&set, Some(5), None, 0, 16384),
            vec![(0, 4096)]
        );
        // Snapshot 3 to the head: both changes, clipped to the range asked.
        assert_eq!(
            changed_in_object(&set, Some(3), None, 0, 10000),
            vec![(0, 4096), (8192, 1808)]
        );
        // From before the object existed: all of it.
        assert_eq!(
            changed_in_object(&set, Some(2), Some(3), 0, 16384),
            vec![(0, 16384)]
        );
    }
}
