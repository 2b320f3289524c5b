//! A journal on the object store: creating and removing it, appending entries (durable when
//! `append` returns), reading them back in order, clients and their commit positions, tags,
//! and trimming.
//!
//! # Appends
//!
//! Entries get increasing ids and go round-robin across the `splay_width` data objects of the
//! active object set (object number `set * splay_width + tid % splay_width`). One task per
//! writer batches what callers queue: every entry waiting is framed, the entries of each
//! object are written in one operation at the object's end, the objects of a batch are written
//! at once, and every caller hears back when its object write is done. Writes given with
//! entries ([`Journal::submit_with`]) go with the batch's entry writes in one
//! `operate_group`, entries first. When an object of the
//! active set reaches `2^order` bytes, the next batch starts a new set. Only the holder of the
//! image's exclusive lock appends, so one writer at a time: on opening, it finds where each
//! object of the active set ends (cutting off a torn tail) and the highest entry id.
//!
//! # Reading
//!
//! Entries are read a set at a time, every object of the set parsed up to its first bad
//! frame, and sorted by entry id. Ids only grow from one set to the next, so a reader can
//! start at the set of a commit position.
//!
//! # Trimming
//!
//! Sets below the oldest set any connected client still needs are removed. A client more
//! than `max_lag_sets` sets behind the active set is marked disconnected first, so that one
//! stalled reader cannot make the journal grow without bound.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Error, ErrorKind, Result};
use rbdx_objstore::{
    ErrorKind as StoreKind, IoCtx, ObjectStore, ObjectStoreExt as _, ObjectWrite, ReadOp,
    SnapContext, WriteOp,
};
use tokio::sync::{mpsc, oneshot};

use crate::entry::{self, Entry, Frames};
use crate::header::{
    self, Client, ClientState, Header, Meta, Position, Predecessor, Sets, Tag, VERSION,
};

/// The image's own client id.
pub const IMAGE_CLIENT: &str = "";
/// Most entries framed into one batch.
const MAX_BATCH: usize = 512;
/// Object reads in flight while reading a set.
const READ_CONCURRENCY: usize = 8;

/// How to create a journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Data objects hold up to 2^order bytes (12..=26).
    pub order: u8,
    /// Data objects per set.
    pub splay_width: u64,
    /// Clients further behind than this many sets are disconnected by trimming.
    pub max_lag_sets: u64,
    /// Pool of the data objects (default: the pool of the header).
    pub pool: Option<rbdx_objstore::PoolId>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            order: 24,
            splay_width: 4,
            max_lag_sets: 64,
            pool: None,
        }
    }
}

/// A queued append.
struct Request {
    /// The entry's data, as pieces written back to back.
    data: Vec<Bytes>,
    /// Writes to commit with the entry (see [`Journal::submit_with`]).
    with: Vec<ObjectWrite>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// An entry made durable, and whether the writes submitted with it were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the entry is.
    pub position: Position,
    /// The writes given with the entry were all applied (true when there were none).
    pub applied: bool,
}

/// The journal of one image.
#[derive(Debug)]
pub struct Journal {
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
    image_id: String,
    header_oid: String,
    meta: Meta,
    appends: Option<mpsc::UnboundedSender<Request>>,
}

fn store_error(what: String) -> impl FnOnce(rbdx_objstore::Error) -> Error {
    move |e| Error::store(what, e)
}

impl Journal {
    /// Creates an empty journal for image `image_id` (header in `io`), with the image as its
    /// first client and tag 0 (owned by this site).
    pub async fn create(
        store: &Arc<dyn ObjectStore>,
        io: &IoCtx,
        image_id: &str,
        options: JournalOptions,
    ) -> Result<()> {
        if !(12..=26).contains(&options.order) || options.splay_width == 0 {
            return Err(Error::invalid(format!(
                "journal order must be 12..26 and splay width at least 1, not {} and {}",
                options.order, options.splay_width
            )));
        }
        if let Some(pool) = options.pool {
            store
                .pool_by_id(pool)
                .await
                .map_err(store_error(format!("journal pool {}", pool.0)))?;
        }
        let mut h = Header::new(Meta {
            version: VERSION,
            order: options.order,
            splay_width: options.splay_width,
            pool_id: options.pool.unwrap_or(io.pool()).0,
            max_lag_sets: options.max_lag_sets,
        });
        h.clients.insert(
            IMAGE_CLIENT.to_owned(),
            Client {
                id: IMAGE_CLIENT.to_owned(),
                description: "image".to_owned(),
                state: ClientState::Connected,
                commit_position: None,
            },
        );
        h.push_tag(0, "", None);
        let oid = header::header_object(image_id);
        store
            .operate(
                io,
                &oid,
                &WriteOp::new().create(true).omap_set(h.encode()),
                &SnapContext::empty(),
            )
            .await
            .map_err(|e| {
                if e.kind() == StoreKind::AlreadyExists {
                    Error::new(
                        ErrorKind::AlreadyExists,
                        format!("journal {oid} already exists"),
                    )
                } else {
                    Error::store(format!("cannot create journal {oid}"), e)
                }
            })?;
        Ok(())
    }

    /// Removes the journal of image `image_id` and all its data objects (nothing if there is
    /// none).
    pub async fn remove(store: &Arc<dyn ObjectStore>, io: &IoCtx, image_id: &str) -> Result<()> {
        let oid = header::header_object(image_id);
        let pool = match header::read(store, io, &oid).await {
            Ok((h, _)) => h.meta.pool_id,
            Err(e) if e.kind() == ErrorKind::NotFound => io.pool().0,
            Err(e) => return Err(e),
        };
        let prefix = header::data_prefix(io.pool().0, image_id);
        let data_io = IoCtx::with_namespace(rbdx_objstore::PoolId(pool), io.namespace());
        for o in list_data(store, &data_io, &prefix).await? {
            remove_object(store, &data_io, &o).await?;
        }
        remove_object(store, io, &oid).await
    }

    /// Opens the journal of image `image_id` for reading.
    pub async fn open(store: Arc<dyn ObjectStore>, io: IoCtx, image_id: &str) -> Result<Journal> {
        let header_oid = header::header_object(image_id);
        let (h, _) = header::read(&store, &io, &header_oid).await?;
        Ok(Journal {
            store,
            io,
            image_id: image_id.to_owned(),
            header_oid,
            meta: h.meta,
            appends: None,
        })
    }

    /// Opens the journal for appending: finds where the active set ends (cutting off a torn
    /// tail) and starts the appender. Only the holder of the image's lock may do this.
    pub async fn open_for_append(
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        image_id: &str,
    ) -> Result<Journal> {
        let mut journal = Journal::open(store, io, image_id).await?;
        let h = journal.header().await?;
        let tag_tid = h.current_tag().map_or(0, |t| t.tid);
        let mut sizes = HashMap::new();
        let mut max_tid: Option<u64> = h
            .clients
            .values()
            .filter_map(|c| c.commit_position.map(|p| p.entry_tid))
            .max();
        let active = h.sets.active_set;
        for set in [active.saturating_sub(1), active] {
            for (objno, parsed) in journal.read_set(set).await? {
                if let Some(last) = parsed.entries.iter().map(|e| e.entry_tid).max() {
                    max_tid = Some(max_tid.map_or(last, |m| m.max(last)));
                }
                if parsed.torn {
                    journal
                        .cut_torn_tail(objno, parsed.valid_len as u64)
                        .await?;
                }
                if set == active {
                    sizes.insert(objno, parsed.valid_len as u64);
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (announce, announced) = mpsc::channel(1);
        tokio::spawn(announce_appends(
            journal.store.clone(),
            journal.io.clone(),
            journal.header_oid.clone(),
            announced,
        ));
        let appender = Appender {
            announce,
            store: journal.store.clone(),
            io: journal.data_io(),
            header_io: journal.io.clone(),
            header_oid: journal.header_oid.clone(),
            prefix: journal.prefix(),
            meta: journal.meta,
            active_set: active,
            next_tid: max_tid.map_or(0, |m| m + 1),
            tag_tid,
            sizes,
        };
        tokio::spawn(appender.run(rx));
        journal.appends = Some(tx);
        Ok(journal)
    }

    /// Returns the image id.
    pub fn image_id(&self) -> &str {
        &self.image_id
    }

    /// Returns the I/O context of the header (the image's pool and namespace).
    pub fn io_ctx(&self) -> &IoCtx {
        &self.io
    }

    /// Returns the layout.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// Returns the header object's name.
    pub fn header_oid(&self) -> &str {
        &self.header_oid
    }

    /// Returns the name prefix of the data objects: it names the image's pool, wherever the
    /// data objects are (as Ceph names them).
    pub fn prefix(&self) -> String {
        header::data_prefix(self.io.pool().0, &self.image_id)
    }

    /// Returns the store.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Returns the I/O context of the data objects.
    pub(crate) fn data_io(&self) -> IoCtx {
        IoCtx::with_namespace(
            rbdx_objstore::PoolId(self.meta.pool_id),
            self.io.namespace(),
        )
    }

    /// Reads the header.
    pub async fn header(&self) -> Result<Header> {
        Ok(header::read(&self.store, &self.io, &self.header_oid)
            .await?
            .0)
    }

    /// Appends `data` as one entry; returns its position once it is durable.
    pub async fn append(&self, data: Bytes) -> Result<Position> {
        self.submit(data)?.await
    }

    /// Queues `data` as one entry without waiting; the future returns its position once it
    /// is durable. Entries get their ids in the order they are submitted, and an entry is
    /// written even if its future is dropped.
    pub fn submit(
        &self,
        data: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<Position>> + Send + 'static> {
        self.submit_pieces(vec![data])
    }

    /// Like [`Journal::submit`], for an entry whose data is `pieces` back to back (see
    /// [`crate::event::encode_pieces`]): large pieces are written from where they are.
    pub fn submit_pieces(
        &self,
        pieces: Vec<Bytes>,
    ) -> Result<impl std::future::Future<Output = Result<Position>> + Send + 'static> {
        let appended = self.submit_with(pieces, Vec::new())?;
        Ok(async move { appended.await.map(|a| a.position) })
    }

    /// Like [`Journal::submit_pieces`], with writes to other objects applied after the entry
    /// is written, in the same store commit when the store
    /// [commits groups](ObjectStore::commits_groups). They are never applied without the
    /// entry; the answer says whether they were.
    pub fn submit_with(
        &self,
        pieces: Vec<Bytes>,
        with: Vec<ObjectWrite>,
    ) -> Result<impl std::future::Future<Output = Result<Appended>> + Send + 'static> {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if len > entry::MAX_DATA {
            return Err(Error::invalid(format!(
                "a journal entry of {len} bytes is over the {}-byte limit",
                entry::MAX_DATA
            )));
        }
        let appends = self
            .appends
            .as_ref()
            .ok_or_else(|| Error::invalid("the journal is not open for appending"))?;
        let (reply, rx) = oneshot::channel();
        appends
            .send(Request {
                data: pieces,
                with,
                reply,
            })
            .map_err(|_| Error::corrupt("the journal appender has stopped"))?;
        Ok(async move {
            rx.await
                .map_err(|_| Error::corrupt("the journal appender has stopped"))?
        })
    }

    async fn cut_torn_tail(&self, objno: u64, valid_len: u64) -> Result<()> {
        let oid = format!("{}{objno}", self.prefix());
        tracing::warn!("journal object {oid}: ignoring a torn tail after byte {valid_len}");
        self.store
            .operate(
                &self.data_io(),
                &oid,
                &WriteOp::new().truncate(valid_len),
                &SnapContext::empty(),
            )
            .await
            .map_err(store_error(format!("cannot cut the torn tail of {oid}")))?;
        Ok(())
    }

    /// Reads and parses every data object of object set `set`: (object number, entries).
    pub async fn read_set(&self, set: u64) -> Result<Vec<(u64, entry::Parsed)>> {
        let splay = self.meta.splay_width;
        let io = self.data_io();
        let prefix = self.prefix();
        futures::stream::iter(set * splay..(set + 1) * splay)
            .map(|objno| {
                let oid = format!("{prefix}{objno}");
                let io = io.clone();
                async move {
                    match self
                        .store
                        .read_op(&io, &oid, &ReadOp::new().read(0, None), None)
                        .await
                    {
                        Ok(mut res) => Ok(Some((
                            objno,
                            entry::parse(&res.take_data(0).unwrap_or_default()),
                        ))),
                        Err(e) if e.kind() == StoreKind::NotFound => Ok(None),
                        Err(e) => Err(Error::store(format!("cannot read journal object {oid}"), e)),
                    }
                }
            })
            .buffered(READ_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
    }

    /// Returns the entries after `after` (every entry if `None`), in entry-id order, with
    /// their positions. Reads one set at a time from the set of `after`.
    pub async fn entries_after(&self, after: Option<Position>) -> Result<Vec<(Position, Entry)>> {
        let h = self.header().await?;
        let splay = self.meta.splay_width;
        let first = after
            .map(|p| p.object_number / splay)
            .unwrap_or(h.sets.minimum_set)
            .max(h.sets.minimum_set);
        let mut out = Vec::new();
        for set in first..=h.sets.active_set {
            let mut entries: Vec<(Position, Entry)> = self
                .read_set(set)
                .await?
                .into_iter()
                .flat_map(|(objno, parsed)| {
                    parsed.entries.into_iter().map(move |e| {
                        (
                            Position {
                                object_number: objno,
                                tag_tid: e.tag_tid,
                                entry_tid: e.entry_tid,
                            },
                            e,
                        )
                    })
                })
                .filter(|(p, _)| after.is_none_or(|a| p.entry_tid > a.entry_tid))
                .collect();
            entries.sort_by_key(|(p, _)| p.entry_tid);
            out.extend(entries);
        }
        Ok(out)
    }

    /// Returns, for a client at commit position `commit`, the last committed entry of each
    /// data object of the splay (one per object in use, most recent first), as Ceph lists a
    /// client's commit position (`object_positions`). Reads the set of `commit` and, near a
    /// set boundary, the one before it.
    pub async fn object_positions(&self, commit: Position) -> Result<Vec<Position>> {
        let minimum_set = self.header().await?.sets.minimum_set;
        let splay = self.meta.splay_width;
        let mut latest: HashMap<u64, Position> = HashMap::new();
        let commit_set = commit.object_number / splay;
        let mut set = commit_set;
        loop {
            for (objno, parsed) in self.read_set(set).await? {
                let last = parsed
                    .entries
                    .iter()
                    .filter(|e| e.entry_tid <= commit.entry_tid)
                    .max_by_key(|e| e.entry_tid);
                if let Some(e) = last {
                    let p = Position {
                        object_number: objno,
                        tag_tid: e.tag_tid,
                        entry_tid: e.entry_tid,
                    };
                    latest
                        .entry(objno % splay)
                        .and_modify(|q| {
                            if q.entry_tid < p.entry_tid {
                                *q = p;
                            }
                        })
                        .or_insert(p);
                }
            }
            if latest.len() as u64 >= splay || set <= minimum_set || set < commit_set {
                break;
            }
            set -= 1;
        }
        if latest.is_empty() {
            // The entry itself was trimmed away: its position is all there is.
            return Ok(vec![commit]);
        }
        let mut out: Vec<Position> = latest.into_values().collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.entry_tid));
        Ok(out)
    }

    /// Streams the entries after `position` (every entry if `None`) in order: what mirroring
    /// replays on the other site.
    pub fn replay_from(
        &self,
        position: Option<Position>,
    ) -> impl futures::Stream<Item = Result<(Position, Entry)>> + '_ {
        futures::stream::once(self.entries_after(position))
            .map_ok(|entries| futures::stream::iter(entries.into_iter().map(Ok)))
            .try_flatten()
    }

    /// Registers client `id` (connected, at the current end of the journal).
    pub async fn register_client(&self, id: &str, description: &str) -> Result<()> {
        let end = self.last_position().await?;
        self.register_client_at(id, description, end).await
    }

    /// Registers client `id` with its commit position at `position` (`None`: before the
    /// oldest entry kept); `AlreadyExists` if it is registered.
    pub async fn register_client_at(
        &self,
        id: &str,
        description: &str,
        position: Option<Position>,
    ) -> Result<()> {
        let end = position;
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            if h.clients.contains_key(id) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("journal client '{id}' is already registered"),
                ));
            }
            h.clients.insert(
                id.to_owned(),
                Client {
                    id: id.to_owned(),
                    description: description.to_owned(),
                    state: ClientState::Connected,
                    commit_position: end,
                },
            );
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Unregisters client `id`.
    pub async fn unregister_client(&self, id: &str) -> Result<()> {
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            h.clients
                .remove(id)
                .map(|_| ())
                .ok_or_else(|| no_client(id))
        })
        .await
        .map(|_| ())
    }

    /// Marks every client but the image's own disconnected; returns their ids (`NotFound` if
    /// there is none).
    pub async fn disconnect_others(&self) -> Result<Vec<String>> {
        let h = header::update(&self.store, &self.io, &self.header_oid, |h| {
            let mut any = false;
            for c in h.clients.values_mut().filter(|c| c.id != IMAGE_CLIENT) {
                c.state = ClientState::Disconnected;
                any = true;
            }
            if any {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::NotFound,
                    "no registered clients to disconnect",
                ))
            }
        })
        .await?;
        Ok(h.clients
            .into_keys()
            .filter(|id| id != IMAGE_CLIENT)
            .collect())
    }

    /// Marks client `id` disconnected: trimming stops waiting for it.
    pub async fn disconnect_client(&self, id: &str) -> Result<()> {
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            let c = h.clients.get_mut(id).ok_or_else(|| no_client(id))?;
            c.state = ClientState::Disconnected;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Records client `id`'s commit position (it never moves back).
    pub async fn commit(&self, id: &str, position: Position) -> Result<()> {
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            let c = h.clients.get_mut(id).ok_or_else(|| no_client(id))?;
            if c.commit_position
                .is_none_or(|p| p.entry_tid < position.entry_tid)
            {
                c.commit_position = Some(position);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Allocates a new tag in `tag_class` for site `mirror_uuid` (empty: this site), after
    /// `predecessor`; appends then go under it (for a writer opened afterwards).
    pub async fn allocate_tag(
        &self,
        tag_class: u64,
        mirror_uuid: &str,
        predecessor: Option<Predecessor>,
    ) -> Result<Tag> {
        let h = header::update(&self.store, &self.io, &self.header_oid, |h| {
            h.push_tag(tag_class, mirror_uuid, predecessor.clone());
            Ok(())
        })
        .await?;
        h.current_tag()
            .cloned()
            .ok_or_else(|| Error::corrupt("journal tag just allocated is missing"))
    }

    /// Returns the position of the last entry, if any.
    pub async fn last_position(&self) -> Result<Option<Position>> {
        let h = self.header().await?;
        let mut last: Option<Position> = None;
        for set in [h.sets.active_set.saturating_sub(1), h.sets.active_set] {
            for (objno, parsed) in self.read_set(set).await? {
                for e in parsed.entries {
                    if last.is_none_or(|l| e.entry_tid > l.entry_tid) {
                        last = Some(Position {
                            object_number: objno,
                            tag_tid: e.tag_tid,
                            entry_tid: e.entry_tid,
                        });
                    }
                }
            }
        }
        Ok(last)
    }

    /// Removes the object sets every connected client has passed, after disconnecting clients
    /// too far behind; returns how many sets were removed.
    pub async fn trim(&self) -> Result<u64> {
        let splay = self.meta.splay_width;
        let max_lag = self.meta.max_lag_sets;
        let h = header::update(&self.store, &self.io, &self.header_oid, |h| {
            let active = h.sets.active_set;
            for c in h.clients.values_mut() {
                let set = c
                    .commit_position
                    .map_or(h.sets.minimum_set, |p| p.object_number / splay);
                if c.id != IMAGE_CLIENT
                    && c.state == ClientState::Connected
                    && active.saturating_sub(set) > max_lag
                {
                    tracing::warn!(
                        "journal client '{}' is {} object sets behind; disconnecting it",
                        c.id,
                        active - set
                    );
                    c.state = ClientState::Disconnected;
                }
            }
            Ok(())
        })
        .await?;
        let needed = h
            .clients
            .values()
            .filter(|c| c.state == ClientState::Connected)
            .map(|c| match c.commit_position {
                // A set is done once a client is past it: the commit's own set stays.
                Some(p) => p.object_number / splay,
                None => h.sets.minimum_set,
            })
            .min()
            .unwrap_or(h.sets.active_set)
            .min(h.sets.active_set);
        if needed <= h.sets.minimum_set {
            return Ok(0);
        }
        let io = self.data_io();
        let prefix = self.prefix();
        for set in h.sets.minimum_set..needed {
            for objno in set * splay..(set + 1) * splay {
                remove_object(&self.store, &io, &format!("{prefix}{objno}")).await?;
            }
        }
        let removed = needed - h.sets.minimum_set;
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            h.sets.minimum_set = h.sets.minimum_set.max(needed);
            Ok(())
        })
        .await?;
        Ok(removed)
    }

    /// Empties the journal in place: removes every data object, restarts at set 0 and drops
    /// every client but the image's, whose commit position is cleared. It takes no lock and
    /// applies nothing: for a journal no image writes to (`Image::reset_journal` resets an
    /// image's journal under its lock).
    pub async fn reset(&self) -> Result<()> {
        let io = self.data_io();
        for o in self.data_objects().await? {
            remove_object(&self.store, &io, &o).await?;
        }
        header::update(&self.store, &self.io, &self.header_oid, |h| {
            h.sets = Sets::default();
            h.clients.retain(|id, _| id == IMAGE_CLIENT);
            if let Some(c) = h.clients.get_mut(IMAGE_CLIENT) {
                c.commit_position = None;
                c.state = ClientState::Connected;
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Counts the data objects present.
    pub async fn object_count(&self) -> Result<u64> {
        Ok(self.data_objects().await?.len() as u64)
    }

    /// Lists the data objects present.
    async fn data_objects(&self) -> Result<Vec<String>> {
        list_data(&self.store, &self.data_io(), &self.prefix()).await
    }
}

/// Lists the objects named with `prefix` in `io`.
async fn list_data(store: &Arc<dyn ObjectStore>, io: &IoCtx, prefix: &str) -> Result<Vec<String>> {
    store
        .list_objects(io, prefix)
        .try_collect()
        .await
        .map_err(store_error(format!(
            "cannot list journal objects {prefix}*"
        )))
}

fn no_client(id: &str) -> Error {
    Error::not_found(format!("journal client '{id}' is not registered"))
}

async fn remove_object(store: &Arc<dyn ObjectStore>, io: &IoCtx, oid: &str) -> Result<()> {
    match store
        .operate(io, oid, &WriteOp::new().remove(), &SnapContext::empty())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == StoreKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(format!("cannot remove {oid}"), e)),
    }
}

/// Callers waiting for the entries of one object write: each entry's position, where its
/// writes are in the batch's list of writes to apply with the entries, and its reply.
type Waiting = Vec<(Position, Range<usize>, oneshot::Sender<Result<Appended>>)>;

/// The payload of the notify on the header that tells followers entries were appended.
pub(crate) const APPENDED: &[u8] = b"journal_appended";
/// The shortest time between two such notifies.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);

/// Notifies the journal header after appends, at most every [`ANNOUNCE_EVERY`], so that
/// followers waiting for new entries wake up; ends with the appender.
async fn announce_appends(
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
    oid: String,
    mut appended: mpsc::Receiver<()>,
) {
    while appended.recv().await.is_some() {
        if let Err(e) = store
            .notify(
                &io,
                &oid,
                Bytes::from_static(APPENDED),
                Duration::from_secs(2),
            )
            .await
        {
            tracing::debug!("journal {oid}: announcing appends: {e}");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// The one writer of a journal: batches queued entries into object writes.
struct Appender {
    /// Wakes the task that notifies followers.
    announce: mpsc::Sender<()>,
    store: Arc<dyn ObjectStore>,
    io: IoCtx,
    header_io: IoCtx,
    header_oid: String,
    prefix: String,
    meta: Meta,
    active_set: u64,
    next_tid: u64,
    tag_tid: u64,
    /// Bytes in each data object of the active set.
    sizes: HashMap<u64, u64>,
}

impl Appender {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.write_batch(batch).await;
        }
    }

    async fn write_batch(&mut self, batch: Vec<Request>) {
        let splay = self.meta.splay_width;
        // object number -> (frames, waiting callers)
        let mut groups: BTreeMap<u64, (Frames, Waiting)> = BTreeMap::new();
        let mut with: Vec<ObjectWrite> = Vec::new();
        for req in batch {
            let tid = self.next_tid;
            self.next_tid += 1;
            let objno = self.active_set * splay + tid % splay;
            let group = groups.entry(objno).or_default();
            group.0.push(self.tag_tid, tid, &req.data);
            let first = with.len();
            with.extend(req.with);
            group.1.push((
                Position {
                    object_number: objno,
                    tag_tid: self.tag_tid,
                    entry_tid: tid,
                },
                first..with.len(),
                req.reply,
            ));
        }
        // object number -> (pieces, their length, waiting callers)
        let groups: Vec<(u64, Vec<Bytes>, u64, Waiting)> = groups
            .into_iter()
            .map(|(objno, (frames, waiting))| {
                let len = frames.len() as u64;
                (objno, frames.into_pieces(), len, waiting)
            })
            .collect();
        let appends: Vec<ObjectWrite> = groups
            .iter()
            .map(|(objno, pieces, _, _)| {
                let mut at = self.sizes.get(objno).copied().unwrap_or(0);
                let mut op = WriteOp::new();
                for piece in pieces {
                    op = op.write(at, piece.clone());
                    at += piece.len() as u64;
                }
                ObjectWrite {
                    io: self.io.clone(),
                    oid: format!("{}{objno}", self.prefix),
                    op,
                    snapc: SnapContext::empty(),
                }
            })
            .collect();
        let count = appends.len();
        let outcomes = if with.is_empty() {
            let writes = appends
                .iter()
                .map(|w| self.store.operate(&w.io, &w.oid, &w.op, &w.snapc));
            futures::future::join_all(writes).await
        } else {
            // The entries first: a write given with an entry is never applied without it.
            let mut all = appends;
            all.extend(with);
            self.store.operate_group(&all).await
        };
        let (appended, applied) = outcomes.split_at(count.min(outcomes.len()));
        let limit = 1u64 << self.meta.order;
        let mut full = false;
        for ((objno, _, len, waiting), result) in groups.into_iter().zip(appended) {
            match result {
                Ok(_) => {
                    let size = self.sizes.entry(objno).or_insert(0);
                    *size += len;
                    full |= *size >= limit;
                    for (position, range, reply) in waiting {
                        let applied = applied
                            .get(range)
                            .is_some_and(|r| r.iter().all(|o| o.is_ok()));
                        let _ = reply.send(Ok(Appended { position, applied }));
                    }
                }
                Err(e) => {
                    let oid = format!("{}{objno}", self.prefix);
                    for (_, _, reply) in waiting {
                        let e = Error::store(
                            format!("cannot append to journal object {oid}"),
                            e.duplicate(),
                        );
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
        if full {
            self.advance_set().await;
        }
        // Full: a notify is pending already and covers these entries too.
        let _ = self.announce.try_send(());
    }

    /// Starts the next object set.
    async fn advance_set(&mut self) {
        let next = self.active_set + 1;
        let updated = header::update(&self.store, &self.header_io, &self.header_oid, |h| {
            h.sets.active_set = h.sets.active_set.max(next);
            Ok(())
        })
        .await;
        match updated {
            Ok(_) => {
                self.active_set = next;
                self.sizes.clear();
            }
            Err(e) => tracing::warn!(
                "journal {}: cannot start a new object set: {e}",
                self.header_oid
            ),
        }
    }
}
