//! Image management in one pool namespace: create, list, rename, remove.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt as _, SnapContext, WriteOp};

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::features::Features;
use crate::header::{Header, now};
use crate::image::{Image, OpenOptions, read_header};
use crate::layout::{DEFAULT_ORDER, Layout};
use crate::names;
use crate::objectmap::{MAX_OBJECTS, ObjectMap};
use crate::snapshot::{Progress, StepCounter};
use crate::{directory, io::CONCURRENCY};

/// How to create an image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Size in bytes.
    pub size: u64,
    /// Object order (default 22: 4 MiB objects).
    pub order: Option<u8>,
    /// Features (default: layering, exclusive-lock, object-map, fast-diff, deep-flatten).
    pub features: Option<Features>,
    /// Stripe unit in bytes (default: the object size).
    pub stripe_unit: Option<u64>,
    /// Stripe count (default 1).
    pub stripe_count: Option<u64>,
    /// Pool for the data objects, by id (default: the header's pool).
    pub data_pool: Option<u64>,
    /// Layout of the journal, if the features include journaling.
    pub journal: crate::journaling::JournalLayout,
    /// The format of a clone (ignored for an image that is not a clone).
    pub clone_format: crate::clone_v2::CloneFormat,
    /// The mirroring record the image is created with (a non-primary copy is made so).
    pub mirror: Option<crate::mirroring::ImageMirror>,
}

impl CreateOptions {
    /// Returns options for an image of `size` bytes with the defaults.
    pub fn new(size: u64) -> Self {
        CreateOptions {
            size,
            ..CreateOptions::default()
        }
    }

    /// Sets the object order.
    pub fn with_order(mut self, order: u8) -> Self {
        self.order = Some(order);
        self
    }

    /// Sets the features.
    pub fn with_features(mut self, features: Features) -> Self {
        self.features = Some(features);
        self
    }

    /// Sets the striping.
    pub fn with_striping(mut self, stripe_unit: u64, stripe_count: u64) -> Self {
        self.stripe_unit = Some(stripe_unit);
        self.stripe_count = Some(stripe_count);
        self
    }
}

/// Checks an image name.
pub fn check_image_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('@') || name.len() > 250 {
        return Err(Error::invalid(format!("invalid image name '{name}'")));
    }
    Ok(())
}

/// Returns a new random image id: 12 lowercase hex digits, as RBD's look.
pub fn new_image_id() -> Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::new(ErrorKind::Store(5), format!("cannot draw an image id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// An image as `ls -l` shows it.
#[derive(Debug)]
pub struct ImageEntry {
    /// Image name.
    pub name: String,
    /// Image id.
    pub id: String,
    /// The header, if it could be read.
    pub header: Result<Header>,
}

/// The images of one pool namespace.
#[derive(Debug, Clone)]
pub struct Images {
    cluster: Cluster,
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
}

impl Images {
    /// Returns the images of the pool namespace `io` of `cluster` (a store, or a store with
    /// its drivers).
    pub fn new(cluster: impl Into<Cluster>, io: IoCtx) -> Self {
        let cluster = cluster.into();
        Images {
            store: cluster.store().clone(),
            cluster,
            io,
        }
    }

    /// Returns the store and its drivers.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Returns the pool namespace.
    pub fn io_ctx(&self) -> &IoCtx {
        &self.io
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Creates image `name`.
    pub async fn create(&self, name: &str, opts: &CreateOptions) -> Result<String> {
        self.create_with_parent(name, opts, None).await
    }

    /// Creates image `name`, a clone of `parent` if given.
    pub(crate) async fn create_with_parent(
        &self,
        name: &str,
        opts: &CreateOptions,
        parent: Option<crate::header::ParentSpec>,
    ) -> Result<String> {
        self.create_image(name, opts, parent, None, async |_| Ok(()))
            .await
    }

    /// Creates image `name` (with id `id` if given, else a new one), letting `finish` add to
    /// the header before it is written.
    pub(crate) async fn create_image(
        &self,
        name: &str,
        opts: &CreateOptions,
        parent: Option<crate::header::ParentSpec>,
        id: Option<String>,
        finish: impl AsyncFnOnce(&mut Header) -> Result<()>,
    ) -> Result<String> {
        check_image_name(name)?;
        let order = opts.order.unwrap_or(DEFAULT_ORDER);
        let object_size = 1u64 << order.min(63);
        let layout = Layout::new(
            order,
            opts.stripe_unit.unwrap_or(object_size),
            opts.stripe_count.unwrap_or(1),
        )?;
        // Striping and data-pool follow from the layout and the pool; asking for them is
        // allowed and changes nothing.
        let mut features = opts
            .features
            .unwrap_or(Features::DEFAULT)
            .without(Features::STRIPINGV2)
            .without(Features::DATA_POOL);
        features.check_allowed(Features::USER_CREATABLE, "requested at create")?;
        if layout.is_fancy() {
            features = features.with(Features::STRIPINGV2);
        }
        if opts.data_pool.is_some_and(|p| p != self.io.pool().0) {
            features = features.with(Features::DATA_POOL);
        }
        features.validate()?;
        let count = layout.num_objects(opts.size);
        if count > MAX_OBJECTS {
            return Err(Error::invalid(format!(
                "size {} needs {count} objects, more than the {MAX_OBJECTS} supported",
                opts.size
            )));
        }
        let data_pool_id = opts.data_pool.filter(|p| *p != self.io.pool().0);
        if let Some(pool) = data_pool_id {
            self.store
                .pool_by_id(rbdx_objstore::PoolId(pool))
                .await
                .ctx(|| format!("data pool {pool}"))?;
        }
        let id = match id {
            Some(id) => id,
            None => new_image_id()?,
        };
        let mut header = Header {
            size: opts.size,
            layout,
            features,
            object_prefix: names::data_prefix(&id),
            snap_seq: 0,
            create_timestamp: now(),
            data_pool_id,
            flags: 0,
            snap_limit: None,
            snapshots: BTreeMap::new(),
            parent,
            metadata: BTreeMap::new(),
            migration: None,
            mirror: opts.mirror.clone(),
            op_features: Default::default(),
        };
        finish(&mut header).await?;
        directory::add(&self.store, &self.io, name, &id).await?;
        let created = self
            .write_new_header(&id, &header, count, &opts.journal)
            .await;
        if let Err(e) = created {
            let _ = self.remove_metadata_objects(&id).await;
            let _ = directory::remove(&self.store, &self.io, name, &id).await;
            return Err(e);
        }
        Ok(id)
    }

    async fn write_new_header(
        &self,
        id: &str,
        header: &Header,
        count: u64,
        journal: &crate::journaling::JournalLayout,
    ) -> Result<()> {
        if header.features.contains(Features::JOURNALING) {
            self.cluster
                .require_journals()?
                .create(self.store.clone(), self.io.clone(), id, journal)
                .await?;
        }
        if header.features.contains(Features::OBJECT_MAP) {
            let oid = names::object_map_object(id, None);
            self.store
                .operate(
                    &self.io,
                    &oid,
                    &WriteOp::new()
                        .create(true)
                        .write_full(ObjectMap::new(count).encode()),
                    &SnapContext::empty(),
                )
                .await
                .ctx(|| format!("cannot create object map {oid}"))?;
        }
        let oid = names::header_object(id);
        self.store
            .operate(
                &self.io,
                &oid,
                &WriteOp::new().create(true).omap_set(header.encode()),
                &SnapContext::empty(),
            )
            .await
            .ctx(|| format!("cannot create header {oid}"))?;
        Ok(())
    }

    /// Removes what a creation of image `id` named `name` that was cut short left behind
    /// (its directory entry, id object and object maps), unless the image has its header and
    /// so is complete. Returns true if it was incomplete.
    pub async fn remove_partial(&self, name: &str, id: &str) -> Result<bool> {
        match read_header(&self.store, &self.io, &names::header_object(id), name).await {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.remove_metadata_objects(id).await?;
        if directory::entry(&self.store, &self.io, name)
            .await?
            .as_deref()
            == Some(id)
        {
            directory::remove(&self.store, &self.io, name, id).await?;
        }
        Ok(true)
    }

    async fn remove_metadata_objects(&self, id: &str) -> Result<()> {
        // A journal goes with its image (removing one that does not exist does nothing).
        if let Some(opener) = self.cluster.journals() {
            opener
                .remove(self.store.clone(), self.io.clone(), id)
                .await?;
        }
        let snapc = SnapContext::empty();
        let maps = names::object_map_object(id, None);
        let mut oids: Vec<String> = self
            .store
            .list_objects(&self.io, &maps)
            .try_collect()
            .await
            .ctx(|| format!("cannot list the object maps of image id {id}"))?;
        oids.push(names::header_object(id));
        for oid in oids {
            match self
                .store
                .operate(&self.io, &oid, &WriteOp::new().remove(), &snapc)
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::store(format!("cannot remove {oid}"), e)),
            }
        }
        Ok(())
    }

    /// Fails with `Busy`, naming a client, if any client has image `name` (id `id`) open.
    pub async fn ensure_unwatched(&self, name: &str, id: &str) -> Result<()> {
        let watchers = self
            .store
            .list_watchers(&self.io, &names::header_object(id))
            .await
            .ctx(|| format!("cannot list the watchers of image {name}"))?;
        match watchers.first() {
            Some(w) => Err(Error::busy(format!(
                "image {name} still has watchers ({} at {}); close it there first",
                w.client.id, w.client.addr
            ))),
            None => Ok(()),
        }
    }

    /// Returns the id of image `name` (`NotFound` if there is none).
    pub async fn lookup(&self, name: &str) -> Result<String> {
        directory::lookup(&self.store, &self.io, name).await
    }

    /// Returns the id the pool directory maps `name` to, even if the image's creation was cut
    /// short before its id object was written.
    pub async fn directory_entry(&self, name: &str) -> Result<Option<String>> {
        directory::entry(&self.store, &self.io, name).await
    }

    /// Lists image names and ids, sorted by name.
    pub async fn list(&self) -> Result<BTreeMap<String, String>> {
        directory::list(&self.store, &self.io).await
    }

    /// Lists images with their headers (`ls -l`).
    pub async fn list_long(&self) -> Result<Vec<ImageEntry>> {
        let names = self.list().await?;
        futures::stream::iter(names)
            .map(|(name, id)| async move {
                let header = read_header(&self.store, &self.io, &names::header_object(&id), &name)
                    .await
                    .map(|s| s.header);
                ImageEntry { name, id, header }
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(Ok)
            .collect()
    }

    /// Opens image `name`.
    pub async fn open(&self, name: &str, opts: OpenOptions) -> Result<Image> {
        Image::open(self.cluster.clone(), self.io.clone(), name, opts).await
    }

    /// Renames image `old` to `new`.
    pub async fn rename(&self, old: &str, new: &str) -> Result<()> {
        check_image_name(new)?;
        let id = directory::lookup(&self.store, &self.io, old).await?;
        directory::rename(&self.store, &self.io, old, new, &id).await?;
        let image = self
            .open(new, OpenOptions::default().with_read_only(true))
            .await?;
        crate::lock::notify_header_update(&image.inner).await;
        image.close().await
    }

    /// Removes image `name` and all its data. Refused while it has snapshots (`NotEmpty`) or
    /// other clients have it open (`Busy`).
    pub async fn remove(&self, name: &str, progress: Progress<'_>) -> Result<()> {
        let id = directory::lookup(&self.store, &self.io, name).await?;
        self.remove_data(name, &id, progress).await?;
        directory::remove(&self.store, &self.io, name, &id).await?;
        progress(1, 1);
        Ok(())
    }

    /// Removes the header, data and object maps of image `id` (named `name` in messages),
    /// with the same refusals as [`Images::remove`].
    pub(crate) async fn remove_data(
        &self,
        name: &str,
        id: &str,
        progress: Progress<'_>,
    ) -> Result<()> {
        let id = id.to_owned();
        let header_oid = names::header_object(&id);
        let header = match read_header(&self.store, &self.io, &header_oid, name).await {
            Ok(state) => Some(state.header),
            // A header that is gone (an interrupted create or remove): clean up the rest.
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(header) = &header {
            if header.user_snapshots().next().is_none() && !header.snapshots.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotEmpty,
                    format!(
                        "image {name} has snapshots in the trash that format 2 clones still \
                         use ('rbdx snap ls --all'); remove or flatten those clones first"
                    ),
                ));
            }
            if !header.snapshots.is_empty() {
                return Err(Error::new(
                    ErrorKind::NotEmpty,
                    format!(
                        "image {name} has snapshots - these must be deleted with 'rbdx snap purge' \
                         before the image can be removed"
                    ),
                ));
            }
            self.ensure_unwatched(name, &id).await?;
            let data_io = match header.data_pool_id {
                Some(pool) => {
                    IoCtx::with_namespace(rbdx_objstore::PoolId(pool), self.io.namespace())
                }
                None => self.io.clone(),
            };
            let prefix = format!("{}.", header.object_prefix);
            let oids: Vec<String> = self
                .store
                .list_objects(&data_io, &prefix)
                .try_collect()
                .await
                .ctx(|| format!("cannot list the data objects of image {name}"))?;
            let total = oids.len() as u64;
            let done = StepCounter::new(total);
            let snapc = SnapContext::empty();
            futures::stream::iter(oids)
                .map(|oid| {
                    let (data_io, snapc, done) = (&data_io, &snapc, &done);
                    async move {
                        match self
                            .store
                            .operate(data_io, &oid, &WriteOp::new().remove(), snapc)
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if e.kind() == rbdx_objstore::ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::store(format!("cannot remove {oid}"), e)),
                        }
                        done.step(progress);
                        Ok(())
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<()>()
                .await?;
        }
        self.remove_metadata_objects(&id).await?;
        if let Some(h) = &header
            && let Some(parent) = h.parent.clone()
        {
            let mut gone = h.clone();
            gone.parent = None;
            crate::layering::unregister_if_unused(&self.cluster, &self.io, &id, &gone, &parent)
                .await?;
        }
        Ok(())
    }
}
