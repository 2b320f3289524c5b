//! The writer: one per store handle, holding the handle's writing database connection, and
//! performing every change in the order requests arrive, on the writer thread or on the thread
//! of a caller that found it idle (see [`crate::desk`]).
//!
//! # Locking
//!
//! Changes to one object are serialised across processes by an exclusive OFD lock on one byte
//! (the object's *stripe*) of the `object.locks` file, held from reading the object's rows
//! until its intent is applied. SQLite serialises the commits themselves. Stripe locks are
//! taken before the transaction starts, blocking only when the writer holds none, so two
//! writers can never wait for each other in a cycle.
//!
//! # Group commit
//!
//! Write requests that are queued together are planned one after another (each under its
//! stripe lock) and committed in one transaction, then their intents are applied and the
//! locks released. Later plain data writes to an object already in the batch are planned
//! together with its first request, as one change with one intent; any other request for it
//! waits for the next round.
//!
//! # Crash safety
//!
//! A batch is visible only once its transaction commits. Before that, only private new files
//! exist (reaped with the session if the process dies). After it, the committed intents are
//! replayed by whoever next locks the object, or by the reaper of the dead session.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rbdx_objstore::{Error, IoCtx, Result, SnapContext, SnapId, Subject, WriteOp, WriteStep};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::db::{self, db_error};
use crate::files::Files;
use crate::intent::Intent;
use crate::plan::{Change, MapStep, Outcome, Planner};
use crate::rows::{self, CloneRow, HeadRow, ObjKey};
use crate::session::FileIds;
use crate::sys;

/// A data file to fill before a commit.
enum Fill<'a> {
    /// A new private file.
    Fresh(&'a mut crate::plan::Fresh),
    /// Bytes past the end of the committed file.
    Append(&'a crate::plan::Append),
}

impl Fill<'_> {
    fn weight(&self) -> u64 {
        match self {
            Fill::Fresh(f) => f.weight(),
            Fill::Append(a) => a.writes.iter().map(|(_, d)| d.len() as u64).sum(),
        }
    }

    fn run(&mut self, files: &Files, pool: u64) -> std::io::Result<()> {
        match self {
            Fill::Fresh(f) => f.materialize(files, pool).map(|_| ()),
            Fill::Append(a) => {
                a.fill(files, pool)?;
                files.mark_dirty(pool, a.file);
                Ok(())
            }
        }
    }
}

/// Largest number of write requests committed together.
pub(crate) const MAX_BATCH: usize = 64;
/// Applied intents a writer keeps recorded before it clears them with the next commit.
const CLEAR_INTENTS_AT: usize = 1024;
/// Bytes of new files in one batch above which they are filled on several threads.
const PARALLEL_FILL: u64 = 1 << 20;
/// How long the writer waits, idle, before cleaning up applied intents.
pub(crate) const IDLE_TICK: Duration = Duration::from_millis(50);
/// How often an idle writer looks for dead sessions.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// What every part of a store handle shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) files: Files,
    /// Head rows reads remembered; the writer forgets the objects it changes.
    pub(crate) rows: crate::read::RowCache,
    /// The change counters shared with other processes (none if they could not be mapped).
    pub(crate) changes: Option<Arc<crate::changes::Changes>>,
    pub(crate) client: u64,
    pub(crate) addr: String,
    /// Local watch channels by cookie.
    pub(crate) watches: crate::notify::Watches,
    /// Cookies of watches whose handle was dropped; their rows are deleted when idle.
    pub(crate) dropped_watches: Arc<std::sync::Mutex<Vec<u64>>>,
}

/// A write request.
pub(crate) struct OperateRequest {
    pub(crate) io: IoCtx,
    pub(crate) oid: String,
    pub(crate) op: WriteOp,
    pub(crate) snapc: SnapContext,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
    /// The new object's content, written by the caller (see [`crate::staged`]).
    pub(crate) staged: Option<crate::staged::Staged>,
}

/// Work for the writer thread.
pub(crate) enum Command {
    Operate(OperateRequest),
    /// Write requests to commit together, all or none (see [`Writer::operate_group`]); the
    /// sender learns whether they were taken (each is then answered) or given back.
    Group(Vec<OperateRequest>, oneshot::Sender<bool>),
    Run(Box<dyn FnOnce(&mut Writer) + Send>),
    /// Finish pending work and stop.
    Shutdown,
}

/// What planning found and decided for one request.
struct Planned {
    head: Option<HeadRow>,
    clones: Vec<CloneRow>,
    /// The version the commit gives the object.
    version: u64,
    outcome: Outcome,
}

/// A queued request with its object. The stripe, a hash of the object, is compared first:
/// a batch compares every request's object with the others', and whole keys (names that
/// differ only in their last bytes) cost 4 µs per request at 56 requests.
struct Queued {
    key: ObjKey,
    stripe: u64,
    req: OperateRequest,
}

impl Queued {
    fn new(req: OperateRequest) -> Queued {
        let key = ObjKey {
            pool: req.io.pool().0,
            ns: req.io.namespace().to_owned(),
            name: req.oid.clone(),
        };
        Queued {
            stripe: key.stripe(),
            key,
            req,
        }
    }

    fn same_object(&self, other: &Queued) -> bool {
        self.stripe == other.stripe && self.key == other.key
    }
}

/// A request planned and ready to commit, with the later requests for the same object that
/// were planned together with it (see [`merge_later`]).
struct Prepared {
    req: OperateRequest,
    merged: Vec<OperateRequest>,
    key: ObjKey,
    stripe: u64,
    planned: Planned,
}

impl Prepared {
    /// Answers every request of the group. A change gives each request its own version, in
    /// order, ending at `version`.
    fn reply(self, result: Result<u64>, changed: bool) {
        answer(self.req, self.merged, result, changed);
    }

    fn changes(&self) -> bool {
        matches!(self.planned.outcome, Outcome::Change(_))
    }
}

/// The version a committed request got and, if it recorded an intent, the object row.
type Written = (u64, Option<i64>);

/// The writer's state: used by the writer thread, or by a caller that found it idle (see
/// [`crate::desk`]).
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) shared: Arc<Shared>,
    stripes: File,
    held: HashMap<u64, usize>,
    pub(crate) ids: FileIds,
    /// Intents this writer applied that are still recorded: object row id -> version.
    applied: HashMap<i64, u64>,
    /// Files released (recorded as garbage) by this writer since its last collection.
    pub(crate) released: u64,
    last_reap: Instant,
    /// The store's change counter, busy since a transaction of the current command began.
    marked: Option<crate::changes::Changing>,
    /// Pools and namespaces found to exist while planning the current batch.
    checked: HashSet<(u64, String)>,
    /// The rows this writer's last commits left.
    heads: crate::heads::Heads,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("client", &self.shared.client)
            .finish_non_exhaustive()
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::io(Subject::Store, e)
}

impl Writer {
    /// Creates the writer.
    pub(crate) fn new(conn: Connection, shared: Arc<Shared>) -> std::io::Result<Writer> {
        let stripes = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(shared.files.layout().stripe_locks())?;
        Ok(Writer {
            conn,
            shared,
            stripes,
            held: HashMap::new(),
            ids: FileIds::default(),
            applied: HashMap::new(),
            released: 0,
            last_reap: Instant::now(),
            checked: HashSet::new(),
            marked: None,
            heads: crate::heads::Heads::default(),
        })
    }

    /// Ends the store-wide change of the command just done (its transactions committed or
    /// rolled back): readers may trust what they find from now on.
    pub(crate) fn settle(&mut self) {
        self.marked = None;
    }

    /// Cleans up while no command comes: dropped watches, applied intents, dead sessions.
    pub(crate) fn idle(&mut self) {
        if let Err(e) = crate::watch::forget_dropped(self) {
            tracing::warn!("forgetting dropped watches: {e}");
        }
        if let Err(e) = self.clear_applied() {
            tracing::warn!("clearing applied intents: {e}");
        }
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.last_reap = Instant::now();
            if let Err(e) = crate::reap::reap_dead_sessions(self) {
                tracing::warn!("reaping dead sessions: {e}");
            }
        }
    }

    /// Takes the stripe lock of `key`; with `wait == false`, returns `false` if it is held
    /// elsewhere.
    pub(crate) fn lock_stripe(&mut self, stripe: u64, wait: bool) -> Result<bool> {
        if let Some(count) = self.held.get_mut(&stripe) {
            *count += 1;
            return Ok(true);
        }
        if !sys::ofd_lock(&self.stripes, stripe, wait).map_err(io_error)? {
            return Ok(false);
        }
        self.held.insert(stripe, 1);
        Ok(true)
    }

    /// Releases one hold of the stripe lock of `key`.
    pub(crate) fn unlock_stripe(&mut self, stripe: u64) {
        if let Some(count) = self.held.get_mut(&stripe) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&stripe);
                if let Err(e) = sys::ofd_unlock(&self.stripes, stripe) {
                    tracing::warn!("releasing stripe lock {stripe}: {e}");
                }
            }
        }
    }

    /// Starts an immediate (writing) transaction that may change anything: the store's
    /// change counter stays busy until the current command is done (see [`Writer::settle`]).
    pub(crate) fn begin(&mut self) -> Result<Transaction<'_>> {
        if self.marked.is_none() {
            self.marked = self.shared.changes.as_ref().map(|c| c.begin([], true));
        }
        self.begin_quiet()
    }

    /// Starts an immediate transaction that changes no object a reader may have remembered
    /// (or marks what it changes itself).
    pub(crate) fn begin_quiet(&mut self) -> Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)
    }

    /// Clears the intents this writer applied from their rows.
    pub(crate) fn clear_applied(&mut self) -> Result<()> {
        if self.applied.is_empty() {
            return Ok(());
        }
        let applied = std::mem::take(&mut self.applied);
        let tx = self.begin_quiet()?;
        clear_intents(&tx, &applied).map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// Applies the intent recorded in `head`, unless this writer applied it itself. The caller
    /// holds the object's stripe lock, so nobody else is applying it.
    pub(crate) fn replay_intent(&mut self, pool: u64, head: &HeadRow) -> Result<()> {
        let Some(body) = &head.intent else {
            return Ok(());
        };
        if self.applied.get(&head.id) == Some(&head.version) {
            return Ok(());
        }
        match Intent::decode(body) {
            Ok(intent) => match self.shared.files.open(pool, intent.file) {
                Ok(file) => {
                    intent.apply(&file).map_err(io_error)?;
                    self.shared.files.mark_dirty(pool, intent.file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e)),
            },
            Err(e) => tracing::error!("dropping undecodable intent of object row {}: {e}", head.id),
        }
        Ok(())
    }

    /// Runs `req` alone, unless its object's stripe is locked elsewhere: then gives it back,
    /// since waiting for that lock belongs on the writer thread.
    pub(crate) fn operate_inline(&mut self, req: OperateRequest) -> Option<OperateRequest> {
        let q = Queued::new(req);
        let stripe = q.stripe;
        match self.lock_stripe(stripe, false) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Some(q.req),
        }
        self.operate_queued(VecDeque::from([q]));
        self.unlock_stripe(stripe);
        self.settle();
        None
    }

    /// Commits `group`, write requests for distinct objects, in one transaction, all or
    /// none, and answers each. Gives the group back untouched when it cannot: two requests
    /// for one object, a staged one, a stripe another process holds (with `wait`, the first
    /// stripe is waited for), a request that cannot be planned. The caller then runs them one
    /// by one, and each meets its own outcome.
    pub(crate) fn operate_group(
        &mut self,
        group: Vec<OperateRequest>,
        wait: bool,
    ) -> std::result::Result<(), Vec<OperateRequest>> {
        let queued: Vec<Queued> = group.into_iter().map(Queued::new).collect();
        let distinct = queued
            .iter()
            .enumerate()
            .all(|(i, q)| queued[..i].iter().all(|o| !o.same_object(q)));
        if !distinct || queued.iter().any(|q| q.req.staged.is_some()) {
            return Err(queued.into_iter().map(|q| q.req).collect());
        }
        let mut prepared: Vec<Prepared> = Vec::with_capacity(queued.len());
        let mut queued = VecDeque::from(queued);
        while let Some(q) = queued.pop_front() {
            let locked = self.lock_stripe(q.stripe, wait && prepared.is_empty());
            let planned = match locked {
                Ok(true) => match self.prepare(&q.req, &q.key, q.stripe, &q.req.op, 1) {
                    Ok(planned) => Some(planned),
                    Err(_) => {
                        self.unlock_stripe(q.stripe);
                        None
                    }
                },
                Ok(false) | Err(_) => None,
            };
            let Some(planned) = planned else {
                let mut back = Vec::with_capacity(prepared.len() + 1 + queued.len());
                for p in prepared {
                    self.release(&p);
                    back.push(p.req);
                }
                back.push(q.req);
                back.extend(queued.into_iter().map(|q| q.req));
                self.ids.batch_done();
                self.checked.clear();
                return Err(back);
            };
            let Queued { key, stripe, req } = q;
            prepared.push(Prepared {
                req,
                merged: Vec::new(),
                key,
                stripe,
                planned,
            });
        }
        self.commit_batch(prepared, true);
        Ok(())
    }

    /// Lets go of a planned request that will not be committed: deletes the new files it
    /// made and releases its stripe lock.
    fn release(&mut self, p: &Prepared) {
        discard_files(&self.shared.files, p);
        self.unlock_stripe(p.stripe);
    }

    /// Plans and commits queued requests. A request for an object already in the batch, or
    /// whose stripe another process holds, waits for the next round together with every later
    /// request for the same object, so each object's requests keep their order and batches stay
    /// as large as the queue allows. Later plain data writes to an object join its first
    /// request instead of waiting (see [`merge_later`]).
    pub(crate) fn operate_batch(&mut self, batch: Vec<OperateRequest>) {
        self.operate_queued(batch.into_iter().map(Queued::new).collect());
    }

    fn operate_queued(&mut self, mut pending: VecDeque<Queued>) {
        while !pending.is_empty() {
            let mut prepared: Vec<Prepared> = Vec::new();
            let mut deferred: VecDeque<Queued> = VecDeque::new();
            while let Some(q) = pending.pop_front() {
                let busy = prepared
                    .iter()
                    .any(|p| p.stripe == q.stripe && p.key == q.key)
                    || deferred.iter().any(|d| d.same_object(&q));
                if busy {
                    deferred.push_back(q);
                    continue;
                }
                // Block only while holding no stripe lock, so writers never wait in a cycle.
                match self.lock_stripe(q.stripe, prepared.is_empty()) {
                    Ok(true) => {}
                    Ok(false) => {
                        deferred.push_back(q);
                        continue;
                    }
                    Err(e) => {
                        let _ = q.req.reply.send(Err(e));
                        continue;
                    }
                }
                let Queued {
                    key,
                    stripe,
                    mut req,
                } = q;
                let mut merged = merge_later(&key, stripe, &req, &mut pending);
                let mut planned = if merged.is_empty() {
                    self.prepare(&req, &key, stripe, &req.op, 1)
                } else {
                    let mut op = req.op.clone();
                    for later in &merged {
                        for step in later.op.steps() {
                            op = op.push(step.clone());
                        }
                    }
                    self.prepare(&req, &key, stripe, &op, 1 + merged.len() as u64)
                };
                if planned.is_err() && !merged.is_empty() {
                    // One of the later requests fails on its own: plan the first alone and
                    // let the others follow in the next round, in order.
                    deferred.extend(merged.drain(..).map(|req| Queued {
                        key: key.clone(),
                        stripe,
                        req,
                    }));
                    planned = self.prepare(&req, &key, stripe, &req.op, 1);
                }
                if let (Ok(planned), Some(staged)) = (&mut planned, req.staged.take())
                    && let Outcome::Change(change) = &mut planned.outcome
                    && let Some(fresh) = &mut change.fresh
                {
                    fresh.adopt(staged);
                }
                match planned {
                    Ok(planned) => prepared.push(Prepared {
                        req,
                        merged,
                        key,
                        stripe,
                        planned,
                    }),
                    Err(e) => {
                        self.unlock_stripe(stripe);
                        let _ = req.reply.send(Err(e));
                    }
                }
            }
            self.commit_batch(prepared, false);
            pending = deferred;
        }
    }

    /// Plans `op` (the steps of `req` and of the `count - 1` requests merged into it) on the
    /// object's current rows.
    fn prepare(
        &mut self,
        req: &OperateRequest,
        key: &ObjKey,
        stripe: u64,
        op: &WriteOp,
        count: u64,
    ) -> Result<Planned> {
        if !self.checked.contains(&(key.pool, key.ns.clone())) {
            check_pool_ns(&self.conn, &req.io)?;
            self.checked.insert((key.pool, key.ns.clone()));
        }
        let remembered = match &self.shared.changes {
            Some(changes) => self.heads.take(key, stripe, changes),
            None => None,
        };
        let (head, clones) = match remembered {
            Some((head, clones)) => (Some(head), clones),
            None => rows::load_object(&self.conn, key).map_err(db_error)?,
        };
        if let Some(h) = &head {
            self.replay_intent(key.pool, h)?;
        }
        let version = match &head {
            Some(h) => h.version + count,
            None => removed_version(&self.conn, key.pool).map_err(db_error)? + count,
        };
        let head_id = head.as_ref().filter(|h| h.present).map(|h| h.id);
        let conn = &self.conn;
        let shared = self.shared.clone();
        let ids = &mut self.ids;
        let pool = key.pool;
        let client = shared.client;
        let removed = |snap: SnapId| -> bool {
            conn.prepare_cached("SELECT 1 FROM removed_snaps WHERE pool = ?1 AND snap = ?2")
                .and_then(|mut s| s.exists(params![pool as i64, snap.0 as i64]))
                .unwrap_or(false)
        };
        let stored_xattr = |name: &str| -> Result<Option<bytes::Bytes>> {
            let Some(id) = head_id else { return Ok(None) };
            conn.prepare_cached("SELECT value FROM xattrs WHERE obj = ?1 AND name = ?2")
                .and_then(|mut s| {
                    s.query_row(params![id, name], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                })
                .map(|v| v.map(bytes::Bytes::from))
                .map_err(db_error)
        };
        let mut alloc = || ids.next(conn, client, pool).map_err(db_error);
        let mut planner = Planner {
            files: &shared.files,
            pool,
            io: &req.io,
            oid: &req.oid,
            alloc: &mut alloc,
            stored_xattr: &stored_xattr,
            removed_snap: &removed,
        };
        let mtime = db::to_nanos(SystemTime::now());
        let outcome = planner.plan(op, &req.snapc, head.as_ref(), &clones, mtime)?;
        Ok(Planned {
            head,
            clones,
            version,
            outcome,
        })
    }

    /// Fills the new files of a planned batch, several at once when there is enough to do,
    /// and returns the requests whose files could be filled; the others are answered with
    /// their error here.
    fn fill_fresh(&mut self, mut prepared: Vec<Prepared>) -> Vec<Prepared> {
        let files = &self.shared.files;
        let mut jobs: Vec<(usize, u64, Fill<'_>)> = prepared
            .iter_mut()
            .enumerate()
            .filter_map(|(index, p)| match &mut p.planned.outcome {
                Outcome::Change(change) => {
                    let pool = p.key.pool;
                    match (&mut change.fresh, &change.append) {
                        (Some(f), _) => Some((index, pool, Fill::Fresh(f))),
                        (None, Some(a)) => Some((index, pool, Fill::Append(a))),
                        (None, None) => None,
                    }
                }
                Outcome::Unchanged(_) => None,
            })
            .collect();
        let weight: u64 = jobs.iter().map(|(_, _, f)| f.weight()).sum();
        let lanes = fill_lanes().min(jobs.len());
        let mut failed: Vec<(usize, std::io::Error)> = Vec::new();
        if lanes > 1 && weight >= PARALLEL_FILL {
            let per_lane = jobs.len().div_ceil(lanes);
            let outcomes: Vec<Vec<(usize, std::io::Result<()>)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .chunks_mut(per_lane)
                    .map(|lane| {
                        scope.spawn(move || {
                            lane.iter_mut()
                                .map(|(i, pool, f)| (*i, f.run(files, *pool)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            for (index, result) in outcomes.into_iter().flatten() {
                if let Err(e) = result {
                    failed.push((index, e));
                }
            }
        } else {
            for (index, pool, mut fill) in jobs {
                if let Err(e) = fill.run(files, pool) {
                    failed.push((index, e));
                }
            }
        }
        if failpoint_named().is_some() {
            for (index, p) in prepared.iter().enumerate() {
                if fills(p)
                    && failpoint_fails("fill", &p.req.oid)
                    && !failed.iter().any(|(i, _)| *i == index)
                {
                    failed.push((index, failpoint_io_error()));
                }
            }
        }
        if failed.is_empty() {
            return prepared;
        }
        let mut kept = Vec::with_capacity(prepared.len());
        for (index, p) in prepared.into_iter().enumerate() {
            match failed.iter().position(|(i, _)| *i == index) {
                Some(at) => {
                    let (_, e) = failed.swap_remove(at);
                    self.release(&p);
                    let e = Error::io(p.req.io.object_subject(&p.req.oid), e);
                    p.reply(Err(e), false);
                }
                None => kept.push(p),
            }
        }
        kept
    }

    /// Fills, commits and answers planned requests in one transaction. With `all_or_none`,
    /// a request that fails fails them all, and nothing of them is committed.
    fn commit_batch(&mut self, prepared: Vec<Prepared>, all_or_none: bool) {
        let planned = prepared.len();
        let prepared = self.fill_fresh(prepared);
        if prepared.is_empty() || (all_or_none && prepared.len() < planned) {
            // The requests left are answered like the one that failed to fill.
            for p in prepared {
                self.release(&p);
                let e = Error::io(
                    p.req.io.object_subject(&p.req.oid),
                    std::io::Error::other("another write of its group failed"),
                );
                p.reply(Err(e), false);
            }
            self.ids.batch_done();
            self.checked.clear();
            return;
        }
        // Applied intents are cleared in bulk: an object written again replaces its intent
        // anyway, and a reader applying an intent that is already applied changes nothing.
        let applied = if self.applied.len() >= CLEAR_INTENTS_AT {
            std::mem::take(&mut self.applied)
        } else {
            HashMap::new()
        };
        let changing = self
            .shared
            .changes
            .as_ref()
            .map(|c| c.begin(prepared.iter().map(|p| p.stripe), false));
        let result: Result<Vec<Result<Written>>> = (|| {
            let tx = self.begin_quiet()?;
            clear_intents(&tx, &applied).map_err(db_error)?;
            let mut results = Vec::with_capacity(prepared.len());
            let mut exist = HashSet::new();
            for p in &prepared {
                results.push(write_prepared(&tx, p, &mut exist));
            }
            if all_or_none && let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                // Dropping the transaction rolls it back.
                return Err(e.duplicate());
            }
            failpoint("before-commit");
            tx.commit().map_err(db_error)?;
            failpoint("after-commit");
            Ok(results)
        })();
        drop(changing);
        match result {
            Ok(results) => {
                // Callers are answered first: a committed change is what readers see (they
                // apply a recorded intent to what they read), and the intents are applied
                // below, before the stripe locks go.
                let mut committed = Vec::with_capacity(prepared.len());
                for (p, result) in prepared.into_iter().zip(results) {
                    self.shared.rows.forget(&p.key, p.stripe);
                    let changed = p.changes();
                    match result {
                        Ok(written) => {
                            let Prepared {
                                req,
                                merged,
                                key,
                                stripe,
                                planned,
                            } = p;
                            answer(req, merged, Ok(written.0), changed);
                            committed.push((key, stripe, planned, written));
                        }
                        Err(e) => {
                            self.release(&p);
                            p.reply(Err(e), false);
                        }
                    }
                }
                for (key, stripe, mut planned, (version, intent_row)) in committed {
                    if self.after_commit(&key, &planned, version, intent_row) {
                        self.remember_head(&key, stripe, &mut planned, version);
                    }
                    self.unlock_stripe(stripe);
                }
            }
            Err(e) => {
                self.applied.extend(applied);
                for p in prepared {
                    self.release(&p);
                    p.reply(Err(e.duplicate()), false);
                }
            }
        }
        self.ids.batch_done();
        self.checked.clear();
    }

    /// Remembers the head row a committed in-place change left (see [`crate::heads`]), when
    /// it is simple to know: a head that stays, with its clones as they were.
    fn remember_head(&mut self, key: &ObjKey, stripe: u64, planned: &mut Planned, version: u64) {
        let (Outcome::Change(change), Some(head), Some(changes)) =
            (&planned.outcome, &planned.head, &self.shared.changes)
        else {
            return;
        };
        if !change.present
            || change.removed
            || change.clone.is_some()
            || change.overlap_update.is_some()
        {
            return;
        }
        let head = HeadRow {
            id: head.id,
            present: true,
            size: change.size,
            version,
            mtime: change.mtime,
            file: change.file,
            seq: change.seq,
            // Applied by this writer: nothing left to replay.
            intent: None,
        };
        let clones = std::mem::take(&mut planned.clones);
        self.heads.remember(key, stripe, changes, head, clones);
    }

    /// Applies the committed intent of a request, if it has one, and counts released files.
    /// Returns false if an intent stays to be replayed.
    ///
    /// Applying on this thread, under the stripe lock, measured faster than handing intents to
    /// a separate thread: on two cores the extra thread competed for CPU and held stripe locks
    /// longer.
    fn after_commit(
        &mut self,
        key: &ObjKey,
        planned: &Planned,
        version: u64,
        intent_row: Option<i64>,
    ) -> bool {
        let Outcome::Change(change) = &planned.outcome else {
            return false;
        };
        if change.drop_file.is_some() {
            self.released += 1;
        }
        let (Some(intent), Some(row)) = (&change.intent, intent_row) else {
            return change.intent.is_none();
        };
        let applied = self
            .shared
            .files
            .open(key.pool, intent.file)
            .and_then(|file| intent.apply(&file));
        match applied {
            Ok(()) => {
                self.shared.files.mark_dirty(key.pool, intent.file);
                self.applied.insert(row, version);
                true
            }
            // The intent stays recorded: readers apply it to what they read, and the next
            // writer of the object applies it again.
            Err(e) => {
                tracing::error!("applying the committed intent of object row {row}: {e}");
                false
            }
        }
    }
}

/// Answers `first` and the requests merged into it. A change gives each request its own
/// version, in order, ending at the result's.
fn answer(first: OperateRequest, merged: Vec<OperateRequest>, result: Result<u64>, changed: bool) {
    let last = merged.len() as u64;
    for (i, req) in std::iter::once(first).chain(merged).enumerate() {
        let reply = match &result {
            Ok(version) if changed => Ok(version - (last - i as u64)),
            Ok(version) => Ok(*version),
            Err(e) => Err(e.duplicate()),
        };
        let _ = req.reply.send(reply);
    }
}

/// The largest request merged with others: for larger ones the commit is a small part of
/// the cost, and merging the large pieces of an import (several per object, in flight
/// together) made the image read back slower (a 1 GiB NBD read: 0.55-1.09 s against
/// 0.33-0.57 s).
const MERGE_REQUEST: usize = 64 << 10;
/// Bytes of data above which later requests are no longer merged into one.
const MERGE_BYTES: usize = 1 << 20;

/// Takes from `pending` the requests for `key` that directly follow `first` in its order and
/// can be planned together with it: plain data writes under the same snapshot context, which
/// give the same object as planning them one after another. Stops at the first one that
/// cannot join, which keeps its place.
fn merge_later(
    key: &ObjKey,
    stripe: u64,
    first: &OperateRequest,
    pending: &mut VecDeque<Queued>,
) -> Vec<OperateRequest> {
    let mut merged = Vec::new();
    let mut bytes = data_bytes(&first.op);
    if !plain_data(&first.op) || bytes > MERGE_REQUEST {
        return merged;
    }
    let mut at = 0;
    while at < pending.len() {
        let q = &pending[at];
        if q.stripe != stripe || q.key != *key {
            at += 1;
            continue;
        }
        let size = data_bytes(&q.req.op);
        bytes += size;
        let joins = plain_data(&q.req.op)
            && size <= MERGE_REQUEST
            && bytes <= MERGE_BYTES
            && q.req.snapc == first.snapc;
        if !joins {
            break;
        }
        if let Some(q) = pending.remove(at) {
            merged.push(q.req);
        }
    }
    merged
}

/// True if every step of `op` only changes data, and none can fail on the object's state.
fn plain_data(op: &WriteOp) -> bool {
    !op.steps().is_empty()
        && op.steps().iter().all(|s| {
            matches!(
                s,
                WriteStep::Write { .. }
                    | WriteStep::WriteFull(_)
                    | WriteStep::Zero { .. }
                    | WriteStep::Truncate(_)
                    | WriteStep::Create { exclusive: false }
            )
        })
}

fn data_bytes(op: &WriteOp) -> usize {
    op.steps()
        .iter()
        .map(|s| match s {
            WriteStep::Write { data, .. } | WriteStep::WriteFull(data) => data.len(),
            _ => 0,
        })
        .sum()
}

fn discard_files(files: &Files, p: &Prepared) {
    if let Outcome::Change(change) = &p.planned.outcome {
        for file in &change.new_files {
            let _ = files.unlink(p.key.pool, *file);
        }
    }
}

/// Checks that the pool and namespace of `io` exist.
pub(crate) fn check_pool_ns(conn: &Connection, io: &IoCtx) -> Result<()> {
    match rows::check_pool_ns(conn, io.pool().0, io.namespace()).map_err(db_error)? {
        Ok(()) => Ok(()),
        Err(true) => Err(Error::not_found(Subject::PoolId(io.pool()))),
        Err(false) => Err(Error::not_found(io.namespace_subject())),
    }
}

/// Clears intents known to be applied from their rows, unless the row changed since.
fn clear_intents(tx: &Transaction<'_>, applied: &HashMap<i64, u64>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE objects SET intent = NULL WHERE id = ?1 AND version = ?2 AND intent IS NOT NULL",
    )?;
    for (row, version) in applied {
        stmt.execute(params![row, *version as i64])?;
    }
    Ok(())
}

/// Returns the highest version of an object of `pool` removed without a trace.
pub(crate) fn removed_version(conn: &Connection, pool: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT removed_version FROM pools WHERE id = ?1")?
        .query_row([pool as i64], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.unwrap_or(0) as u64)
}

/// Records that an object of `pool` with `version` was removed without a trace.
pub(crate) fn note_removed(tx: &Transaction<'_>, pool: u64, version: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE pools SET removed_version = max(removed_version, ?1) WHERE id = ?2")?
        .execute(params![version as i64, pool as i64])?;
    Ok(())
}

/// Deletes the omap, xattrs, locks and watches of an object row.
pub(crate) fn delete_attachments(
    tx: &Transaction<'_>,
    obj: i64,
    with_maps: bool,
) -> rusqlite::Result<()> {
    if with_maps {
        tx.prepare_cached("DELETE FROM omap WHERE obj = ?1")?
            .execute([obj])?;
        tx.prepare_cached("DELETE FROM xattrs WHERE obj = ?1")?
            .execute([obj])?;
    }
    tx.prepare_cached("DELETE FROM locks WHERE obj = ?1")?
        .execute([obj])?;
    tx.prepare_cached("DELETE FROM lock_holds WHERE obj = ?1")?
        .execute([obj])?;
    tx.prepare_cached("DELETE FROM watchers WHERE obj = ?1")?
        .execute([obj])?;
    Ok(())
}

fn apply_map_steps(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    obj: i64,
    steps: &[MapStep],
) -> rusqlite::Result<()> {
    for step in steps {
        match step {
            MapStep::Clear => {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE obj = ?1"))?
                    .execute([obj])?;
            }
            MapStep::Set(pairs) => {
                let mut stmt = tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO {table} (obj, {column}, value) VALUES (?1, ?2, ?3)"
                ))?;
                for (k, v) in pairs {
                    stmt.execute(params![obj, k, &v[..]])?;
                }
            }
            MapStep::Remove(keys) => {
                let mut stmt = tx.prepare_cached(&format!(
                    "DELETE FROM {table} WHERE obj = ?1 AND {column} = ?2"
                ))?;
                for k in keys {
                    stmt.execute(params![obj, k])?;
                }
            }
        }
    }
    Ok(())
}

/// Writes one planned request; returns its version and, if it recorded an intent, the row.
/// `exist` holds the pools and namespaces already found in this transaction.
fn write_prepared(
    tx: &Transaction<'_>,
    p: &Prepared,
    exist: &mut HashSet<(u64, String)>,
) -> Result<Written> {
    let change = match &p.planned.outcome {
        Outcome::Unchanged(version) => return Ok((*version, None)),
        Outcome::Change(change) => change,
    };
    if failpoint_fails("row", &p.req.oid) {
        return Err(Error::io(
            p.req.io.object_subject(&p.req.oid),
            failpoint_io_error(),
        ));
    }
    let scope = (p.key.pool, p.key.ns.clone());
    if !exist.contains(&scope) {
        match rows::check_pool_ns(tx, p.key.pool, &p.key.ns).map_err(db_error)? {
            Ok(()) => {}
            Err(true) => return Err(Error::not_found(Subject::PoolId(p.req.io.pool()))),
            Err(false) => return Err(Error::not_found(p.req.io.namespace_subject())),
        }
        exist.insert(scope);
    }
    write_change(tx, p, change).map_err(db_error)
}

fn write_change(tx: &Transaction<'_>, p: &Prepared, change: &Change) -> rusqlite::Result<Written> {
    let key = &p.key;
    let version = p.planned.version;
    let head = p.planned.head.as_ref();
    let mut new_clone_row = None;
    if let (Some(clone), Some(h)) = (&change.clone, head) {
        tx.prepare_cached(
            "INSERT INTO objects (pool, ns, name, snap, present, size, version, mtime, file, seq, snaps, overlap)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
        )?
        .execute(params![
            key.pool as i64,
            key.ns,
            key.name,
            clone.id.0 as i64,
            clone.size as i64,
            h.version as i64,
            h.mtime,
            h.file.map(|f| f as i64),
            db::encode_snaps(&clone.snaps),
            db::encode_extents(&clone.overlap),
        ])?;
        let row = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO omap (obj, key, value) SELECT ?1, key, value FROM omap WHERE obj = ?2",
        )?
        .execute([row, h.id])?;
        tx.prepare_cached("INSERT INTO xattrs (obj, name, value) SELECT ?1, name, value FROM xattrs WHERE obj = ?2")?
            .execute([row, h.id])?;
        new_clone_row = Some(row);
    }
    if let Some((row, overlap)) = &change.overlap_update
        && let Some(row) = row.or(new_clone_row)
    {
        tx.prepare_cached("UPDATE objects SET overlap = ?1 WHERE id = ?2")?
            .execute(params![db::encode_extents(overlap), row])?;
    }
    let clones_remain = new_clone_row.is_some() || !p.planned.clones.is_empty();
    let intent = change.intent.as_ref().map(Intent::encode);
    let mut intent_row = None;
    if change.present {
        let head_id = match head {
            // Setting the indexed `file` column, even to its value, rewrites its index entry
            // (and dirties an index page); an in-place change keeps its file.
            Some(h) if h.file == change.file => {
                tx.prepare_cached(
                    "UPDATE objects SET present = 1, size = ?1, version = ?2, mtime = ?3, seq = ?4, intent = ?5
                     WHERE id = ?6",
                )?
                .execute(params![
                    change.size as i64,
                    version as i64,
                    change.mtime,
                    change.seq as i64,
                    intent,
                    h.id
                ])?;
                h.id
            }
            Some(h) => {
                tx.prepare_cached(
                    "UPDATE objects SET present = 1, size = ?1, version = ?2, mtime = ?3, file = ?4, seq = ?5, intent = ?6
                     WHERE id = ?7",
                )?
                .execute(params![
                    change.size as i64,
                    version as i64,
                    change.mtime,
                    change.file.map(|f| f as i64),
                    change.seq as i64,
                    intent,
                    h.id
                ])?;
                h.id
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO objects (pool, ns, name, snap, present, size, version, mtime, file, seq, intent)
                     VALUES (?1, ?2, ?3, 0, 1, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    key.pool as i64,
                    key.ns,
                    key.name,
                    change.size as i64,
                    version as i64,
                    change.mtime,
                    change.file.map(|f| f as i64),
                    change.seq as i64,
                    intent
                ])?;
                tx.last_insert_rowid()
            }
        };
        if change.removed {
            delete_attachments(tx, head_id, false)?;
        }
        apply_map_steps(tx, "omap", "key", head_id, &change.omap)?;
        apply_map_steps(tx, "xattrs", "name", head_id, &change.xattrs)?;
        if change.intent.is_some() {
            intent_row = Some(head_id);
        }
    } else if let Some(h) = head {
        delete_attachments(tx, h.id, true)?;
        if clones_remain {
            tx.prepare_cached(
                "UPDATE objects SET present = 0, size = 0, file = NULL, version = ?1, seq = ?2, intent = NULL WHERE id = ?3",
            )?
            .execute(params![version as i64, change.seq as i64, h.id])?;
        } else {
            tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?
                .execute([h.id])?;
            note_removed(tx, key.pool, version)?;
        }
    } else {
        // A change that leaves an absent object absent (a zero, say) still used its version:
        // the object's next creation must not get it again.
        note_removed(tx, key.pool, version)?;
    }
    if let Some(file) = change.drop_file {
        tx.prepare_cached("INSERT INTO garbage (pool, file) VALUES (?1, ?2)")?
            .execute(params![key.pool as i64, file as i64])?;
    }
    Ok((version, intent_row))
}

/// Threads used to fill new files (the machine's parallelism, asked once: the answer reads
/// cgroup files).
fn fill_lanes() -> usize {
    static LANES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LANES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The failpoint `RBDX_DIR_FAILPOINT` names, if any (read once).
fn failpoint_named() -> Option<&'static str> {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    POINT
        .get_or_init(|| std::env::var("RBDX_DIR_FAILPOINT").ok())
        .as_deref()
}

/// Aborts the process at the named point when `RBDX_DIR_FAILPOINT` names it. Recovery tests
/// use it to die exactly between planning and commit (`before-commit`) or between commit and
/// the application of intents (`after-commit`).
fn failpoint(name: &str) {
    if failpoint_named() == Some(name) {
        std::process::abort();
    }
}

/// True when `RBDX_DIR_FAILPOINT` is `fail-<step>:<oid>`: tests make the step (`fill`, the
/// new file's data, or `row`, the object's row) fail for that object, to reach the paths that
/// give up a planned request or roll back a transaction.
fn failpoint_fails(step: &str, oid: &str) -> bool {
    failpoint_named().is_some_and(|point| {
        point
            .strip_prefix("fail-")
            .and_then(|rest| rest.strip_prefix(step))
            .and_then(|rest| rest.strip_prefix(':'))
            == Some(oid)
    })
}

/// The cause a failing failpoint gives.
fn failpoint_io_error() -> std::io::Error {
    std::io::Error::other("failed at a test failpoint")
}

/// True if planned request `p` has a new file to fill or an append to make.
fn fills(p: &Prepared) -> bool {
    matches!(&p.planned.outcome, Outcome::Change(c) if c.fresh.is_some() || c.append.is_some())
}
