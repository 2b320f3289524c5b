//! An open image: its header, its snapshot context, and the state a writer keeps (the
//! exclusive lock and the head object map).
//!
//! # Concurrency
//!
//! - `gate`: every data operation holds it shared; snapshot creation, removal and rollback,
//!   resize, object map rebuild, feature changes and lock release hold it exclusively, so
//!   they see no write in flight ("quiesce").
//! - `objects`: per-object ordering of an object-map transition and the write it guards.
//! - The order in which every lock of an image is taken is written on [`Inner`].
//! - The header is cached with its version; header changes are version-checked batches
//!   followed by a notify, and a notify from another client marks the cache stale.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rbdx_objstore::{
    ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, SnapContext, SnapId, WriteOp,
};
use tokio::sync::Mutex as AsyncMutex;

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::features::Features;
use crate::header::{Header, ParentSpec, SnapInfo};
use crate::layout::Layout;
use crate::lock::LockState;
use crate::migration::MigrationSource;
use crate::names;
use crate::objectmap::ObjectMap;
use crate::objlocks::ObjectLocks;

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open at this snapshot (read-only).
    pub snap: Option<String>,
    /// Refuse writes.
    pub read_only: bool,
    /// How long to wait for another client to hand over the exclusive lock.
    pub lock_wait: Duration,
    /// Opened by the mirror daemon to keep a non-primary copy in step: writes are allowed
    /// although the image is not primary, and they are not journaled.
    pub replica: bool,
    /// Open at this snapshot id instead of a name (used for parents).
    pub(crate) snap_id: Option<u64>,
    /// Position in a clone chain.
    pub(crate) depth: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            snap: None,
            read_only: false,
            lock_wait: Duration::from_secs(30),
            replica: false,
            snap_id: None,
            depth: 0,
        }
    }
}

impl OpenOptions {
    /// Opens at snapshot `snap`.
    pub fn with_snap(mut self, snap: Option<String>) -> Self {
        self.snap = snap;
        self
    }

    /// Opens at the snapshot with store id `snap_id` (read-only).
    pub fn with_snap_id(mut self, snap_id: Option<u64>) -> Self {
        self.snap_id = snap_id;
        self
    }

    /// Opens as the mirror daemon's replica handle (see [`OpenOptions::replica`]).
    pub fn with_replica(mut self, replica: bool) -> Self {
        self.replica = replica;
        self
    }

    /// Opens read-only.
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
}

/// The cached header and the object version it was read at.
#[derive(Debug, Clone)]
pub(crate) struct HeaderState {
    pub header: Header,
    pub version: u64,
}

/// Shared state of an open image.
///
/// # Locks
///
/// Locks are taken in this order: `gate`, `lock.acquiring`, `journal_order`, `apply_budget`,
/// `objects`, then at most one of `parent`, `migration_source`, `map` and `journal`, then at
/// most one of `state`, `known`, `lock.handed_over` and `lock.task`. A lock may be skipped, but
/// none is taken while a lock later in the order is held. The locks of the last two groups are
/// leaves: no other lock of this image is taken while one of them is held.
///
/// - `gate` is held shared by every data operation (reads, writes, copies of a migration,
///   flatten), and by the task that applies a journaled change until it is applied. Snapshot
///   creation, removal and rollback, resize, object map rebuild, feature changes and lock
///   release hold it exclusively, so they see no write in flight. It is always the first lock
///   taken, and it is never taken again by a task that holds it.
/// - `lock.acquiring` orders taking and releasing the exclusive lock: the `owned` flag, the
///   take-over (header re-read, head object map load, journal replay) and the release
///   (journal close, object map drop) happen under it. Feature changes open and close the
///   journal under an exclusive `gate` instead.
/// - `journal_order` orders journaled changes per object (journaling images only). A change
///   or a read takes the locks of all the objects it touches before it starts, in ascending
///   object number, and takes no other `journal_order` lock while it holds them. A change
///   holds them from before it is journaled until it is applied.
/// - `apply_budget` bounds the bytes of journaled changes not yet applied; a change takes its
///   units after its `journal_order` locks and holds them until it is applied.
/// - `objects` orders an object map transition and the data operation it guards. An operation
///   holds the lock of one object at a time: shared for a plain write, exclusive for a
///   transition, a removal or a copy-up. A shared hold is dropped before the exclusive one is
///   asked for, never upgraded. A small journaled write given to the journal with its entry
///   holds the shared lock from before its append until its task has run.
/// - `parent` and `migration_source` hold the open parent image and migration source; each is
///   held while its image is opened, and on close while it is closed.
/// - `map` holds the head object map; it is held across the store write of a changed map, so
///   the stored map changes in the same order as this copy.
/// - `journal` holds the open journal; it is held only to read, set or take the handle, and
///   `journal_open` lets images without a journal skip it.
/// - `state` (the cached header) and `known` (head objects known to need no copy-up) are std
///   locks and, like `lock.handed_over`, `lock.task` and the tables inside `ObjectLocks`, are
///   never held across an `.await`.
///
/// A clone or a migration destination takes the locks of its parent or source image, through
/// that image's own operations, while it holds its own locks up to `objects`; a parent or
/// source never takes the locks of an image that reads through to it.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The store and its drivers.
    pub cluster: Cluster,
    pub store: Arc<dyn ObjectStore>,
    pub io: IoCtx,
    pub data_io: IoCtx,
    pub name: String,
    pub id: String,
    pub header_oid: String,
    pub snap: Option<SnapInfo>,
    pub read_only: bool,
    /// The mirror daemon's handle on a non-primary copy.
    pub replica: bool,
    pub lock_wait: Duration,
    pub state: RwLock<HeaderState>,
    pub stale: AtomicBool,
    pub gate: Arc<tokio::sync::RwLock<()>>,
    pub objects: ObjectLocks,
    /// The head object map, loaded while this client holds the exclusive lock.
    pub map: AsyncMutex<Option<ObjectMap>>,
    /// The object map of the snapshot the image is open at, if it has a valid one (reloaded
    /// when the header changes: a deep flatten fills it in).
    pub snap_map: RwLock<Option<ObjectMap>>,
    pub lock: LockState,
    /// The open parent image and the spec it was opened for.
    pub parent: AsyncMutex<Option<(ParentSpec, Image)>>,
    /// Head objects of a clone known to exist (no copy-up needed).
    pub known: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// How deep in a clone chain this image is (0 for the image opened by the user).
    pub depth: usize,
    /// The open migration source, once needed.
    pub migration_source: AsyncMutex<Option<Arc<dyn MigrationSource>>>,
    /// The image's journal, open while this handle holds the lock of a journaling image.
    pub journal: AsyncMutex<Option<Arc<dyn crate::journaling::ChangeLog>>>,
    /// True while `journal` holds an open journal (checked without the lock).
    pub journal_open: AtomicBool,
    /// Per-object order of journaled changes: held from append to applied, so changes to the
    /// same object are applied in the order they were journaled.
    pub journal_order: ObjectLocks,
    /// Room for journaled changes waiting to be applied.
    pub apply_budget: Arc<tokio::sync::Semaphore>,
}

/// An open image.
#[derive(Debug, Clone)]
pub struct Image {
    pub(crate) inner: Arc<Inner>,
}

tokio::task_local! {
    /// Set while a task runs an operation inside an exclusive hold of the gate it took first.
    static QUIESCED: ();
}

/// Reads a whole header with its version.
pub(crate) async fn read_header(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    oid: &str,
    name: &str,
) -> Result<HeaderState> {
    'again: loop {
        let mut entries = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        let mut version = None;
        loop {
            let op = ReadOp::new().omap_get_vals(after.as_deref(), "", 0);
            let mut res = store.read_op(io, oid, &op, None).await.map_err(|e| {
                if crate::directory::is_missing_object(&e) {
                    Error::not_found(format!("image {name} has no header ({oid})"))
                } else {
                    Error::store(format!("cannot read the header of image {name}"), e)
                }
            })?;
            match version {
                None => version = Some(res.version),
                Some(v) if v != res.version => continue 'again,
                Some(_) => {}
            }
            let (page, more) = res
                .take_omap_vals(0)
                .ok_or_else(|| Error::corrupt("header read returned no entries"))?;
            after = page.last().map(|(k, _)| k.clone());
            entries.extend(page);
            if !more {
                break;
            }
        }
        let header =
            Header::decode(&entries).map_err(|e| Error::corrupt(format!("image {name}: {e}")))?;
        return Ok(HeaderState {
            header,
            version: version.unwrap_or(0),
        });
    }
}

/// Changes a header optimistically (read, change, write asserting the version, retry on a
/// conflict); returns the new header and its version. Watchers are not notified.
pub(crate) async fn write_header_change(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    oid: &str,
    name: &str,
    change: impl Fn(&mut Header) -> Result<()>,
) -> Result<(Header, u64)> {
    loop {
        let current = read_header(store, io, oid, name).await?;
        let mut new = current.header.clone();
        change(&mut new)?;
        let (set, remove) = new.diff(&current.header);
        let mut op = WriteOp::new().assert_version(current.version);
        if !set.is_empty() {
            op = op.omap_set(set);
        }
        if !remove.is_empty() {
            op = op.omap_remove(remove);
        }
        match store.operate(io, oid, &op, &SnapContext::empty()).await {
            Ok(version) => return Ok((new, version)),
            Err(e) if e.kind() == StoreKind::VersionMismatch => continue,
            Err(e) => {
                return Err(Error::store(
                    format!("cannot update the header of image {name}"),
                    e,
                ));
            }
        }
    }
}

/// Reads the object map of snapshot `snap` of the image with `header`, if it has a valid one.
async fn load_snap_map(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
    header: &Header,
    snap: &SnapInfo,
) -> Result<Option<ObjectMap>> {
    if !header.features.contains(Features::OBJECT_MAP)
        || snap.flags & crate::header::FLAG_OBJECT_MAP_INVALID != 0
    {
        return Ok(None);
    }
    load_object_map(store, io, id, Some(snap.id)).await
}

/// Reads and decodes a stored object map.
pub(crate) async fn load_object_map(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
    snap: Option<u64>,
) -> Result<Option<ObjectMap>> {
    let oid = names::object_map_object(id, snap);
    match store
        .read_op(io, &oid, &ReadOp::new().read(0, None), None)
        .await
    {
        Ok(mut res) => {
            let bytes = res.take_data(0).unwrap_or_default();
            match ObjectMap::decode(&bytes) {
                Ok(map) => Ok(Some(map)),
                Err(e) => {
                    tracing::warn!("{oid}: {e}; treating the object map as invalid");
                    Ok(None)
                }
            }
        }
        Err(e) if crate::directory::is_missing_object(&e) => Ok(None),
        Err(e) => Err(Error::store(format!("cannot read object map {oid}"), e)),
    }
}

impl Image {
    /// Opens image `name` in the pool namespace `io`.
    pub async fn open(
        cluster: impl Into<Cluster>,
        io: IoCtx,
        name: &str,
        options: OpenOptions,
    ) -> Result<Image> {
        let cluster = cluster.into();
        let id = crate::directory::lookup(cluster.store(), &io, name).await?;
        Image::open_by_id(cluster, io, name, &id, options).await
    }

    /// Opens an image whose id is known.
    pub async fn open_by_id(
        cluster: impl Into<Cluster>,
        io: IoCtx,
        name: &str,
        id: &str,
        options: OpenOptions,
    ) -> Result<Image> {
        let cluster: Cluster = cluster.into();
        let store = cluster.store().clone();
        let header_oid = names::header_object(id);
        let state = read_header(&store, &io, &header_oid, name).await?;
        let data_io = match state.header.data_pool_id {
            Some(pool) => IoCtx::with_namespace(rbdx_objstore::PoolId(pool), io.namespace()),
            None => io.clone(),
        };
        let snap = match (&options.snap, options.snap_id) {
            (_, Some(id)) => Some(state.header.snapshots.get(&id).cloned().ok_or_else(|| {
                Error::not_found(format!("snapshot id {id} of image {name} does not exist"))
            })?),
            (Some(snap_name), None) => Some(
                state
                    .header
                    .snapshot_by_name(snap_name)
                    .cloned()
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "snapshot {snap_name} of image {name} does not exist"
                        ))
                    })?,
            ),
            (None, None) => None,
        };
        let snap_map = match &snap {
            Some(s) => load_snap_map(&store, &io, id, &state.header, s).await?,
            None => None,
        };
        let read_only = options.read_only || snap.is_some();
        let inner = Arc::new(Inner {
            cluster,
            store,
            io,
            data_io,
            name: name.to_owned(),
            id: id.to_owned(),
            header_oid,
            snap,
            read_only,
            replica: options.replica,
            lock_wait: options.lock_wait,
            state: RwLock::new(state),
            stale: AtomicBool::new(false),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            objects: ObjectLocks::default(),
            map: AsyncMutex::new(None),
            snap_map: RwLock::new(snap_map),
            lock: LockState::default(),
            parent: AsyncMutex::new(None),
            known: std::sync::Mutex::new(std::collections::HashSet::new()),
            depth: options.depth,
            migration_source: AsyncMutex::new(None),
            journal: AsyncMutex::new(None),
            journal_open: AtomicBool::new(false),
            journal_order: ObjectLocks::default(),
            apply_budget: crate::journaled::budget(),
        });
        crate::lock::start_watch(&inner).await?;
        Ok(Image { inner })
    }

    /// Releases the exclusive lock if held and stops watching the header.
    pub async fn close(self) -> Result<()> {
        crate::lock::shutdown(&self.inner).await
    }

    /// Returns the image name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns the image id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Returns the pool namespace of the header.
    pub fn io_ctx(&self) -> &IoCtx {
        &self.inner.io
    }

    /// Returns the pool namespace of the data objects.
    pub fn data_io_ctx(&self) -> &IoCtx {
        &self.inner.data_io
    }

    /// Returns the store and its drivers.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Returns the snapshot the image is open at, if any.
    pub fn snapshot(&self) -> Option<&SnapInfo> {
        self.inner.snap.as_ref()
    }

    /// Returns a copy of the cached header.
    pub fn header(&self) -> Header {
        self.inner.header()
    }

    /// Returns the size of the image (or of the snapshot it is open at).
    pub fn size(&self) -> u64 {
        match &self.inner.snap {
            Some(s) => s.size,
            None => self.inner.head_size(),
        }
    }

    /// Returns the layout.
    pub fn layout(&self) -> Layout {
        self.inner.layout()
    }

    /// Returns true if the image refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Re-reads the header from the store.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.refresh().await
    }
}

impl Inner {
    /// Returns the layout of the cached header (without copying the header).
    pub(crate) fn layout(&self) -> Layout {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .header
            .layout
    }

    /// Returns the head's size in the cached header (without copying the header).
    pub(crate) fn head_size(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .header
            .size
    }

    /// Returns a copy of the cached header.
    pub fn header(&self) -> Header {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .header
            .clone()
    }

    /// Re-reads the header, and the object map of the snapshot this handle is open at.
    pub async fn refresh(&self) -> Result<()> {
        self.stale.store(false, Ordering::SeqCst);
        let state = read_header(&self.store, &self.io, &self.header_oid, &self.name).await?;
        // A removed snapshot keeps the view it had.
        let snap_map = match self
            .snap
            .as_ref()
            .and_then(|s| state.header.snapshots.get(&s.id))
        {
            Some(s) => {
                Some(load_snap_map(&self.store, &self.io, &self.id, &state.header, s).await?)
            }
            None => None,
        };
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        if let Some(map) = snap_map {
            *self.snap_map.write().unwrap_or_else(|p| p.into_inner()) = map;
        }
        Ok(())
    }

    /// Returns true if the snapshot this handle is open at has an object map saying object
    /// `objectno` does not exist.
    pub(crate) fn snap_map_says_absent(&self, objectno: u64) -> bool {
        self.snap_map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|m| !m.get(objectno).may_exist())
    }

    /// Re-reads the header if another client announced a change.
    pub async fn refresh_if_stale(&self) -> Result<()> {
        if self.stale.load(Ordering::SeqCst) {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Returns the snapshot context writes carry.
    pub fn snapc(&self) -> SnapContext {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut ctx = SnapContext::from_snaps(state.header.snapshots.keys().map(|&id| SnapId(id)));
        ctx.seq = ctx.seq.max(state.header.snap_seq);
        ctx
    }

    /// Returns the parent of what this handle shows: the snapshot's (as the header last read
    /// has it: a deep flatten drops it), or the head's.
    pub fn parent_spec(&self) -> Option<ParentSpec> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        match &self.snap {
            Some(s) => match state.header.snapshots.get(&s.id) {
                Some(now) => now.parent.clone(),
                None => s.parent.clone(),
            },
            None => state.header.parent.clone(),
        }
    }

    /// Returns the name of data object `objectno`.
    pub fn data_oid(&self, objectno: u64) -> String {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        names::data_object(&state.header.object_prefix, objectno)
    }

    /// Changes the header with `change`, version-checked, retried on conflict, then tells
    /// the other watchers; returns the new header.
    pub async fn update_header(
        &self,
        change: impl Fn(&mut Header) -> Result<()>,
    ) -> Result<Header> {
        let (new, version) =
            write_header_change(&self.store, &self.io, &self.header_oid, &self.name, change)
                .await?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = HeaderState {
            header: new.clone(),
            version,
        };
        crate::lock::notify_header_update(self).await;
        Ok(new)
    }

    /// Takes the gate exclusively, unless this task already holds it: a journaled operation
    /// quiesces I/O before its event is journaled (see [`Inner::log_op`]), and the operation
    /// itself then runs inside that hold.
    pub(crate) async fn quiesce(&self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        if QUIESCED.try_with(|_| ()).is_ok() {
            return None;
        }
        Some(self.gate.clone().write_owned().await)
    }

    /// Runs `op` as a task that holds the gate exclusively (taken by the caller).
    pub(crate) async fn inside_quiesce<T>(op: impl std::future::Future<Output = T>) -> T {
        QUIESCED.scope((), op).await
    }

    /// Refuses writes on a read-only handle.
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only {
            let what = match &self.snap {
                Some(s) => format!("image {}@{} is a snapshot and read-only", self.name, s.name),
                None => format!("image {} is open read-only", self.name),
            };
            return Err(Error::new(ErrorKind::ReadOnly, what));
        }
        if let Some(m) = &self.header().migration
            && m.role == crate::migration::MigrationRole::Source
        {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "image {} is the source of a migration to {}; it is read-only until the \
                     migration is aborted",
                    self.name, m.image_name
                ),
            ));
        }
        if let Some(m) = &self.header().mirror
            && m.primary
            && self.replica
        {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "image {} is primary now; the mirror daemon no longer writes it",
                    self.name
                ),
            ));
        }
        if let Some(m) = &self.header().mirror
            && !m.primary
            && !self.replica
        {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!(
                    "image {} is a non-primary mirror copy; it is read-only until it is promoted",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// Writes a whole object map object.
    pub async fn store_object_map(&self, snap: Option<u64>, map: &ObjectMap) -> Result<()> {
        let oid = names::object_map_object(&self.id, snap);
        self.store
            .operate(
                &self.io,
                &oid,
                &WriteOp::new().write_full(map.encode()),
                &SnapContext::empty(),
            )
            .await
            .ctx(|| format!("cannot write object map {oid}"))?;
        Ok(())
    }

    /// Removes an object, ignoring that it is already gone.
    pub async fn remove_object(&self, io: &IoCtx, oid: &str, snapc: &SnapContext) -> Result<()> {
        match self
            .store
            .operate(io, oid, &WriteOp::new().remove(), snapc)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == StoreKind::NotFound => Ok(()),
            Err(e) => Err(Error::store(format!("cannot remove {oid}"), e)),
        }
    }

    /// Stores a header flag (e.g. object map invalid) on the head or a snapshot.
    pub async fn set_flags(&self, snap: Option<u64>, set: u64, clear: u64) -> Result<()> {
        self.update_header(|h| {
            match snap {
                None => h.flags = (h.flags | set) & !clear,
                Some(id) => {
                    if let Some(s) = h.snapshots.get_mut(&id) {
                        s.flags = (s.flags | set) & !clear;
                    }
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

/// Copies bytes into a zero-filled buffer of `len` at `at`, for reads that came back short.
pub(crate) fn place(buf: &mut [u8], at: usize, data: &Bytes) {
    let end = (at + data.len()).min(buf.len());
    if at < end {
        buf[at..end].copy_from_slice(&data[..end - at]);
    }
}
