//! `migration prepare`: creates the destination, linked to the source.
//!
//! Live: the source gets a record pointing at the destination (which makes it read-only) and
//! goes to the trash, then the destination is created with the source's snapshots and a
//! record pointing back. The destination's id is chosen first and kept in the source's
//! record, so a prepare cut short is finished by running it again (or undone by `abort`).
//! Import-only: the source spec is opened and checked, and the destination is created in one
//! step.

use std::sync::Arc;
use std::time::Duration;

use rbdx_image::migration::{
    MigrationRole, MigrationSource, MigrationSpec, MigrationState, NativeSource, SourceSnapshot,
};
use rbdx_image::{
    CreateOptions, Error, ErrorKind, Header, Images, Result, TargetSnapshot, TrashSource,
};

use crate::source::FormatSource;
use crate::{Migration, image_path};

/// Options of `prepare`.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Layout and features of the destination; what is not set is taken from a live source
    /// (an import gets the defaults). The size is always the source's.
    pub create: CreateOptions,
    /// Copy the source's parent data instead of keeping its parent.
    pub flatten: bool,
    /// Only report what would be done.
    pub dry_run: bool,
}

/// What prepare created, or would create.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// The source, as `status` shows it.
    pub source: String,
    /// The destination, `pool/[namespace/]name`.
    pub destination: String,
    /// Size in bytes.
    pub size: u64,
    /// Snapshots, oldest first: name and size.
    pub snapshots: Vec<(String, u64)>,
    /// Data bytes of the head to copy.
    pub allocated: u64,
    /// Upper bound of the space the destination needs (data of every view).
    pub space_needed: u64,
    /// Whether anything was changed.
    pub dry_run: bool,
}

async fn data_bytes(source: &dyn MigrationSource, snap: Option<u64>, size: u64) -> Result<u64> {
    let mut total = 0;
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(1 << 30);
        total += source
            .allocation(snap, offset, len)
            .await?
            .iter()
            .filter(|a| a.data)
            .map(|a| a.length)
            .sum::<u64>();
        offset += len;
    }
    Ok(total)
}

async fn report(
    source: &dyn MigrationSource,
    shown: String,
    destination: String,
    dry_run: bool,
) -> Result<PrepareReport> {
    let allocated = data_bytes(source, None, source.size()).await?;
    let mut space_needed = allocated;
    let mut snapshots = Vec::new();
    for s in source.snapshots() {
        space_needed += data_bytes(source, Some(s.key), s.size).await?;
        snapshots.push((s.name, s.size));
    }
    Ok(PrepareReport {
        source: shown,
        destination,
        size: source.size(),
        snapshots,
        allocated,
        space_needed,
        dry_run,
    })
}

fn check_dest_free(e: Result<String>, name: &str) -> Result<()> {
    match e {
        Ok(_) => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("image {name} already exists"),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fills what `create` leaves unset from the source's header.
pub(crate) fn inherit(create: &CreateOptions, src: &Header, size: u64) -> CreateOptions {
    let mut opts = create.clone();
    opts.size = size;
    let same_layout = opts.order.is_none() && opts.stripe_unit.is_none();
    opts.order = opts.order.or(Some(src.layout.order()));
    if same_layout && opts.stripe_count.is_none() {
        opts.stripe_unit = Some(src.layout.stripe_unit());
        opts.stripe_count = Some(src.layout.stripe_count());
    }
    if opts.features.is_none() {
        opts.features = Some(src.features.without(rbdx_image::Features::JOURNALING));
    }
    opts
}

impl Migration {
    /// Prepares the live migration of image `src_name` of `src` to `dst_name` of `dst`.
    pub async fn prepare_live(
        &self,
        src: &Images,
        src_name: &str,
        dst: &Images,
        dst_name: &str,
        options: &PrepareOptions,
    ) -> Result<PrepareReport> {
        let same_name = src.io_ctx() == dst.io_ctx() && src_name == dst_name;
        // A prepare cut short left the source in the trash with its record.
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
                    && m.pool_id == dst.io_ctx().pool().0
                    && m.namespace == dst.io_ctx().namespace() =>
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
            if !same_name {
                check_dest_free(dst.lookup(dst_name).await, dst_name)?;
            }
        }
        let source = NativeSource::open(
            self.cluster.clone(),
            src.io_ctx().clone(),
            src_name,
            &src_id,
            options.flatten,
        )
        .await?;
        let shown = format!(
            "{} ({src_id})",
            image_path(&self.store, src.io_ctx(), src_name).await
        );
        let destination = image_path(&self.store, dst.io_ctx(), dst_name).await;
        let out = report(&source, shown, destination, options.dry_run).await;
        source.close().await;
        let out = out?;
        if options.dry_run {
            return Ok(out);
        }
        let dst_id = match planned {
            Some(id) => id,
            None => rbdx_image::new_image_id()?,
        };
        let dst_io = dst.io_ctx().clone();
        let record = MigrationSpec {
            role: MigrationRole::Source,
            pool_id: dst_io.pool().0,
            namespace: dst_io.namespace().to_owned(),
            image_name: dst_name.to_owned(),
            image_id: dst_id.clone(),
            source_spec: None,
            snap_map: Default::default(),
            overlap: header.size,
            flatten: options.flatten,
            state: MigrationState::Preparing,
            state_description: String::new(),
            copy: None,
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
        // A destination whose creation was cut short (no header yet) is removed and made
        // again; one with its header is complete.
        let exists = !dst.remove_partial(dst_name, &dst_id).await?;
        if !exists {
            let snapshots: Vec<TargetSnapshot> = header
                .snapshots
                .values()
                .map(|s| TargetSnapshot {
                    source: SourceSnapshot {
                        key: s.id,
                        name: s.name.clone(),
                        size: s.size,
                        protected: s.protection == rbdx_image::Protection::Protected,
                        timestamp: Some(s.timestamp),
                    },
                    parent: if options.flatten {
                        None
                    } else {
                        s.parent.clone()
                    },
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
                flatten: options.flatten,
                state: MigrationState::Prepared,
                state_description: String::new(),
                copy: None,
            };
            let parent = if options.flatten {
                None
            } else {
                header.parent.clone()
            };
            let opts = inherit(&options.create, &header, header.size);
            dst.create_migration_target(dst_name, &dst_id, &opts, parent, &snapshots, spec)
                .await?;
        }
        Migration::set_state(src, &src_id, src_name, MigrationState::Prepared).await?;
        Ok(out)
    }

    /// Prepares an import-only migration from source spec `json` into new image `dst_name`.
    pub async fn prepare_import(
        &self,
        json: &str,
        shown: String,
        dst: &Images,
        dst_name: &str,
        options: &PrepareOptions,
    ) -> Result<PrepareReport> {
        check_dest_free(dst.lookup(dst_name).await, dst_name)?;
        let source = Arc::new(FormatSource::new(self.opener.open_spec(json).await?));
        let destination = image_path(&self.store, dst.io_ctx(), dst_name).await;
        let out = report(source.as_ref(), shown, destination, options.dry_run).await?;
        if options.dry_run {
            return Ok(out);
        }
        let snapshots: Vec<TargetSnapshot> = source
            .snapshots()
            .into_iter()
            .map(|s| TargetSnapshot {
                source: s,
                parent: None,
            })
            .collect();
        let spec = MigrationSpec {
            role: MigrationRole::Destination,
            pool_id: 0,
            namespace: String::new(),
            image_name: String::new(),
            image_id: String::new(),
            source_spec: Some(json.to_owned()),
            snap_map: Default::default(),
            overlap: source.size(),
            flatten: true,
            state: MigrationState::Prepared,
            state_description: String::new(),
            copy: None,
        };
        let mut opts = options.create.clone();
        opts.size = source.size();
        let id = rbdx_image::new_image_id()?;
        dst.create_migration_target(dst_name, &id, &opts, None, &snapshots, spec)
            .await?;
        Ok(out)
    }
}
