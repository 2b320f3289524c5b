//! [`DirStore`]: opening a store directory and the [`ObjectStore`] implementation, which hands
//! changes to the handle's writer (see [`crate::desk`]) and runs reads on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_objstore::snapset::SnapSet;
use rbdx_objstore::{
    ClientId, ClientInfo, Error, ErrorKind, IoCtx, ListOptions, ListPage, LockInfo, LockOptions,
    NotifyAck, NotifyResult, ObjectStore, ObjectWrite, PoolId, PoolInfo, ReadOp, ReadResult,
    Result, SnapContext, SnapId, Subject, Watch, WatcherInfo, WriteOp, validate,
};
use tokio::sync::oneshot;

use crate::changes::Changes;
use crate::db::{self, db_error};
use crate::desk::{self, Desk, Inline};
use crate::files::{Files, Layout};
use crate::notify::{self, Answer, Frame, NotifyServer};
use crate::read::{Readers, RowCache};
use crate::session::Session;
use crate::staged::Staged;
use crate::writer::{Command, OperateRequest, Shared, Writer};
use crate::{admin, locks, read, reap, watch};

/// Options of [`DirStore::open_opts`].
#[derive(Debug, Clone)]
pub struct DirOptions {
    /// Create the directory and an empty store if there is none.
    pub create: bool,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions { create: true }
    }
}

impl DirOptions {
    /// Sets whether a missing store is created.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

/// A client session on an embedded store directory. Open one per process (or more, each is
/// its own session); any number of processes may have the same directory open.
#[derive(Debug, Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    readers: Readers,
    fsid: String,
    desk: Arc<Desk>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    notify: Mutex<Option<NotifyServer>>,
    session: Mutex<Option<Session>>,
    next_notify: AtomicU64,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed() -> Error {
    Error::new(ErrorKind::Io, Subject::Store).with_detail("the store handle is closed")
}

fn path_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Io, Subject::Path(path.to_path_buf())).with_source(e)
}

impl DirStore {
    /// The data-file access of this handle (tests look inside).
    #[cfg(test)]
    pub(crate) fn files(&self) -> &Files {
        &self.inner.shared.files
    }

    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<DirStore> {
        DirStore::open_opts(path, DirOptions::default())
    }

    /// Opens the store in directory `path` with options.
    pub fn open_opts(path: impl AsRef<Path>, opts: DirOptions) -> Result<DirStore> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::invalid(
                    Subject::Path(path.to_path_buf()),
                    "not a directory",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.create => {
                std::fs::create_dir_all(path).map_err(|e| path_error(path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(Subject::Path(path.to_path_buf()))
                    .with_detail("no store here"));
            }
            Err(e) => return Err(path_error(path, e)),
        }
        let layout = Layout::new(path);
        let db_path = layout.db();
        if !opts.create && !db_path.exists() {
            return Err(
                Error::not_found(Subject::Path(path.to_path_buf())).with_detail("no store here")
            );
        }
        let mut conn = db::open(&db_path).map_err(|e| path_error(&db_path, e))?;
        let fsid = match db::init(&mut conn, &random_fsid()).map_err(db_error)? {
            Ok(fsid) => fsid,
            Err(message) => {
                return Err(
                    Error::new(ErrorKind::Unsupported, Subject::Path(path.to_path_buf()))
                        .with_detail(message),
                );
            }
        };
        let session = match Session::register(&conn, &layout) {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(db_error(e)),
            Err(e) => return Err(path_error(&layout.clients(), e)),
        };
        let shared = Arc::new(Shared {
            files: Files::new(layout.clone(), session.token()),
            rows: RowCache::default(),
            changes: match Changes::open(path) {
                Ok(changes) => Some(Arc::new(changes)),
                Err(e) => {
                    tracing::warn!(
                        "{}: cannot map the change counters ({e}); reads ask the database every time",
                        path.display()
                    );
                    None
                }
            },
            client: session.id,
            addr: session.addr.clone(),
            watches: Arc::default(),
            dropped_watches: Arc::default(),
        });
        let mut writer = Writer::new(conn, shared.clone()).map_err(|e| path_error(path, e))?;
        reap::reap_dead_sessions(&mut writer)?;
        reap::remove_orphan_pool_dirs(&mut writer)?;
        let (desk, queue) = Desk::new(writer);
        let handle = desk::spawn(desk.clone(), queue).map_err(|e| path_error(path, e))?;
        Ok(DirStore {
            inner: Arc::new(Inner {
                shared,
                readers: Readers::new(db_path),
                fsid,
                desk,
                writer: Mutex::new(Some(handle)),
                notify: Mutex::new(None),
                session: Mutex::new(Some(session)),
                next_notify: AtomicU64::new(1),
            }),
        })
    }

    /// Returns the directory of the store.
    pub fn path(&self) -> PathBuf {
        self.inner.shared.files.layout().root().to_path_buf()
    }

    /// Returns the store's id, fixed when the store was created.
    pub fn fsid(&self) -> &str {
        &self.inner.fsid
    }

    fn send(&self, command: Command) -> Result<()> {
        if self.inner.desk.send(command) {
            Ok(())
        } else {
            Err(closed())
        }
    }

    /// Commits `writes` in one transaction, all or none, on this thread or the writer's;
    /// `None` if the writer gave them back (see [`Writer::operate_group`]).
    async fn commit_group(&self, writes: &[ObjectWrite]) -> Option<Vec<Result<u64>>> {
        let active = self.inner.desk.start();
        let (group, replies): (Vec<OperateRequest>, Vec<_>) = writes
            .iter()
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                let req = OperateRequest {
                    io: w.io.clone(),
                    oid: w.oid.clone(),
                    op: w.op.clone(),
                    snapc: w.snapc.clone(),
                    reply: tx,
                    staged: None,
                };
                (req, rx)
            })
            .unzip();
        match self.inner.desk.try_inline_group(&active, group) {
            Ok(collect) => {
                if collect {
                    let _ = self.send(Command::Run(Box::new(reap::collect_if_due_logged)));
                }
            }
            Err(group) => {
                let (taken, answer) = oneshot::channel();
                self.send(Command::Group(group, taken)).ok()?;
                if !answer.await.unwrap_or(false) {
                    return None;
                }
            }
        }
        let mut outcomes = Vec::with_capacity(replies.len());
        let mut unanswered = false;
        for reply in replies {
            match reply.await {
                Ok(outcome) => outcomes.push(outcome),
                Err(_) => {
                    unanswered = true;
                    outcomes.push(Err(closed()));
                }
            }
        }
        // A group the writer failed left nothing committed: applied in turn, each write meets
        // its own outcome, and one bad write does not fail the ones before it.
        if !unanswered && outcomes.iter().any(Result::is_err) {
            return None;
        }
        Some(outcomes)
    }

    async fn run<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Run(Box::new(move |w| {
            let _ = tx.send(job(w));
        })))?;
        rx.await.map_err(|_| closed())?
    }

    async fn read<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Io, Subject::Store)
                    .with_detail(format!("read task failed: {e}"))
            })?
    }

    fn ensure_notify_server(&self) -> Result<()> {
        let mut server = guard(&self.inner.notify);
        if server.is_none() {
            let started = NotifyServer::start(
                &self.inner.fsid,
                self.inner.shared.client,
                self.inner.shared.watches.clone(),
                self.inner.shared.dropped_watches.clone(),
            )
            .map_err(|e| Error::io(Subject::Client(ClientId(self.inner.shared.client)), e))?;
            *server = Some(started);
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        guard(&self.notify).take();
        let session = guard(&self.session).take();
        self.desk.close(session.map(|session| {
            Command::Run(Box::new(move |w: &mut Writer| {
                let _ = w.clear_applied();
                let layout = w.shared.files.layout().clone();
                w.shared.files.drop_spares();
                if let Err(e) = session.close(&w.conn, &layout) {
                    tracing::warn!("closing session: {e}");
                }
            }))
        }));
        if let Some(handle) = guard(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

fn random_fsid() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[async_trait]
impl ObjectStore for DirStore {
    fn fsid(&self) -> Option<String> {
        Some(self.inner.fsid.clone())
    }

    fn client(&self) -> ClientInfo {
        ClientInfo {
            id: ClientId(self.inner.shared.client),
            addr: self.inner.shared.addr.clone(),
        }
    }

    async fn pool_create(&self, name: &str) -> Result<PoolId> {
        validate::pool_name(name)?;
        let name = name.to_owned();
        self.run(move |w| admin::pool_create(w, &name)).await
    }

    async fn pool_remove(&self, name: &str) -> Result<()> {
        validate::pool_name(name)?;
        let name = name.to_owned();
        self.run(move |w| admin::pool_remove(w, &name)).await
    }

    async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
        self.read(|i| i.readers.with(admin::pool_list)).await
    }

    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
        validate::pool_name(name)?;
        let name = name.to_owned();
        self.read(move |i| i.readers.with(|c| admin::pool_lookup(c, &name)))
            .await
    }

    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
        self.read(move |i| i.readers.with(|c| admin::pool_by_id(c, id)))
            .await
    }

    async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        let io = io.clone();
        self.run(move |w| admin::namespace_create(w, &io)).await
    }

    async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
        validate::namespace_name(io)?;
        let io = io.clone();
        self.run(move |w| admin::namespace_remove(w, &io)).await
    }

    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
        self.read(move |i| i.readers.with(|c| admin::namespace_list(c, pool)))
            .await
    }

    async fn config_key_get(&self, key: &str) -> Result<Bytes> {
        validate::config_key(key, None)?;
        let key = key.to_owned();
        self.read(move |i| i.readers.with(|c| admin::config_key_get(c, &key)))
            .await
    }

    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
        validate::config_key(key, Some(&value))?;
        let key = key.to_owned();
        self.run(move |w| admin::config_key_set(w, &key, &value))
            .await
    }

    async fn config_key_remove(&self, key: &str) -> Result<()> {
        validate::config_key(key, None)?;
        let key = key.to_owned();
        self.run(move |w| admin::config_key_remove(w, &key)).await
    }

    async fn config_key_list(&self) -> Result<Vec<String>> {
        self.read(|i| i.readers.with(admin::config_key_list)).await
    }

    async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
        self.run(move |w| admin::snap_create(w, pool)).await
    }

    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
        self.run(move |w| admin::snap_remove(w, pool, snap)).await
    }

    async fn read_op(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult> {
        validate::read_op(io, oid, op)?;
        let i = &self.inner;
        let run = move |i: &Inner, io: &IoCtx, oid: &str, op: &ReadOp, small_only: bool| {
            let path = read::ReadPath {
                readers: &i.readers,
                rows: &i.shared.rows,
                files: &i.shared.files,
                changes: i.shared.changes.as_deref(),
            };
            read::read_op(path, io, oid, op, snap, small_only)
        };
        // A few kilobytes from the page cache and two indexed lookups cost less than
        // handing the read to another thread and waking this one again.
        if read::is_small(op)
            && let Some(result) = run(i, io, oid, op, true)?
        {
            return Ok(result);
        }
        let (io, oid, op) = (io.clone(), oid.to_owned(), op.clone());
        self.read(move |i| {
            run(i, &io, &oid, &op, false).and_then(|r| {
                r.ok_or_else(|| {
                    Error::new(ErrorKind::Io, io.object_subject(&oid))
                        .with_detail("a read without a size limit stopped at one")
                })
            })
        })
        .await
    }

    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64> {
        validate::write_op(io, oid, op, snapc)?;
        let active = self.inner.desk.start();
        // A new object's content is written here, on a blocking thread of the caller's, so the
        // writer only moves the file into place. A failure to stage is not the request's: the
        // writer then fills the file itself and reports what it meets.
        let staged = match crate::staged::stageable(op) {
            Some(writes) => {
                let shared = self.inner.shared.clone();
                tokio::task::spawn_blocking(move || Staged::write(&shared.files, &writes))
                    .await
                    .ok()
                    .and_then(|staged| staged.ok())
            }
            None => None,
        };
        let (tx, rx) = oneshot::channel();
        let req = OperateRequest {
            io: io.clone(),
            oid: oid.to_owned(),
            op: op.clone(),
            snapc: snapc.clone(),
            reply: tx,
            staged,
        };
        match self.inner.desk.try_inline(&active, req) {
            Inline::Done { collect: true } => {
                // The request is committed: a closed handle only means nobody collects.
                let _ = self.send(Command::Run(Box::new(reap::collect_if_due_logged)));
            }
            Inline::Done { collect: false } => {}
            Inline::Declined(req) => self.send(Command::Operate(req))?,
        }
        rx.await.map_err(|_| closed())?
    }

    async fn operate_group(&self, writes: &[ObjectWrite]) -> Vec<Result<u64>> {
        let plain = writes.len() > 1
            && writes.iter().all(|w| {
                validate::write_op(&w.io, &w.oid, &w.op, &w.snapc).is_ok()
                    && crate::staged::stageable(&w.op).is_none()
            });
        if plain && let Some(outcomes) = self.commit_group(writes).await {
            return outcomes;
        }
        rbdx_objstore::operate_in_turn(self, writes).await
    }

    fn commits_groups(&self) -> bool {
        true
    }

    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
        validate::io_ctx(io)?;
        let (io, opts) = (io.clone(), opts.clone());
        self.read(move |i| i.readers.with(|c| read::list_objects(c, &io, &opts)))
            .await
    }

    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
        validate::object_name(io, oid)?;
        let (io, oid) = (io.clone(), oid.to_owned());
        self.read(move |i| i.readers.with(|c| read::list_snaps(c, &io, &oid)))
            .await
    }

    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
        validate::object_name(io, oid)?;
        self.ensure_notify_server()?;
        let (io, oid) = (io.clone(), oid.to_owned());
        self.run(move |w| watch::watch(w, &io, &oid)).await
    }

    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
        validate::object_name(io, oid)?;
        self.run(move |w| watch::unwatch(w, cookie)).await
    }

    async fn notify(
        &self,
        io: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        validate::object_name(io, oid)?;
        validate::notify_payload(io, oid, payload.len())?;
        let (io, oid) = (io.clone(), oid.to_owned());
        let id = (self.inner.shared.client << 32)
            | self.inner.next_notify.fetch_add(1, Ordering::Relaxed);
        self.read(move |i| {
            let layout = i.shared.files.layout().clone();
            let watchers = i
                .readers
                .with(|c| watch::list_watchers(c, &layout, &io, &oid))?;
            let deadline = Instant::now() + timeout;
            let me = (i.shared.client, i.shared.addr.clone());
            let answers: Vec<(WatcherInfo, Answer)> = std::thread::scope(|scope| {
                let handles: Vec<_> = watchers
                    .into_iter()
                    .map(|w| {
                        let frame = Frame::Notify {
                            id,
                            cookie: w.cookie,
                            notifier: me.0,
                            addr: me.1.clone(),
                            payload: payload.clone(),
                        };
                        let fsid = &i.fsid;
                        scope.spawn(move || {
                            let answer =
                                notify::send(fsid, w.client.id.0, &frame, w.cookie, deadline);
                            (w, answer)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            let mut result = NotifyResult::default();
            for (watcher, answer) in answers {
                match answer {
                    Answer::Ack(reply) => result.acks.push(NotifyAck { watcher, reply }),
                    Answer::TimedOut => result.timeouts.push(watcher),
                    Answer::Gone => {}
                }
            }
            Ok(result)
        })
        .await
    }

    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
        validate::object_name(io, oid)?;
        let (io, oid) = (io.clone(), oid.to_owned());
        self.read(move |i| {
            let layout = i.shared.files.layout().clone();
            i.readers
                .with(|c| watch::list_watchers(c, &layout, &io, &oid))
        })
        .await
    }

    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
        validate::lock_options(io, oid, opts)?;
        let (io, oid, opts) = (io.clone(), oid.to_owned(), opts.clone());
        self.run(move |w| locks::lock(w, &io, &oid, &opts)).await
    }

    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
        let me = ClientId(self.inner.shared.client);
        self.lock_break(io, oid, name, me, cookie).await
    }

    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
        validate::lock_name(io, oid, name)?;
        let (io, oid, name) = (io.clone(), oid.to_owned(), name.to_owned());
        self.read(move |i| {
            let layout = i.shared.files.layout().clone();
            i.readers
                .with(|c| locks::lock_info(c, &layout, &io, &oid, &name))
        })
        .await
    }

    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
        validate::object_name(io, oid)?;
        let (io, oid) = (io.clone(), oid.to_owned());
        self.read(move |i| i.readers.with(|c| locks::lock_list(c, &io, &oid)))
            .await
    }

    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        validate::lock_name(io, oid, name)?;
        validate::lock_field(io, oid, "cookie", cookie)?;
        let (io, oid, name, cookie) = (
            io.clone(),
            oid.to_owned(),
            name.to_owned(),
            cookie.to_owned(),
        );
        self.run(move |w| locks::release(w, &io, &oid, &name, client, &cookie))
            .await
    }

    async fn flush(&self) -> Result<()> {
        self.run(reap::flush).await
    }
}
