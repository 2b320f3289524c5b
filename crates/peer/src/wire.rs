//! Encodings of the object-store contract's types ([`rbdx_objstore`]) in peer messages.
//!
//! Each type has a `put_*` (encode) and `get_*` (decode) pair; enums are a one-byte code and
//! their fields. Codes are part of protocol version 1 and never change meaning.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rbdx_objstore::{
    ClientId, ClientInfo, CloneInfo, CmpOp, Error, ErrorKind, Extent, IoCtx, ListOptions, ListPage,
    LockInfo, LockKind, LockOptions, LockerInfo, NotifyAck, NotifyResult, ObjectStat, PoolId,
    PoolInfo, ReadOp, ReadOutput, ReadResult, ReadStep, SnapContext, SnapId, SnapSet, Subject,
    WatcherInfo, WriteOp, WriteStep,
};

use crate::codec::{DecodeResult, Reader, Writer, invalid};

/// Encodes a point in time as nanoseconds since the Unix epoch (negative before it).
pub fn put_time(w: &mut Writer, t: SystemTime) {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let clamped = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    w.i64(i64::try_from(clamped).unwrap_or_default());
}

/// Decodes a point in time.
pub fn get_time(r: &mut Reader) -> DecodeResult<SystemTime> {
    let nanos = r.i64()?;
    let d = Duration::from_nanos(nanos.unsigned_abs());
    Ok(if nanos >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    })
}

/// Encodes an I/O context.
pub fn put_io(w: &mut Writer, io: &IoCtx) {
    w.u64(io.pool().0);
    w.str(io.namespace());
}

/// Decodes an I/O context.
pub fn get_io(r: &mut Reader) -> DecodeResult<IoCtx> {
    let pool = PoolId(r.u64()?);
    Ok(IoCtx::with_namespace(pool, r.str()?))
}

/// Encodes a client's identity.
pub fn put_client(w: &mut Writer, c: &ClientInfo) {
    w.u64(c.id.0);
    w.str(&c.addr);
}

/// Decodes a client's identity.
pub fn get_client(r: &mut Reader) -> DecodeResult<ClientInfo> {
    Ok(ClientInfo {
        id: ClientId(r.u64()?),
        addr: r.str()?,
    })
}

fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound => 1,
        ErrorKind::AlreadyExists => 2,
        ErrorKind::VersionMismatch => 3,
        ErrorKind::ComparisonFailed => 4,
        ErrorKind::Busy => 5,
        ErrorKind::InvalidArgument => 6,
        ErrorKind::Unsupported => 7,
        ErrorKind::TimedOut => 8,
        ErrorKind::PermissionDenied => 9,
        ErrorKind::Corrupt => 10,
        ErrorKind::Protocol => 12,
        ErrorKind::ConnectionRefused => 13,
        _ => 11,
    }
}

fn code_kind(code: u8) -> DecodeResult<ErrorKind> {
    Ok(match code {
        1 => ErrorKind::NotFound,
        2 => ErrorKind::AlreadyExists,
        3 => ErrorKind::VersionMismatch,
        4 => ErrorKind::ComparisonFailed,
        5 => ErrorKind::Busy,
        6 => ErrorKind::InvalidArgument,
        7 => ErrorKind::Unsupported,
        8 => ErrorKind::TimedOut,
        9 => ErrorKind::PermissionDenied,
        10 => ErrorKind::Corrupt,
        11 => ErrorKind::Io,
        12 => ErrorKind::Protocol,
        13 => ErrorKind::ConnectionRefused,
        n => return invalid(format!("unknown error kind {n}")),
    })
}

fn put_subject(w: &mut Writer, s: &Subject) {
    match s {
        Subject::Pool(name) => {
            w.u8(1);
            w.str(name);
        }
        Subject::PoolId(id) => {
            w.u8(2);
            w.u64(id.0);
        }
        Subject::Namespace { pool, namespace } => {
            w.u8(3);
            w.u64(pool.0);
            w.str(namespace);
        }
        Subject::Object {
            pool,
            namespace,
            oid,
        } => {
            w.u8(4);
            w.u64(pool.0);
            w.str(namespace);
            w.str(oid);
        }
        Subject::Snapshot { pool, snap } => {
            w.u8(5);
            w.u64(pool.0);
            w.u64(snap.0);
        }
        Subject::OmapKey { oid, key } => {
            w.u8(6);
            w.str(oid);
            w.str(key);
        }
        Subject::Xattr { oid, name } => {
            w.u8(7);
            w.str(oid);
            w.str(name);
        }
        Subject::Lock { oid, name } => {
            w.u8(8);
            w.str(oid);
            w.str(name);
        }
        Subject::Watch(cookie) => {
            w.u8(9);
            w.u64(*cookie);
        }
        Subject::Client(id) => {
            w.u8(10);
            w.u64(id.0);
        }
        Subject::ConfigKey(key) => {
            w.u8(11);
            w.str(key);
        }
        Subject::Path(path) => {
            w.u8(12);
            w.str(&path.to_string_lossy());
        }
        _ => w.u8(0),
    }
}

fn get_subject(r: &mut Reader) -> DecodeResult<Subject> {
    Ok(match r.u8()? {
        0 => Subject::Store,
        1 => Subject::Pool(r.str()?),
        2 => Subject::PoolId(PoolId(r.u64()?)),
        3 => Subject::Namespace {
            pool: PoolId(r.u64()?),
            namespace: r.str()?,
        },
        4 => Subject::Object {
            pool: PoolId(r.u64()?),
            namespace: r.str()?,
            oid: r.str()?,
        },
        5 => Subject::Snapshot {
            pool: PoolId(r.u64()?),
            snap: SnapId(r.u64()?),
        },
        6 => Subject::OmapKey {
            oid: r.str()?,
            key: r.str()?,
        },
        7 => Subject::Xattr {
            oid: r.str()?,
            name: r.str()?,
        },
        8 => Subject::Lock {
            oid: r.str()?,
            name: r.str()?,
        },
        9 => Subject::Watch(r.u64()?),
        10 => Subject::Client(ClientId(r.u64()?)),
        11 => Subject::ConfigKey(r.str()?),
        12 => Subject::Path(r.str()?.into()),
        n => return invalid(format!("unknown error subject {n}")),
    })
}

/// Encodes an error: kind, subject, detail (the full message of its causes, if any).
pub fn put_error(w: &mut Writer, e: &Error) {
    w.u8(kind_code(e.kind()));
    put_subject(w, e.subject());
    let mut detail = e.detail().map(str::to_owned);
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let d = detail.get_or_insert_with(String::new);
        if !d.is_empty() {
            d.push_str(": ");
        }
        d.push_str(&cause.to_string());
        source = cause.source();
    }
    w.option(detail.as_deref(), Writer::str);
}

/// Decodes an error.
pub fn get_error(r: &mut Reader) -> DecodeResult<Error> {
    let kind = code_kind(r.u8()?)?;
    let subject = get_subject(r)?;
    let detail = r.option(Reader::str)?;
    let e = Error::new(kind, subject);
    Ok(match detail {
        Some(d) => e.with_detail(d),
        None => e,
    })
}

fn cmp_code(op: CmpOp) -> u8 {
    match op {
        CmpOp::Eq => 1,
        CmpOp::Ne => 2,
        CmpOp::Gt => 3,
        CmpOp::Gte => 4,
        CmpOp::Lt => 5,
        CmpOp::Lte => 6,
    }
}

fn code_cmp(code: u8) -> DecodeResult<CmpOp> {
    Ok(match code {
        1 => CmpOp::Eq,
        2 => CmpOp::Ne,
        3 => CmpOp::Gt,
        4 => CmpOp::Gte,
        5 => CmpOp::Lt,
        6 => CmpOp::Lte,
        n => return invalid(format!("unknown comparison {n}")),
    })
}

fn put_map(w: &mut Writer, map: &BTreeMap<String, Bytes>) {
    w.len(map.len());
    for (k, v) in map {
        w.str(k);
        w.bytes(v);
    }
}

fn get_map(r: &mut Reader) -> DecodeResult<BTreeMap<String, Bytes>> {
    let pairs = r.list(8, |r| Ok((r.str()?, r.bytes()?)))?;
    Ok(pairs.into_iter().collect())
}

/// Encodes a write batch.
pub fn put_write_op(w: &mut Writer, op: &WriteOp) {
    w.list(op.steps(), |w, step| match step {
        WriteStep::AssertExists => w.u8(1),
        WriteStep::Create { exclusive } => {
            w.u8(2);
            w.bool(*exclusive);
        }
        WriteStep::AssertVersion(v) => {
            w.u8(3);
            w.u64(*v);
        }
        WriteStep::CmpXattr { name, op, value } => {
            w.u8(4);
            w.str(name);
            w.u8(cmp_code(*op));
            w.bytes(value);
        }
        WriteStep::CmpExt { offset, data } => {
            w.u8(5);
            w.u64(*offset);
            w.data(data);
        }
        WriteStep::Write { offset, data } => {
            w.u8(6);
            w.u64(*offset);
            w.data(data);
        }
        WriteStep::WriteFull(data) => {
            w.u8(7);
            w.data(data);
        }
        WriteStep::Zero { offset, length } => {
            w.u8(8);
            w.u64(*offset);
            w.u64(*length);
        }
        WriteStep::Truncate(size) => {
            w.u8(9);
            w.u64(*size);
        }
        WriteStep::Remove => w.u8(10),
        WriteStep::OmapSet(map) => {
            w.u8(11);
            put_map(w, map);
        }
        WriteStep::OmapRemove(keys) => {
            w.u8(12);
            w.list(keys, |w, k| w.str(k));
        }
        WriteStep::OmapClear => w.u8(13),
        WriteStep::XattrSet { name, value } => {
            w.u8(14);
            w.str(name);
            w.bytes(value);
        }
        WriteStep::XattrRemove(name) => {
            w.u8(15);
            w.str(name);
        }
    });
}

/// Decodes a write batch.
pub fn get_write_op(r: &mut Reader) -> DecodeResult<WriteOp> {
    let steps = r.list(1, |r| {
        Ok(match r.u8()? {
            1 => WriteStep::AssertExists,
            2 => WriteStep::Create {
                exclusive: r.bool()?,
            },
            3 => WriteStep::AssertVersion(r.u64()?),
            4 => WriteStep::CmpXattr {
                name: r.str()?,
                op: code_cmp(r.u8()?)?,
                value: r.bytes()?,
            },
            5 => WriteStep::CmpExt {
                offset: r.u64()?,
                data: r.bytes()?,
            },
            6 => WriteStep::Write {
                offset: r.u64()?,
                data: r.bytes()?,
            },
            7 => WriteStep::WriteFull(r.bytes()?),
            8 => WriteStep::Zero {
                offset: r.u64()?,
                length: r.u64()?,
            },
            9 => WriteStep::Truncate(r.u64()?),
            10 => WriteStep::Remove,
            11 => WriteStep::OmapSet(get_map(r)?),
            12 => WriteStep::OmapRemove(r.list(4, Reader::str)?),
            13 => WriteStep::OmapClear,
            14 => WriteStep::XattrSet {
                name: r.str()?,
                value: r.bytes()?,
            },
            15 => WriteStep::XattrRemove(r.str()?),
            n => return invalid(format!("unknown write step {n}")),
        })
    })?;
    Ok(steps.into_iter().fold(WriteOp::new(), WriteOp::push))
}

fn put_len_opt(w: &mut Writer, length: Option<u64>) {
    w.option(length, Writer::u64);
}

/// Encodes a compound read.
pub fn put_read_op(w: &mut Writer, op: &ReadOp) {
    w.list(op.steps(), |w, step| match step {
        ReadStep::Stat => w.u8(1),
        ReadStep::Read { offset, length } => {
            w.u8(2);
            w.u64(*offset);
            put_len_opt(w, *length);
        }
        ReadStep::SparseRead { offset, length } => {
            w.u8(3);
            w.u64(*offset);
            put_len_opt(w, *length);
        }
        ReadStep::OmapGetVals {
            start_after,
            prefix,
            max,
        } => {
            w.u8(4);
            w.option(start_after.as_deref(), Writer::str);
            w.str(prefix);
            w.len(*max);
        }
        ReadStep::OmapGetByKeys(keys) => {
            w.u8(5);
            w.list(keys, |w, k| w.str(k));
        }
        ReadStep::GetXattr(name) => {
            w.u8(6);
            w.str(name);
        }
        ReadStep::GetXattrs => w.u8(7),
        ReadStep::Checksum {
            offset,
            length,
            chunk,
        } => {
            w.u8(8);
            w.u64(*offset);
            w.u64(*length);
            w.u64(*chunk);
        }
        ReadStep::Extents { offset, length } => {
            w.u8(9);
            w.u64(*offset);
            put_len_opt(w, *length);
        }
    });
}

/// Decodes a compound read.
pub fn get_read_op(r: &mut Reader) -> DecodeResult<ReadOp> {
    let steps = r.list(1, |r| {
        Ok(match r.u8()? {
            1 => ReadStep::Stat,
            2 => ReadStep::Read {
                offset: r.u64()?,
                length: r.option(Reader::u64)?,
            },
            3 => ReadStep::SparseRead {
                offset: r.u64()?,
                length: r.option(Reader::u64)?,
            },
            4 => ReadStep::OmapGetVals {
                start_after: r.option(Reader::str)?,
                prefix: r.str()?,
                max: r.u32()? as usize,
            },
            5 => ReadStep::OmapGetByKeys(r.list(4, Reader::str)?),
            6 => ReadStep::GetXattr(r.str()?),
            7 => ReadStep::GetXattrs,
            8 => ReadStep::Checksum {
                offset: r.u64()?,
                length: r.u64()?,
                chunk: r.u64()?,
            },
            9 => ReadStep::Extents {
                offset: r.u64()?,
                length: r.option(Reader::u64)?,
            },
            n => return invalid(format!("unknown read step {n}")),
        })
    })?;
    Ok(steps.into_iter().fold(ReadOp::new(), ReadOp::push))
}

fn put_stat(w: &mut Writer, s: &ObjectStat) {
    w.u64(s.size);
    put_time(w, s.mtime);
    w.u64(s.version);
}

fn get_stat(r: &mut Reader) -> DecodeResult<ObjectStat> {
    Ok(ObjectStat {
        size: r.u64()?,
        mtime: get_time(r)?,
        version: r.u64()?,
    })
}

/// Encodes the outputs of a compound read.
pub fn put_read_result(w: &mut Writer, res: &ReadResult) {
    w.u64(res.version);
    w.list(&res.outputs, |w, out| match out {
        ReadOutput::Stat(s) => {
            w.u8(1);
            put_stat(w, s);
        }
        ReadOutput::Data(d) => {
            w.u8(2);
            w.data(d);
        }
        ReadOutput::Sparse(extents) => {
            w.u8(3);
            w.list(extents, |w, (off, data)| {
                w.u64(*off);
                w.data(data);
            });
        }
        ReadOutput::OmapVals { entries, more } => {
            w.u8(4);
            w.list(entries, |w, (k, v)| {
                w.str(k);
                w.bytes(v);
            });
            w.bool(*more);
        }
        ReadOutput::OmapByKeys(map) => {
            w.u8(5);
            put_map(w, map);
        }
        ReadOutput::Xattr(v) => {
            w.u8(6);
            w.bytes(v);
        }
        ReadOutput::Xattrs(map) => {
            w.u8(7);
            put_map(w, map);
        }
        ReadOutput::Checksums(digests) => {
            w.u8(8);
            w.list(digests, |w, d| w.u64(*d));
        }
        ReadOutput::Extents(extents) => {
            w.u8(9);
            w.list(extents, |w, (off, len)| {
                w.u64(*off);
                w.u64(*len);
            });
        }
    });
}

/// Decodes the outputs of a compound read.
pub fn get_read_result(r: &mut Reader) -> DecodeResult<ReadResult> {
    let version = r.u64()?;
    let outputs = r.list(1, |r| {
        Ok(match r.u8()? {
            1 => ReadOutput::Stat(get_stat(r)?),
            2 => ReadOutput::Data(r.bytes()?),
            3 => ReadOutput::Sparse(r.list(12, |r| Ok((r.u64()?, r.bytes()?)))?),
            4 => ReadOutput::OmapVals {
                entries: r.list(8, |r| Ok((r.str()?, r.bytes()?)))?,
                more: r.bool()?,
            },
            5 => ReadOutput::OmapByKeys(get_map(r)?),
            6 => ReadOutput::Xattr(r.bytes()?),
            7 => ReadOutput::Xattrs(get_map(r)?),
            8 => ReadOutput::Checksums(r.list(8, Reader::u64)?),
            9 => ReadOutput::Extents(r.list(16, |r| Ok((r.u64()?, r.u64()?)))?),
            n => return invalid(format!("unknown read output {n}")),
        })
    })?;
    Ok(ReadResult { version, outputs })
}

/// Encodes a snapshot context.
pub fn put_snapc(w: &mut Writer, s: &SnapContext) {
    w.u64(s.seq);
    w.list(&s.snaps, |w, id| w.u64(id.0));
}

/// Decodes a snapshot context.
pub fn get_snapc(r: &mut Reader) -> DecodeResult<SnapContext> {
    Ok(SnapContext {
        seq: r.u64()?,
        snaps: r.list(8, |r| r.u64().map(SnapId))?,
    })
}

/// Encodes listing options.
pub fn put_list_options(w: &mut Writer, o: &ListOptions) {
    w.str(&o.prefix);
    w.option(o.cursor.as_deref(), Writer::str);
    w.len(o.max);
}

/// Decodes listing options.
pub fn get_list_options(r: &mut Reader) -> DecodeResult<ListOptions> {
    Ok(ListOptions {
        prefix: r.str()?,
        cursor: r.option(Reader::str)?,
        max: r.u32()? as usize,
    })
}

/// Encodes a listing page.
pub fn put_list_page(w: &mut Writer, p: &ListPage) {
    w.list(&p.names, |w, n| w.str(n));
    w.option(p.next.as_deref(), Writer::str);
}

/// Decodes a listing page.
pub fn get_list_page(r: &mut Reader) -> DecodeResult<ListPage> {
    Ok(ListPage {
        names: r.list(4, Reader::str)?,
        next: r.option(Reader::str)?,
    })
}

fn put_extents(w: &mut Writer, extents: &[Extent]) {
    w.list(extents, |w, e| {
        w.u64(e.offset);
        w.u64(e.length);
    });
}

fn get_extents(r: &mut Reader) -> DecodeResult<Vec<Extent>> {
    r.list(16, |r| {
        Ok(Extent {
            offset: r.u64()?,
            length: r.u64()?,
        })
    })
}

/// Encodes an object's snapshot history.
pub fn put_snapset(w: &mut Writer, s: &SnapSet) {
    w.u64(s.seq);
    w.list(&s.clones, |w, c| {
        w.u64(c.id.0);
        w.list(&c.snaps, |w, id| w.u64(id.0));
        put_extents(w, &c.overlap);
        w.u64(c.size);
    });
    w.option(s.head_size, Writer::u64);
}

/// Decodes an object's snapshot history.
pub fn get_snapset(r: &mut Reader) -> DecodeResult<SnapSet> {
    Ok(SnapSet {
        seq: r.u64()?,
        clones: r.list(28, |r| {
            Ok(CloneInfo {
                id: SnapId(r.u64()?),
                snaps: r.list(8, |r| r.u64().map(SnapId))?,
                overlap: get_extents(r)?,
                size: r.u64()?,
            })
        })?,
        head_size: r.option(Reader::u64)?,
    })
}

fn lock_kind_code(kind: LockKind) -> u8 {
    match kind {
        LockKind::Exclusive => 1,
        LockKind::Shared => 2,
    }
}

fn code_lock_kind(code: u8) -> DecodeResult<LockKind> {
    match code {
        1 => Ok(LockKind::Exclusive),
        2 => Ok(LockKind::Shared),
        n => invalid(format!("unknown lock kind {n}")),
    }
}

/// Encodes a lock request.
pub fn put_lock_options(w: &mut Writer, o: &LockOptions) {
    w.str(&o.name);
    w.u8(lock_kind_code(o.kind));
    w.str(&o.cookie);
    w.str(&o.tag);
    w.str(&o.description);
    w.option(o.duration, |w, d| {
        w.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    });
    w.bool(o.renew);
}

/// Decodes a lock request.
pub fn get_lock_options(r: &mut Reader) -> DecodeResult<LockOptions> {
    Ok(LockOptions {
        name: r.str()?,
        kind: code_lock_kind(r.u8()?)?,
        cookie: r.str()?,
        tag: r.str()?,
        description: r.str()?,
        duration: r.option(|r| r.u64().map(Duration::from_nanos))?,
        renew: r.bool()?,
    })
}

/// Encodes a lock's description.
pub fn put_lock_info(w: &mut Writer, info: &LockInfo) {
    w.option(info.kind, |w, k| w.u8(lock_kind_code(k)));
    w.str(&info.tag);
    w.list(&info.lockers, |w, l| {
        put_client(w, &l.client);
        w.str(&l.cookie);
        w.str(&l.description);
        w.option(l.expiration, put_time);
        w.bool(l.alive);
    });
}

/// Decodes a lock's description.
pub fn get_lock_info(r: &mut Reader) -> DecodeResult<LockInfo> {
    Ok(LockInfo {
        kind: r.option(|r| code_lock_kind(r.u8()?))?,
        tag: r.str()?,
        lockers: r.list(24, |r| {
            Ok(LockerInfo {
                client: get_client(r)?,
                cookie: r.str()?,
                description: r.str()?,
                expiration: r.option(get_time)?,
                alive: r.bool()?,
            })
        })?,
    })
}

/// Encodes a watcher.
pub fn put_watcher(w: &mut Writer, info: &WatcherInfo) {
    put_client(w, &info.client);
    w.u64(info.cookie);
}

/// Decodes a watcher.
pub fn get_watcher(r: &mut Reader) -> DecodeResult<WatcherInfo> {
    Ok(WatcherInfo {
        client: get_client(r)?,
        cookie: r.u64()?,
    })
}

/// Encodes the outcome of a notify.
pub fn put_notify_result(w: &mut Writer, res: &NotifyResult) {
    w.list(&res.acks, |w, a| {
        put_watcher(w, &a.watcher);
        w.bytes(&a.reply);
    });
    w.list(&res.timeouts, put_watcher);
}

/// Decodes the outcome of a notify.
pub fn get_notify_result(r: &mut Reader) -> DecodeResult<NotifyResult> {
    Ok(NotifyResult {
        acks: r.list(16, |r| {
            Ok(NotifyAck {
                watcher: get_watcher(r)?,
                reply: r.bytes()?,
            })
        })?,
        timeouts: r.list(16, get_watcher)?,
    })
}

/// Encodes a pool's name and id.
pub fn put_pool(w: &mut Writer, p: &PoolInfo) {
    w.u64(p.id.0);
    w.str(&p.name);
}

/// Decodes a pool's name and id.
pub fn get_pool(r: &mut Reader) -> DecodeResult<PoolInfo> {
    Ok(PoolInfo {
        id: PoolId(r.u64()?),
        name: r.str()?,
    })
}
