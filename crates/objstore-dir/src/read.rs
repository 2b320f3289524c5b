//! Reads: any thread, any number at once, no locks.
//!
//! Metadata (the row, omap, xattrs, recorded intents) is read in one read transaction, which
//! sees one committed state. Data is then read from the file the row names, and any intents
//! still recorded are applied to the bytes read, so a writer caught between its commit and
//! the application of its intent (or one that died there) cannot be observed half-way. A data
//! read finishes by checking that the row it read from (the head or a clone) still names the
//! same version and file; otherwise it starts again. Clone rows and files never change while
//! they exist, but a removed clone's file may be collected and its inode recycled under
//! another object while a read still holds it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use rbdx_objstore::snapset::{self, ReadTarget, SnapSet};
use rbdx_objstore::{
    Error, ErrorKind, ExtentSet, IoCtx, ListOptions, ListPage, ObjectStat, ReadOp, ReadOutput,
    ReadResult, ReadStep, Result, SnapId, Subject, limits,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::admin::check_snap;
use crate::changes::{Changes, Seen};
use crate::db::{self, db_error};
use crate::files::{self, Files};
use crate::intent::Intent;
use crate::rows::{self, ObjKey};
use crate::writer::check_pool_ns;

/// Attempts before a read that keeps racing with writers gives up.
const MAX_ATTEMPTS: usize = 1000;
/// Idle read connections kept (opening one costs more than many reads).
const POOL_SIZE: usize = 64;
/// Data reads up to this size run on the calling thread.
const SMALL_READ: u64 = 64 << 10;

/// Returns true if `step` reads object data.
fn is_data(step: &ReadStep) -> bool {
    matches!(
        step,
        ReadStep::Read { .. }
            | ReadStep::SparseRead { .. }
            | ReadStep::Extents { .. }
            | ReadStep::Checksum { .. }
    )
}

/// Returns true if `op` may read little enough data to run on the caller's thread: no step
/// asks for more than [`SMALL_READ`] bytes. A step that reads to the object's end may still
/// turn out too big once the object's size is known (see [`read_op`]).
pub(crate) fn is_small(op: &ReadOp) -> bool {
    op.steps().iter().all(|s| match s {
        ReadStep::Read { length, .. } | ReadStep::SparseRead { length, .. } => {
            length.is_none_or(|l| l <= SMALL_READ)
        }
        ReadStep::Checksum { length, .. } => *length <= SMALL_READ,
        _ => true,
    })
}

/// Returns the bytes the data steps of `op` read from an object of `size` bytes.
fn data_bytes(op: &ReadOp, size: u64) -> u64 {
    op.steps()
        .iter()
        .map(|s| match s {
            ReadStep::Read { offset, length } | ReadStep::SparseRead { offset, length } => {
                length.unwrap_or_else(|| size.saturating_sub(*offset))
            }
            ReadStep::Checksum { length, .. } => *length,
            _ => 0,
        })
        .sum()
}

/// Head rows remembered for reads (more are dropped all at once).
const ROW_CACHE: usize = 4096;

/// A head row as a read last found it. A read that uses it checks, after reading the data,
/// that no change began in the object's stripe since (the shared change counters) or, if
/// that cannot be told, that the object still has this row at this version with this file,
/// as every head read does; a row at one version never changes except for its intent being
/// cleared once applied, and applying an applied intent again changes nothing.
#[derive(Debug, Clone)]
struct CachedRow {
    /// The change counters seen before the row was found, if no writer was busy then.
    seen: Option<Seen>,
    id: i64,
    version: u64,
    size: u64,
    mtime: i64,
    file: Option<u64>,
    intents: Vec<Intent>,
}

/// Head rows recent reads found, by object, in shards by stripe so that reading threads
/// rarely wait for each other (callers pass the object's stripe, which they have anyway). The handle's writer forgets the objects it changes; changes by
/// other processes are caught by the check every read makes.
#[derive(Debug, Default)]
pub(crate) struct RowCache {
    shards: [Mutex<HashMap<ObjKey, CachedRow>>; SHARDS],
}

/// Shards of the row cache.
const SHARDS: usize = 16;

impl RowCache {
    fn rows(&self, stripe: u64) -> MutexGuard<'_, HashMap<ObjKey, CachedRow>> {
        let shard = &self.shards[stripe as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &ObjKey, stripe: u64) -> Option<CachedRow> {
        self.rows(stripe).get(key).cloned()
    }

    fn remember(&self, key: ObjKey, stripe: u64, row: CachedRow) {
        let mut rows = self.rows(stripe);
        if rows.len() >= ROW_CACHE / SHARDS && !rows.contains_key(&key) {
            rows.clear();
        }
        rows.insert(key, row);
    }

    /// Forgets the row of `key` (in `stripe`).
    pub(crate) fn forget(&self, key: &ObjKey, stripe: u64) {
        let mut rows = self.rows(stripe);
        if !rows.is_empty() {
            rows.remove(key);
        }
    }
}

/// A small pool of read connections.
#[derive(Debug)]
pub(crate) struct Readers {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: std::path::PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with a read connection.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => db::open(&self.path).map_err(db_error)?,
        };
        let result = f(&conn);
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let mut idle = self.idle();
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
        result
    }
}

/// What a read saw in the database.
struct Snapshot {
    version: u64,
    size: u64,
    mtime: i64,
    file: Option<u64>,
    head_id: Option<i64>,
    /// The row the data came from (the head or a clone), checked again after the read.
    row_id: i64,
    intents: Vec<Intent>,
    outputs: Vec<Option<ReadOutput>>,
}

fn key_of(io: &IoCtx, oid: &str) -> ObjKey {
    ObjKey {
        pool: io.pool().0,
        ns: io.namespace().to_owned(),
        name: oid.to_owned(),
    }
}

/// The error for an object that is not there: names the pool or namespace if that is what is
/// missing.
fn absent(conn: &Connection, io: &IoCtx, oid: &str) -> Error {
    match check_pool_ns(conn, io) {
        Ok(()) => Error::not_found(io.object_subject(oid)),
        Err(e) => e,
    }
}

fn metadata(
    conn: &Connection,
    io: &IoCtx,
    oid: &str,
    op: &ReadOp,
    snap: Option<SnapId>,
) -> Result<Snapshot> {
    // One query suffices for stat and data reads; map reads need a transaction so that every
    // output sees the same commit.
    let needs_tx = snap.is_some()
        || op.steps().iter().any(|s| {
            !matches!(
                s,
                ReadStep::Stat
                    | ReadStep::Read { .. }
                    | ReadStep::SparseRead { .. }
                    | ReadStep::Extents { .. }
                    | ReadStep::Checksum { .. }
            )
        });
    let tx = if needs_tx {
        Some(conn.unchecked_transaction().map_err(db_error)?)
    } else {
        None
    };
    if let Some(snap) = snap {
        check_snap(conn, io.pool(), snap)?;
    }
    let key = key_of(io, oid);
    let (row_id, is_head, version, size, mtime, file, intent) = match snap {
        None => {
            let head = rows::load_head(conn, &key).map_err(db_error)?;
            match head {
                Some(h) if h.present => (h.id, true, h.version, h.size, h.mtime, h.file, h.intent),
                _ => return Err(absent(conn, io, oid)),
            }
        }
        Some(snap) => {
            let (head, clones) = rows::load_object(conn, &key).map_err(db_error)?;
            let Some(h) = head else {
                return Err(absent(conn, io, oid));
            };
            let metas: Vec<_> = clones.iter().map(|c| c.meta.clone()).collect();
            match snapset::resolve_read(h.seq, &metas, h.present, snap) {
                ReadTarget::Head => (h.id, true, h.version, h.size, h.mtime, h.file, h.intent),
                ReadTarget::Clone(index) => {
                    let c = &clones[index];
                    (c.id, false, c.version, c.meta.size, c.mtime, c.file, None)
                }
                ReadTarget::Absent => return Err(Error::not_found(io.object_subject(oid))),
            }
        }
    };
    let mut intents = Vec::new();
    if let (true, Some(body)) = (is_head, intent) {
        let intent = Intent::decode(&body).map_err(|e| {
            Error::new(ErrorKind::Corrupt, io.object_subject(oid)).with_detail(e.to_string())
        })?;
        if Some(intent.file) == file {
            intents.push(intent);
        }
    }
    let mut outputs = Vec::with_capacity(op.steps().len());
    for step in op.steps() {
        outputs.push(map_output(conn, row_id, oid, step)?);
    }
    drop(tx);
    Ok(Snapshot {
        version,
        size,
        mtime,
        file,
        head_id: is_head.then_some(row_id),
        row_id,
        intents,
        outputs,
    })
}

fn map_output(
    conn: &Connection,
    obj: i64,
    oid: &str,
    step: &ReadStep,
) -> Result<Option<ReadOutput>> {
    let out = match step {
        ReadStep::OmapGetVals {
            start_after,
            prefix,
            max,
        } => {
            let max = limits::page_len(*max);
            let from = match start_after {
                Some(s) if s.as_str() >= prefix.as_str() => s.clone(),
                _ => prefix.clone(),
            };
            let inclusive = start_after
                .as_ref()
                .is_none_or(|s| s.as_str() < prefix.as_str());
            let sql = if inclusive {
                "SELECT key, value FROM omap WHERE obj = ?1 AND key >= ?2 ORDER BY key LIMIT ?3"
            } else {
                "SELECT key, value FROM omap WHERE obj = ?1 AND key > ?2 ORDER BY key LIMIT ?3"
            };
            let rows: Vec<(String, Vec<u8>)> = conn
                .prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_map(params![obj, from, (max + 1) as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(db_error)?;
            let mut entries: Vec<(String, Bytes)> = Vec::new();
            let mut more = false;
            for (k, v) in rows {
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                if entries.len() == max {
                    more = true;
                    break;
                }
                entries.push((k, Bytes::from(v)));
            }
            Some(ReadOutput::OmapVals { entries, more })
        }
        ReadStep::OmapGetByKeys(keys) => {
            let mut map = BTreeMap::new();
            let mut stmt = conn
                .prepare_cached("SELECT value FROM omap WHERE obj = ?1 AND key = ?2")
                .map_err(db_error)?;
            for k in keys {
                if let Some(v) = stmt
                    .query_row(params![obj, k], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(db_error)?
                {
                    map.insert(k.clone(), Bytes::from(v));
                }
            }
            Some(ReadOutput::OmapByKeys(map))
        }
        ReadStep::GetXattr(name) => {
            let value = conn
                .prepare_cached("SELECT value FROM xattrs WHERE obj = ?1 AND name = ?2")
                .and_then(|mut s| {
                    s.query_row(params![obj, name], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                })
                .map_err(db_error)?;
            match value {
                Some(v) => Some(ReadOutput::Xattr(Bytes::from(v))),
                None => {
                    return Err(Error::not_found(Subject::Xattr {
                        oid: oid.to_owned(),
                        name: name.clone(),
                    }));
                }
            }
        }
        ReadStep::GetXattrs => {
            let map: BTreeMap<String, Bytes> = conn
                .prepare_cached("SELECT name, value FROM xattrs WHERE obj = ?1 ORDER BY name")
                .and_then(|mut s| {
                    s.query_map([obj], |r| {
                        Ok((r.get::<_, String>(0)?, Bytes::from(r.get::<_, Vec<u8>>(1)?)))
                    })?
                    .collect()
                })
                .map_err(db_error)?;
            Some(ReadOutput::Xattrs(map))
        }
        ReadStep::Stat
        | ReadStep::Read { .. }
        | ReadStep::SparseRead { .. }
        | ReadStep::Extents { .. }
        | ReadStep::Checksum { .. } => None,
    };
    Ok(out)
}

fn range_end(size: u64, offset: u64, length: Option<u64>) -> u64 {
    match length {
        Some(len) => offset.saturating_add(len).min(size),
        None => size,
    }
    .max(offset)
}

/// Reads data, or `Ok(None)` if the file vanished under the read (start again).
fn data_outputs(
    files: &Files,
    pool: u64,
    snap: &mut Snapshot,
    op: &ReadOp,
) -> std::io::Result<Option<()>> {
    let needs_data = op.steps().iter().any(is_data);
    let handle = match (needs_data, snap.file) {
        (true, Some(file)) => match files.open(pool, file) {
            Ok(handle) => Some(handle),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
        _ => None,
    };
    for (index, step) in op.steps().iter().enumerate() {
        let output = match step {
            ReadStep::Stat => ReadOutput::Stat(ObjectStat {
                size: snap.size,
                mtime: db::from_nanos(snap.mtime),
                version: snap.version,
            }),
            ReadStep::Read { offset, length } => {
                let end = range_end(snap.size, *offset, *length);
                let mut buf = files::read_pooled(files.buffers(), handle.as_deref(), *offset, end)?;
                for intent in &snap.intents {
                    intent.overlay(buf.as_mut_slice(), *offset);
                }
                ReadOutput::Data(buf.freeze())
            }
            ReadStep::Extents { offset, length } => {
                let end = range_end(snap.size, *offset, *length);
                let allocated = allocated(handle.as_deref(), snap, *offset, end)?;
                ReadOutput::Extents(
                    allocated
                        .extents()
                        .into_iter()
                        .map(|e| (e.offset, e.length))
                        .collect(),
                )
            }
            ReadStep::SparseRead { offset, length } => {
                let end = range_end(snap.size, *offset, *length);
                let allocated = allocated(handle.as_deref(), snap, *offset, end)?;
                let mut extents = Vec::new();
                for e in allocated.extents() {
                    let mut buf =
                        files::read_pooled(files.buffers(), handle.as_deref(), e.offset, e.end())?;
                    for intent in &snap.intents {
                        intent.overlay(buf.as_mut_slice(), e.offset);
                    }
                    extents.push((e.offset, buf.freeze()));
                }
                ReadOutput::Sparse(extents)
            }
            ReadStep::Checksum {
                offset,
                length,
                chunk,
            } => ReadOutput::Checksums(checksums(
                files,
                handle.as_deref(),
                snap,
                *offset,
                *length,
                *chunk,
            )?),
            _ => continue,
        };
        snap.outputs[index] = Some(output);
    }
    Ok(Some(()))
}

/// The bytes of `[offset, end)` that may hold data: the file's allocated ranges and whatever
/// a recorded intent writes.
fn allocated(
    handle: Option<&std::fs::File>,
    snap: &Snapshot,
    offset: u64,
    end: u64,
) -> std::io::Result<ExtentSet> {
    let mut allocated = ExtentSet::new();
    if let Some(handle) = handle {
        for (lo, hi) in crate::sys::data_ranges(handle, offset, end)? {
            allocated.insert(lo, hi - lo);
        }
    }
    for intent in &snap.intents {
        for (lo, hi) in intent.written_ranges() {
            let (lo, hi) = (lo.max(offset), hi.min(end));
            if lo < hi {
                allocated.insert(lo, hi - lo);
            }
        }
    }
    Ok(allocated)
}

/// The digests of a checksum step: chunks that hold no data (holes of the file, past its
/// end, no intent over them) get the digest of zeros without being read.
fn checksums(
    files: &Files,
    handle: Option<&std::fs::File>,
    snap: &Snapshot,
    offset: u64,
    length: u64,
    chunk: u64,
) -> std::io::Result<Vec<u64>> {
    use rbdx_objstore::digest::{chunk_digests, zero_digests};
    let end = range_end(snap.size, offset, Some(length));
    let allocated = allocated(handle, snap, offset, end)?;
    let chunk = chunk.max(1);
    let full_zero = zero_digests(chunk.min(length), chunk);
    let mut out = Vec::with_capacity(length.div_ceil(chunk) as usize);
    let mut at = offset;
    while at < offset + length {
        let stop = (at + chunk).min(offset + length);
        let has_data = allocated
            .intersection(&ExtentSet::from_range(at, stop - at))
            .total()
            > 0;
        if !has_data {
            if stop - at == chunk {
                out.extend_from_slice(&full_zero[..1]);
            } else {
                out.extend(zero_digests(stop - at, chunk));
            }
        } else {
            let data_end = stop.min(end);
            let mut buf = files::read_pooled(files.buffers(), handle, at, data_end)?;
            for intent in &snap.intents {
                intent.overlay(buf.as_mut_slice(), at);
            }
            out.extend(chunk_digests(buf.as_mut_slice(), stop - at, chunk));
        }
        at = stop;
    }
    Ok(out)
}

fn unchanged(conn: &Connection, row_id: i64, version: u64, file: Option<u64>) -> Result<bool> {
    let now: Option<(i64, Option<i64>)> = conn
        .prepare_cached("SELECT version, file FROM objects WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([row_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_error)?;
    Ok(now == Some((version as i64, file.map(|f| f as i64))))
}

/// The result of a read that saw `seen`.
fn finish(seen: Snapshot) -> ReadResult {
    let outputs = seen
        .outputs
        .into_iter()
        .map(|o| o.unwrap_or(ReadOutput::Data(Bytes::new())))
        .collect();
    ReadResult {
        version: seen.version,
        outputs,
    }
}

/// What a read uses of a store handle.
#[derive(Clone, Copy)]
pub(crate) struct ReadPath<'a> {
    pub(crate) readers: &'a Readers,
    pub(crate) rows: &'a RowCache,
    pub(crate) files: &'a Files,
    pub(crate) changes: Option<&'a Changes>,
}

/// Evaluates a compound read. With `small_only`, returns `None` instead once the object
/// turns out to hold more than [`SMALL_READ`] bytes for the read (the caller then reads on
/// another thread).
pub(crate) fn read_op(
    path: ReadPath<'_>,
    io: &IoCtx,
    oid: &str,
    op: &ReadOp,
    snap: Option<SnapId>,
    small_only: bool,
) -> Result<Option<ReadResult>> {
    let ReadPath {
        readers,
        rows: cache,
        files,
        changes,
    } = path;
    let key = key_of(io, oid);
    let stripe = key.stripe();
    let seen_now = || changes.and_then(|c| c.seen(stripe));
    let too_big = |size: u64| small_only && data_bytes(op, size) > SMALL_READ;
    // Head reads of data and stats can start from a remembered row: one query (the check
    // after the read) instead of two.
    let cacheable = snap.is_none()
        && op
            .steps()
            .iter()
            .all(|s| is_data(s) || matches!(s, ReadStep::Stat));
    // A remembered row that the change counters vouch for needs no database connection.
    let mut recheck: Option<(CachedRow, Snapshot)> = None;
    if let Some(row) = cacheable.then(|| cache.get(&key, stripe)).flatten() {
        if too_big(row.size) {
            return Ok(None);
        }
        let mut seen = Snapshot {
            version: row.version,
            size: row.size,
            mtime: row.mtime,
            file: row.file,
            head_id: Some(row.id),
            row_id: row.id,
            intents: row.intents.clone(),
            outputs: vec![None; op.steps().len()],
        };
        let read = data_outputs(files, io.pool().0, &mut seen, op)
            .map_err(|e| Error::io(io.object_subject(oid), e))?;
        if read.is_some() {
            if let (Some(c), Some(at)) = (changes, row.seen)
                && c.unchanged_since(stripe, at)
            {
                return Ok(Some(finish(seen)));
            }
            recheck = Some((row, seen));
        } else {
            cache.forget(&key, stripe);
        }
    }
    readers.with(|conn| {
        if let Some((mut row, seen)) = recheck {
            // The counters cannot vouch for the row: ask the database, and remember the
            // counters seen before asking if it is still current.
            let at = seen_now();
            if unchanged(conn, row.id, row.version, row.file)? {
                if at.is_some() {
                    row.seen = at;
                    cache.remember(key.clone(), stripe, row);
                }
                return Ok(Some(finish(seen)));
            }
            cache.forget(&key, stripe);
        }
        for _ in 0..MAX_ATTEMPTS {
            let at = seen_now();
            let mut seen = metadata(conn, io, oid, op, snap)?;
            if too_big(seen.size) {
                return Ok(None);
            }
            let read = data_outputs(files, io.pool().0, &mut seen, op)
                .map_err(|e| Error::io(io.object_subject(oid), e))?;
            if read.is_none() {
                continue;
            }
            let needs_check = seen.file.is_some() && op.steps().iter().any(is_data);
            // A clone's file never changes while the clone exists, but once the clone is
            // removed its file may be collected and its inode recycled under another object.
            if needs_check && !unchanged(conn, seen.row_id, seen.version, seen.file)? {
                continue;
            }
            if let (true, Some(id)) = (cacheable, seen.head_id) {
                let row = CachedRow {
                    seen: at,
                    id,
                    version: seen.version,
                    size: seen.size,
                    mtime: seen.mtime,
                    file: seen.file,
                    intents: seen.intents.clone(),
                };
                cache.remember(key.clone(), stripe, row);
            }
            return Ok(Some(finish(seen)));
        }
        Err(Error::new(ErrorKind::TimedOut, io.object_subject(oid))
            .with_detail("object kept changing during the read"))
    })
}

/// Lists one page of object names.
pub(crate) fn list_objects(conn: &Connection, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
    check_pool_ns(conn, io)?;
    let max = limits::page_len(opts.max);
    let (from, inclusive) = match &opts.cursor {
        Some(c) if c.as_str() >= opts.prefix.as_str() => (c.clone(), false),
        _ => (opts.prefix.clone(), true),
    };
    let sql = if inclusive {
        "SELECT name FROM objects WHERE pool = ?1 AND ns = ?2 AND snap = 0 AND present = 1 AND name >= ?3 ORDER BY name LIMIT ?4"
    } else {
        "SELECT name FROM objects WHERE pool = ?1 AND ns = ?2 AND snap = 0 AND present = 1 AND name > ?3 ORDER BY name LIMIT ?4"
    };
    let found: Vec<String> = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(
                params![io.pool().0 as i64, io.namespace(), from, (max + 1) as i64],
                |r| r.get(0),
            )?
            .collect()
        })
        .map_err(db_error)?;
    let mut names = Vec::new();
    let mut more = false;
    for name in found {
        if !name.starts_with(opts.prefix.as_str()) {
            break;
        }
        if names.len() == max {
            more = true;
            break;
        }
        names.push(name);
    }
    let next = if more { names.last().cloned() } else { None };
    Ok(ListPage { names, next })
}

/// Returns the clones and head of an object.
pub(crate) fn list_snaps(conn: &Connection, io: &IoCtx, oid: &str) -> Result<SnapSet> {
    let tx = conn.unchecked_transaction().map_err(db_error)?;
    check_pool_ns(&tx, io)?;
    let key = key_of(io, oid);
    let head = rows::load_head(&tx, &key)
        .map_err(db_error)?
        .ok_or_else(|| Error::not_found(io.object_subject(oid)))?;
    let clones = rows::load_clones(&tx, &key).map_err(db_error)?;
    Ok(SnapSet {
        seq: head.seq,
        clones: clones.iter().map(|c| c.meta.info()).collect(),
        head_size: head.present.then_some(head.size),
    })
}
