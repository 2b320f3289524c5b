//! Deep copies (`rbdx cp`, `rbdx deep cp`): a new image filled as a migration destination is
//! filled (object by object, with each object's snapshot history, resumable from its
//! checkpoint), from a source that is only read.
//!
//! The source gets no record: it stays where it is, stays writable, and commit leaves it
//! alone (what is copied of a source written meanwhile is what each object held when it was
//! copied, as with `rbd deep cp`). The destination carries a migration record with
//! [`CopyOrigin`] until the copy is committed; while it does, it reads through to the source
//! like any migration destination. The source may be in another store: the record names it as
//! the rbdx tools name a cluster, so that a later run (or a reader of the destination) reaches
//! it again. Running the same copy again finds the destination by its record and goes on from
//! the checkpoint.

use rbdx_image::migration::{CopyOrigin, MigrationRole, MigrationSpec, MigrationState};
use rbdx_image::{CreateOptions, Error, ErrorKind, Images, Result, TargetSnapshot};

use crate::Migration;
use crate::prepare::inherit;

/// What to copy.
#[derive(Debug, Clone, Default)]
pub struct ImageCopyOptions {
    /// Layout and features of the copy; what is not set is taken from the source.
    pub create: CreateOptions,
    /// Copy every snapshot (`deep cp`), or only the head (`cp`).
    pub snapshots: bool,
    /// Copy the data the source's parent provides instead of keeping the parent.
    pub flatten: bool,
    /// The source's store, as the rbdx tools name a cluster, when it is not the
    /// destination's.
    pub source_cluster: Option<String>,
    /// Copy the head from this source snapshot (by id) instead of the source's head, and only
    /// the snapshots older than it.
    pub head_snap: Option<u64>,
    /// For a clone in another store: the destination's parent, in the destination's ids (a
    /// copy there of the source's parent); only the clone's own data is copied.
    pub dest_parent: Option<rbdx_image::ParentSpec>,
}

impl Migration {
    /// Prepares the copy of image `src_name` of `src` into a new image `dst_name` of `dst`
    /// (`dst` is in this runner's store; `src` in it too, or in `options.source_cluster`).
    /// Returns true if `dst_name` is the unfinished copy of the same source, which
    /// [`Migration::execute`] and [`Migration::commit`] then finish.
    pub async fn prepare_copy(
        &self,
        src: &Images,
        src_name: &str,
        dst: &Images,
        dst_name: &str,
        options: &ImageCopyOptions,
    ) -> Result<bool> {
        let src_id = src.lookup(src_name).await?;
        let header = src.header_by_id(&src_id, src_name).await?;
        let origin = CopyOrigin {
            cluster: options.source_cluster.clone(),
            head_snap: options.head_snap,
            live: false,
        };
        if options.source_cluster.is_none() && src.io_ctx() == dst.io_ctx() && src_name == dst_name
        {
            return Err(Error::invalid(format!(
                "image {src_name} cannot be copied onto itself"
            )));
        }
        if let Some(dst_id) = dst.directory_entry(dst_name).await? {
            if dst.remove_partial(dst_name, &dst_id).await? {
                // A creation cut short: made again below.
            } else {
                let existing = dst.header_by_id(&dst_id, dst_name).await?;
                return match existing.migration {
                    Some(m)
                        if m.role == MigrationRole::Destination
                            && m.copy.as_ref() == Some(&origin)
                            && m.image_id == src_id
                            && m.io_ctx() == *src.io_ctx()
                            && m.state != MigrationState::Aborting =>
                    {
                        Ok(true)
                    }
                    _ => Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("image {dst_name} already exists"),
                    )),
                };
            }
        }
        let keeps_parent = header.parent.is_some() && !options.flatten;
        if keeps_parent && options.source_cluster.is_some() && options.dest_parent.is_none() {
            return Err(Error::invalid(format!(
                "image {src_name} is a clone; a copy in another cluster cannot keep its parent \
                 (copy its data with --flatten)"
            )));
        }
        let snapshots: Vec<TargetSnapshot> = if options.snapshots {
            header
                .user_snapshots()
                .filter(|s| options.head_snap.is_none_or(|head| s.id < head))
                .map(|s| TargetSnapshot {
                    source: rbdx_image::migration::SourceSnapshot {
                        key: s.id,
                        name: s.name.clone(),
                        size: s.size,
                        protected: s.protection == rbdx_image::Protection::Protected,
                        timestamp: Some(s.timestamp),
                    },
                    parent: if options.flatten {
                        None
                    } else if options.dest_parent.is_some() {
                        s.parent.as_ref().and(options.dest_parent.clone())
                    } else {
                        s.parent.clone()
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        let size = match options.head_snap {
            Some(id) => header.snapshots.get(&id).map(|s| s.size).ok_or_else(|| {
                Error::not_found(format!("image {src_name} has no snapshot {id}"))
            })?,
            None => header.size,
        };
        let spec = MigrationSpec {
            role: MigrationRole::Destination,
            pool_id: src.io_ctx().pool().0,
            namespace: src.io_ctx().namespace().to_owned(),
            image_name: src_name.to_owned(),
            image_id: src_id,
            source_spec: None,
            snap_map: Default::default(),
            overlap: size,
            flatten: options.flatten,
            state: MigrationState::Prepared,
            state_description: String::new(),
            copy: Some(origin),
        };
        let parent = if options.flatten {
            None
        } else if options.dest_parent.is_some() {
            header.parent.as_ref().and(options.dest_parent.clone())
        } else {
            header.parent.clone()
        };
        let opts = inherit(&options.create, &header, size);
        let id = rbdx_image::new_image_id()?;
        dst.create_migration_target(dst_name, &id, &opts, parent, &snapshots, spec)
            .await?;
        Ok(false)
    }
}
