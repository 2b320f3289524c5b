//! Live migration between two clusters (two sites, through a gateway): the disk of a running
//! VM moves to another site while its clients move to the destination.
//!
//! As a live migration in one cluster, `prepare` gives the source a record and moves it to the
//! trash (it is read-only from then on) and creates the destination with a record pointing
//! back; both records carry a [`CopyOrigin`] with `live` set and the name under which each
//! side's tools reach the other cluster. The destination reads through to the source until
//! `execute` has copied everything (as a deep copy from another cluster does); `commit`
//! removes the source over there; `abort` first writes back into the source every range the
//! destination's clients changed (found by comparing per-chunk digests of each object both
//! sides hold, so only changed data crosses), then puts the source back and removes the
//! destination.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rbdx_image::migration::{
    COPYUP_XATTR, CopyOrigin, MigrationRole, MigrationSpec, MigrationState, SourceSnapshot,
};
use rbdx_image::names::{data_object, data_prefix};
use rbdx_image::{
    Cluster, Error, ErrorKind, Header, Images, OpenOptions, Result, TargetSnapshot, TrashSource,
};
use rbdx_objstore::{ReadOp, SnapId};

use crate::prepare::{PrepareOptions, PrepareReport, inherit};
use crate::{Migration, image_path};

/// Objects compared at once by an abort's write-back.
const CONCURRENCY: usize = 16;

impl Migration {
    /// Prepares the live migration of image `src_name` of `src` (in another cluster, which
    /// this cluster's tools reach as `src_cluster`) to `dst_name` of `dst` (in this runner's
    /// cluster, which the source's tools reach as `dst_cluster`).
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_live_across(
        &self,
        src: &Images,
        src_name: &str,
        src_cluster: &str,
        dst: &Images,
        dst_name: &str,
        dst_cluster: &str,
        options: &PrepareOptions,
    ) -> Result<PrepareReport> {
        let (src_id, resumed) = match src.lookup(src_name).await {
            Ok(id) => (id, false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let entry = src
                    .trash_list()
                    .await?
                    .into_iter()
                    .find(|t| t.name == src_name && t.source == TrashSource::Migration);
                match entry {
                    Some(t) => (t.id, true),
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let header = src.header_by_id(&src_id, src_name).await?;
        if header.parent.is_some() && !options.flatten {
            return Err(Error::invalid(format!(
                "image {src_name} is a clone; a migration to another cluster cannot keep its \
                 parent (prepare with --flatten)"
            )));
        }
        let planned = match &header.migration {
            None if resumed => {
                return Err(Error::invalid(format!(
                    "image {src_name} is in the trash; restore it first"
                )));
            }
            None => None,
            Some(m)
                if m.role == MigrationRole::Source
                    && m.image_name == dst_name
                    && m.other_cluster() == Some(dst_cluster) =>
            {
                Some(m.image_id.clone())
            }
            Some(m) => {
                return Err(Error::busy(format!(
                    "image {src_name} is already part of a migration (with {})",
                    m.image_name
                )));
            }
        };
        if planned.is_none() {
            src.ensure_unwatched(src_name, &src_id).await?;
            if dst.lookup(dst_name).await.is_ok() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("image {dst_name} already exists"),
                ));
            }
        }
        let shown = format!("{src_cluster}:{src_name} ({src_id})");
        let destination = image_path(self.store(), dst.io_ctx(), dst_name).await;
        let allocated = header.size;
        let out = PrepareReport {
            source: shown,
            destination,
            size: header.size,
            snapshots: header
                .user_snapshots()
                .map(|s| (s.name.clone(), s.size))
                .collect(),
            allocated,
            space_needed: allocated,
            dry_run: options.dry_run,
        };
        if options.dry_run {
            return Ok(out);
        }
        let dst_id = match planned {
            Some(id) => id,
            None => rbdx_image::new_image_id()?,
        };
        let record = MigrationSpec {
            role: MigrationRole::Source,
            pool_id: dst.io_ctx().pool().0,
            namespace: dst.io_ctx().namespace().to_owned(),
            image_name: dst_name.to_owned(),
            image_id: dst_id.clone(),
            source_spec: None,
            snap_map: Default::default(),
            overlap: header.size,
            flatten: options.flatten,
            state: MigrationState::Preparing,
            state_description: String::new(),
            copy: Some(CopyOrigin {
                cluster: Some(dst_cluster.to_owned()),
                head_snap: None,
                live: true,
            }),
        };
        src.update_migration(&src_id, src_name, |m| {
            if m.is_none() {
                *m = Some(record.clone());
            }
            Ok(())
        })
        .await?;
        if !resumed {
            src.trash_move(src_name, Duration::ZERO, TrashSource::Migration)
                .await?;
        }
        let exists = !dst.remove_partial(dst_name, &dst_id).await?;
        if !exists {
            let snapshots: Vec<TargetSnapshot> = header
                .user_snapshots()
                .map(|s| TargetSnapshot {
                    source: SourceSnapshot {
                        key: s.id,
                        name: s.name.clone(),
                        size: s.size,
                        protected: s.protection == rbdx_image::Protection::Protected,
                        timestamp: Some(s.timestamp),
                    },
                    parent: None,
                })
                .collect();
            let spec = MigrationSpec {
                role: MigrationRole::Destination,
                pool_id: src.io_ctx().pool().0,
                namespace: src.io_ctx().namespace().to_owned(),
                image_name: src_name.to_owned(),
                image_id: src_id.clone(),
                source_spec: None,
                snap_map: Default::default(),
                overlap: header.size,
                flatten: true,
                state: MigrationState::Prepared,
                state_description: String::new(),
                copy: Some(CopyOrigin {
                    cluster: Some(src_cluster.to_owned()),
                    head_snap: None,
                    live: true,
                }),
            };
            let opts = inherit(&options.create, &header, header.size);
            dst.create_migration_target(dst_name, &dst_id, &opts, None, &snapshots, spec)
                .await?;
        }
        Migration::set_state(src, &src_id, src_name, MigrationState::Prepared).await?;
        Ok(out)
    }

    /// Returns the images of the pool namespace that holds the other image of `spec`: in this
    /// cluster, or in the one its record names.
    pub(crate) async fn other_images(&self, spec: &MigrationSpec) -> Result<Images> {
        match spec.other_cluster() {
            None => Ok(Images::new(self.cluster().clone(), spec.io_ctx())),
            Some(name) => {
                let store = self.opener().cluster_store(name).await?;
                let mut there = Cluster::new(store).with_sources(self.cluster().sources().clone());
                if let Some(journals) = self.cluster().journals() {
                    there = there.with_journals(journals.clone());
                }
                Ok(Images::new(there, spec.io_ctx()))
            }
        }
    }
}

/// Writes back into the source (`src`, image `src_id` named `src_name`, already restored and
/// writable) every range that destination `dst_id` of `dst` holds differently; returns the
/// bytes written. Objects the destination does not hold were never written there (it read
/// them through from the source).
pub(crate) async fn write_back(
    dst: &Images,
    dst_id: &str,
    dst_header: &Header,
    src: &Images,
    src_name: &str,
) -> Result<u64> {
    let source = src.open(src_name, OpenOptions::default()).await?;
    let done = async {
        if source.size() != dst_header.size {
            source.resize(dst_header.size, true).await?;
        }
        let same_layout = source.header().layout == dst_header.layout;
        let count = dst_header.layout.num_objects(dst_header.size);
        let prefix = data_prefix(dst_id);
        let src_prefix = data_prefix(source.id());
        let written: Vec<u64> = futures::stream::iter(0..count)
            .map(|n| {
                let (prefix, src_prefix, source) = (&prefix, &src_prefix, &source);
                async move {
                    let len = dst_header.layout.object_len_within(n, dst_header.size);
                    let oid = data_object(prefix, n);
                    let op = ReadOp::new().read(0, Some(len)).get_xattrs();
                    let read = dst.store().read_op(dst.io_ctx(), &oid, &op, None).await;
                    // An object whose copy was cut short holds an older view of the source
                    // and no client write (a write finishes the copy first): skipped.
                    let data = match read {
                        Ok(mut r) => {
                            if r.take_map(1).unwrap_or_default().contains_key(COPYUP_XATTR) {
                                return Ok(0);
                            }
                            let mut d = r.take_data(0).unwrap_or_default().to_vec();
                            d.resize(len as usize, 0);
                            d
                        }
                        Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => return Ok(0),
                        Err(e) => return Err(Error::store(&oid, e)),
                    };
                    let ranges = if same_layout {
                        differing(source, &data_object(src_prefix, n), &data).await?
                    } else {
                        vec![(0, len)]
                    };
                    let mut bytes = 0;
                    for (off, length) in ranges {
                        for (obj_off, image_off, piece) in
                            dst_header.layout.object_pieces_below(n, dst_header.size)
                        {
                            let (lo, hi) = (obj_off.max(off), (obj_off + piece).min(off + length));
                            if lo >= hi {
                                continue;
                            }
                            let slice =
                                bytes::Bytes::copy_from_slice(&data[lo as usize..hi as usize]);
                            source.write(image_off + (lo - obj_off), slice).await?;
                            bytes += hi - lo;
                        }
                    }
                    Ok::<u64, Error>(bytes)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        source.flush().await?;
        Ok::<u64, Error>(written.into_iter().sum())
    }
    .await;
    let closed = source.close().await;
    let done = done?;
    closed?;
    Ok(done)
}

/// The chunks of `data` that the source object `oid` holds differently, by digests computed
/// where the source lies.
async fn differing(source: &rbdx_image::Image, oid: &str, data: &[u8]) -> Result<Vec<(u64, u64)>> {
    let len = data.len() as u64;
    let chunk = rbdx_objstore::digest::DEFAULT_CHUNK;
    let op = ReadOp::new().checksum(0, len, chunk);
    let theirs = match source
        .store()
        .read_op(source.io_ctx(), oid, &op, None::<SnapId>)
        .await
    {
        Ok(mut r) => r.take_checksums(0).unwrap_or_default(),
        Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => {
            rbdx_objstore::digest::zero_digests(len, chunk)
        }
        Err(e) => return Err(Error::store(oid, e)),
    };
    let ours = rbdx_objstore::digest::chunk_digests(data, len, chunk);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        if a == b {
            continue;
        }
        let offset = i as u64 * chunk;
        let length = chunk.min(len - offset);
        match out.last_mut() {
            Some(last) if last.0 + last.1 == offset => last.1 += length,
            _ => out.push((offset, length)),
        }
    }
    Ok(out)
}
