//! The messages inside `Request`, `Response`, `Event` and `NotifyAck` frames: one request per
//! object-store call, its reply, and the events the gateway pushes to a watching client.

use std::time::Duration;

use bytes::Bytes;
use rbdx_objstore::{
    ClientId, ClientInfo, Error, IoCtx, ListOptions, ListPage, LockInfo, LockOptions, NotifyResult,
    PoolId, PoolInfo, ReadOp, ReadResult, SnapContext, SnapId, SnapSet, WatcherInfo, WriteOp,
};

use crate::codec::{DecodeResult, Reader, Rope, Writer, invalid};
use crate::wire::*;

/// One object-store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `pool_create`.
    PoolCreate(String),
    /// `pool_remove`.
    PoolRemove(String),
    /// `pool_list`.
    PoolList,
    /// `pool_lookup`.
    PoolLookup(String),
    /// `pool_by_id`.
    PoolById(PoolId),
    /// `namespace_create`.
    NamespaceCreate(IoCtx),
    /// `namespace_remove`.
    NamespaceRemove(IoCtx),
    /// `namespace_list`.
    NamespaceList(PoolId),
    /// `config_key_get`.
    ConfigKeyGet(String),
    /// `config_key_set`.
    ConfigKeySet(String, Bytes),
    /// `config_key_remove`.
    ConfigKeyRemove(String),
    /// `config_key_list`.
    ConfigKeyList,
    /// `snap_create`.
    SnapCreate(PoolId),
    /// `snap_remove`.
    SnapRemove(PoolId, SnapId),
    /// `read_op`.
    Read {
        /// Where.
        io: IoCtx,
        /// Object.
        oid: String,
        /// The steps.
        op: ReadOp,
        /// At a snapshot, or the head.
        snap: Option<SnapId>,
    },
    /// `operate`.
    Operate {
        /// Where.
        io: IoCtx,
        /// Object.
        oid: String,
        /// The batch.
        op: WriteOp,
        /// The writer's snapshot context.
        snapc: SnapContext,
    },
    /// `list_objects_opts`.
    ListObjects(IoCtx, ListOptions),
    /// `list_snaps`.
    ListSnaps(IoCtx, String),
    /// `watch`.
    Watch(IoCtx, String),
    /// `unwatch` (the gateway's cookie).
    Unwatch(IoCtx, String, u64),
    /// `notify`.
    Notify {
        /// Where.
        io: IoCtx,
        /// Object.
        oid: String,
        /// Payload.
        payload: Bytes,
        /// How long to wait for answers.
        timeout: Duration,
    },
    /// `list_watchers`.
    ListWatchers(IoCtx, String),
    /// `lock_opts`.
    Lock(IoCtx, String, LockOptions),
    /// `unlock`: object, lock name, cookie.
    Unlock(IoCtx, String, String, String),
    /// `lock_info`: object, lock name.
    LockInfo(IoCtx, String, String),
    /// `lock_list`.
    LockList(IoCtx, String),
    /// `lock_break`: object, lock name, holder, cookie.
    LockBreak(IoCtx, String, String, ClientId, String),
    /// `flush`.
    Flush,
}

impl Request {
    /// Returns the request's operation name, as logs and refusals show it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::PoolCreate(_) => "pool_create",
            Request::PoolRemove(_) => "pool_remove",
            Request::PoolList => "pool_list",
            Request::PoolLookup(_) => "pool_lookup",
            Request::PoolById(_) => "pool_by_id",
            Request::NamespaceCreate(_) => "namespace_create",
            Request::NamespaceRemove(_) => "namespace_remove",
            Request::NamespaceList(_) => "namespace_list",
            Request::ConfigKeyGet(_) => "config_key_get",
            Request::ConfigKeySet(..) => "config_key_set",
            Request::ConfigKeyRemove(_) => "config_key_remove",
            Request::ConfigKeyList => "config_key_list",
            Request::SnapCreate(_) => "snap_create",
            Request::SnapRemove(..) => "snap_remove",
            Request::Read { .. } => "read",
            Request::Operate { .. } => "operate",
            Request::ListObjects(..) => "list_objects",
            Request::ListSnaps(..) => "list_snaps",
            Request::Watch(..) => "watch",
            Request::Unwatch(..) => "unwatch",
            Request::Notify { .. } => "notify",
            Request::ListWatchers(..) => "list_watchers",
            Request::Lock(..) => "lock",
            Request::Unlock(..) => "unlock",
            Request::LockInfo(..) => "lock_info",
            Request::LockList(..) => "lock_list",
            Request::LockBreak(..) => "lock_break",
            Request::Flush => "flush",
        }
    }

    /// Returns true if running the request twice could differ from running it once: such a
    /// request is never sent again after a lost connection unless the session survived.
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Request::PoolList
                | Request::PoolLookup(_)
                | Request::PoolById(_)
                | Request::NamespaceList(_)
                | Request::ConfigKeyGet(_)
                | Request::ConfigKeyList
                | Request::Read { .. }
                | Request::ListObjects(..)
                | Request::ListSnaps(..)
                | Request::ListWatchers(..)
                | Request::LockInfo(..)
                | Request::LockList(..)
                | Request::Flush
        )
    }

    /// Encodes the request.
    pub fn encode(&self) -> Bytes {
        let rope = self.encode_rope();
        let mut w = Writer::new();
        for chunk in rope {
            w.raw(&chunk);
        }
        w.finish()
    }

    /// Encodes the request as chunks, its data uncopied.
    pub fn encode_rope(&self) -> Rope {
        let mut w = Writer::new();
        match self {
            Request::PoolCreate(name) => {
                w.u8(1);
                w.str(name);
            }
            Request::PoolRemove(name) => {
                w.u8(2);
                w.str(name);
            }
            Request::PoolList => w.u8(3),
            Request::PoolLookup(name) => {
                w.u8(4);
                w.str(name);
            }
            Request::PoolById(id) => {
                w.u8(5);
                w.u64(id.0);
            }
            Request::NamespaceCreate(io) => {
                w.u8(6);
                put_io(&mut w, io);
            }
            Request::NamespaceRemove(io) => {
                w.u8(7);
                put_io(&mut w, io);
            }
            Request::NamespaceList(pool) => {
                w.u8(8);
                w.u64(pool.0);
            }
            Request::ConfigKeyGet(key) => {
                w.u8(9);
                w.str(key);
            }
            Request::ConfigKeySet(key, value) => {
                w.u8(10);
                w.str(key);
                w.bytes(value);
            }
            Request::ConfigKeyRemove(key) => {
                w.u8(11);
                w.str(key);
            }
            Request::ConfigKeyList => w.u8(12),
            Request::SnapCreate(pool) => {
                w.u8(13);
                w.u64(pool.0);
            }
            Request::SnapRemove(pool, snap) => {
                w.u8(14);
                w.u64(pool.0);
                w.u64(snap.0);
            }
            Request::Read { io, oid, op, snap } => {
                w.u8(15);
                put_io(&mut w, io);
                w.str(oid);
                put_read_op(&mut w, op);
                w.option(snap.map(|s| s.0), Writer::u64);
            }
            Request::Operate { io, oid, op, snapc } => {
                w.u8(16);
                put_io(&mut w, io);
                w.str(oid);
                put_write_op(&mut w, op);
                put_snapc(&mut w, snapc);
            }
            Request::ListObjects(io, opts) => {
                w.u8(17);
                put_io(&mut w, io);
                put_list_options(&mut w, opts);
            }
            Request::ListSnaps(io, oid) => {
                w.u8(18);
                put_io(&mut w, io);
                w.str(oid);
            }
            Request::Watch(io, oid) => {
                w.u8(19);
                put_io(&mut w, io);
                w.str(oid);
            }
            Request::Unwatch(io, oid, cookie) => {
                w.u8(20);
                put_io(&mut w, io);
                w.str(oid);
                w.u64(*cookie);
            }
            Request::Notify {
                io,
                oid,
                payload,
                timeout,
            } => {
                w.u8(21);
                put_io(&mut w, io);
                w.str(oid);
                w.bytes(payload);
                w.u64(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
            }
            Request::ListWatchers(io, oid) => {
                w.u8(22);
                put_io(&mut w, io);
                w.str(oid);
            }
            Request::Lock(io, oid, opts) => {
                w.u8(23);
                put_io(&mut w, io);
                w.str(oid);
                put_lock_options(&mut w, opts);
            }
            Request::Unlock(io, oid, name, cookie) => {
                w.u8(24);
                put_io(&mut w, io);
                w.str(oid);
                w.str(name);
                w.str(cookie);
            }
            Request::LockInfo(io, oid, name) => {
                w.u8(25);
                put_io(&mut w, io);
                w.str(oid);
                w.str(name);
            }
            Request::LockList(io, oid) => {
                w.u8(26);
                put_io(&mut w, io);
                w.str(oid);
            }
            Request::LockBreak(io, oid, name, client, cookie) => {
                w.u8(27);
                put_io(&mut w, io);
                w.str(oid);
                w.str(name);
                w.u64(client.0);
                w.str(cookie);
            }
            Request::Flush => w.u8(28),
        }
        w.finish_rope()
    }

    /// Decodes a request. An unknown operation code is `Ok(None)`: the gateway answers it
    /// `Unsupported` and the connection goes on (a newer client may probe for newer calls).
    pub fn decode(payload: Bytes) -> DecodeResult<Option<Request>> {
        let mut r = Reader::new(payload);
        let req = match r.u8()? {
            1 => Request::PoolCreate(r.str()?),
            2 => Request::PoolRemove(r.str()?),
            3 => Request::PoolList,
            4 => Request::PoolLookup(r.str()?),
            5 => Request::PoolById(PoolId(r.u64()?)),
            6 => Request::NamespaceCreate(get_io(&mut r)?),
            7 => Request::NamespaceRemove(get_io(&mut r)?),
            8 => Request::NamespaceList(PoolId(r.u64()?)),
            9 => Request::ConfigKeyGet(r.str()?),
            10 => Request::ConfigKeySet(r.str()?, r.bytes()?),
            11 => Request::ConfigKeyRemove(r.str()?),
            12 => Request::ConfigKeyList,
            13 => Request::SnapCreate(PoolId(r.u64()?)),
            14 => Request::SnapRemove(PoolId(r.u64()?), SnapId(r.u64()?)),
            15 => Request::Read {
                io: get_io(&mut r)?,
                oid: r.str()?,
                op: get_read_op(&mut r)?,
                snap: r.option(|r| r.u64().map(SnapId))?,
            },
            16 => Request::Operate {
                io: get_io(&mut r)?,
                oid: r.str()?,
                op: get_write_op(&mut r)?,
                snapc: get_snapc(&mut r)?,
            },
            17 => Request::ListObjects(get_io(&mut r)?, get_list_options(&mut r)?),
            18 => Request::ListSnaps(get_io(&mut r)?, r.str()?),
            19 => Request::Watch(get_io(&mut r)?, r.str()?),
            20 => Request::Unwatch(get_io(&mut r)?, r.str()?, r.u64()?),
            21 => Request::Notify {
                io: get_io(&mut r)?,
                oid: r.str()?,
                payload: r.bytes()?,
                timeout: Duration::from_millis(r.u64()?),
            },
            22 => Request::ListWatchers(get_io(&mut r)?, r.str()?),
            23 => Request::Lock(get_io(&mut r)?, r.str()?, get_lock_options(&mut r)?),
            24 => Request::Unlock(get_io(&mut r)?, r.str()?, r.str()?, r.str()?),
            25 => Request::LockInfo(get_io(&mut r)?, r.str()?, r.str()?),
            26 => Request::LockList(get_io(&mut r)?, r.str()?),
            27 => Request::LockBreak(
                get_io(&mut r)?,
                r.str()?,
                r.str()?,
                ClientId(r.u64()?),
                r.str()?,
            ),
            28 => Request::Flush,
            _ => return Ok(None),
        };
        r.end()?;
        Ok(Some(req))
    }
}

/// The successful answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to return.
    Unit,
    /// A pool id.
    PoolId(PoolId),
    /// Pools.
    Pools(Vec<PoolInfo>),
    /// One pool.
    Pool(PoolInfo),
    /// Names (namespaces, config keys, locks).
    Names(Vec<String>),
    /// A value.
    Bytes(Bytes),
    /// A snapshot id.
    Snap(SnapId),
    /// The outputs of a read.
    Read(ReadResult),
    /// An object version.
    Version(u64),
    /// A listing page.
    Page(ListPage),
    /// An object's snapshot history.
    SnapSet(SnapSet),
    /// A new watch's cookie at the gateway.
    Watch(u64),
    /// A notify's outcome.
    Notify(NotifyResult),
    /// Watchers.
    Watchers(Vec<WatcherInfo>),
    /// A lock's description.
    Lock(LockInfo),
}

/// Encodes the answer to a request: a status byte (0 ok, 1 error) and the reply or error.
pub fn encode_response(result: &Result<Reply, Error>) -> Bytes {
    let mut w = Writer::new();
    for chunk in encode_response_rope(result) {
        w.raw(&chunk);
    }
    w.finish()
}

/// Encodes the answer to a request as chunks, its data uncopied.
pub fn encode_response_rope(result: &Result<Reply, Error>) -> Rope {
    let mut w = Writer::new();
    match result {
        Ok(reply) => {
            w.u8(0);
            put_reply(&mut w, reply);
        }
        Err(e) => {
            w.u8(1);
            put_error(&mut w, e);
        }
    }
    w.finish_rope()
}

fn put_reply(w: &mut Writer, reply: &Reply) {
    match reply {
        Reply::Unit => w.u8(1),
        Reply::PoolId(id) => {
            w.u8(2);
            w.u64(id.0);
        }
        Reply::Pools(pools) => {
            w.u8(3);
            w.list(pools, put_pool);
        }
        Reply::Pool(pool) => {
            w.u8(4);
            put_pool(w, pool);
        }
        Reply::Names(names) => {
            w.u8(5);
            w.list(names, |w, n| w.str(n));
        }
        Reply::Bytes(b) => {
            w.u8(6);
            w.bytes(b);
        }
        Reply::Snap(id) => {
            w.u8(7);
            w.u64(id.0);
        }
        Reply::Read(res) => {
            w.u8(8);
            put_read_result(w, res);
        }
        Reply::Version(v) => {
            w.u8(9);
            w.u64(*v);
        }
        Reply::Page(p) => {
            w.u8(10);
            put_list_page(w, p);
        }
        Reply::SnapSet(s) => {
            w.u8(11);
            put_snapset(w, s);
        }
        Reply::Watch(cookie) => {
            w.u8(12);
            w.u64(*cookie);
        }
        Reply::Notify(res) => {
            w.u8(13);
            put_notify_result(w, res);
        }
        Reply::Watchers(list) => {
            w.u8(14);
            w.list(list, put_watcher);
        }
        Reply::Lock(info) => {
            w.u8(15);
            put_lock_info(w, info);
        }
    }
}

/// Decodes the answer to a request.
pub fn decode_response(payload: Bytes) -> DecodeResult<Result<Reply, Error>> {
    let mut r = Reader::new(payload);
    let out = match r.u8()? {
        0 => Ok(match r.u8()? {
            1 => Reply::Unit,
            2 => Reply::PoolId(PoolId(r.u64()?)),
            3 => Reply::Pools(r.list(12, get_pool)?),
            4 => Reply::Pool(get_pool(&mut r)?),
            5 => Reply::Names(r.list(4, Reader::str)?),
            6 => Reply::Bytes(r.bytes()?),
            7 => Reply::Snap(SnapId(r.u64()?)),
            8 => Reply::Read(get_read_result(&mut r)?),
            9 => Reply::Version(r.u64()?),
            10 => Reply::Page(get_list_page(&mut r)?),
            11 => Reply::SnapSet(get_snapset(&mut r)?),
            12 => Reply::Watch(r.u64()?),
            13 => Reply::Notify(get_notify_result(&mut r)?),
            14 => Reply::Watchers(r.list(16, get_watcher)?),
            15 => Reply::Lock(get_lock_info(&mut r)?),
            n => return invalid(format!("unknown reply {n}")),
        }),
        1 => Err(get_error(&mut r)?),
        n => return invalid(format!("unknown response status {n}")),
    };
    r.end()?;
    Ok(out)
}

/// Something the gateway tells a client about one of its watches (`Event` frames; the frame
/// id is the watch's cookie at the gateway).
#[derive(Debug)]
pub enum Event {
    /// A notify reached the watch; answer with a `NotifyAck` frame whose id is `ack_id`.
    Notify {
        /// The notify's id in the store.
        notify_id: u64,
        /// Who sent it.
        notifier: ClientInfo,
        /// The payload.
        payload: Bytes,
        /// The id to answer with.
        ack_id: u64,
    },
    /// The watch is gone at the gateway (object removed, session of the store lost).
    Lost(Error),
}

impl Event {
    /// Encodes the event.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Event::Notify {
                notify_id,
                notifier,
                payload,
                ack_id,
            } => {
                w.u8(1);
                w.u64(*notify_id);
                put_client(&mut w, notifier);
                w.bytes(payload);
                w.u64(*ack_id);
            }
            Event::Lost(e) => {
                w.u8(2);
                put_error(&mut w, e);
            }
        }
        w.finish()
    }

    /// Decodes an event.
    pub fn decode(payload: Bytes) -> DecodeResult<Event> {
        let mut r = Reader::new(payload);
        let ev = match r.u8()? {
            1 => Event::Notify {
                notify_id: r.u64()?,
                notifier: get_client(&mut r)?,
                payload: r.bytes()?,
                ack_id: r.u64()?,
            },
            2 => Event::Lost(get_error(&mut r)?),
            n => return invalid(format!("unknown event {n}")),
        };
        r.end()?;
        Ok(ev)
    }
}

/// Decodes the payload of an `Error` frame: the error that ended the connection.
pub fn decode_fatal(payload: Bytes) -> DecodeResult<Error> {
    let mut r = Reader::new(payload);
    let e = get_error(&mut r)?;
    r.end()?;
    Ok(e)
}

/// Encodes the payload of an `Error` frame.
pub fn encode_fatal(e: &Error) -> Bytes {
    let mut w = Writer::new();
    put_error(&mut w, e);
    w.finish()
}

#[cfg(test)]
mod tests {
    use rbdx_objstore::{ErrorKind, Subject};

    use super::*;

    #[test]
    fn requests_round_trip() {
        let io = IoCtx::with_namespace(PoolId(3), "ns");
        let requests = vec![
            Request::PoolCreate("rbd".into()),
            Request::Operate {
                io: io.clone(),
                oid: "rbd_data.1".into(),
                op: WriteOp::new()
                    .assert_version(4)
                    .write(10, Bytes::from_static(b"abc"))
                    .omap_set([("k", "v")])
                    .zero(0, 5),
                snapc: SnapContext::from_snaps([SnapId(2), SnapId(5)]),
            },
            Request::Read {
                io: io.clone(),
                oid: "o".into(),
                op: ReadOp::new()
                    .stat()
                    .sparse_read(0, None)
                    .omap_get_vals(Some("a"), "p", 9),
                snap: Some(SnapId(7)),
            },
            Request::Lock(
                io.clone(),
                "o".into(),
                LockOptions::new("l", rbdx_objstore::LockKind::Shared, "c")
                    .with_duration(Duration::from_secs(3)),
            ),
            Request::LockBreak(io, "o".into(), "l".into(), ClientId(4), "c".into()),
            Request::Flush,
        ];
        for req in requests {
            assert_eq!(Request::decode(req.encode()), Ok(Some(req)));
        }
        assert_eq!(Request::decode(Bytes::from_static(&[200])), Ok(None));
    }

    #[test]
    fn responses_and_errors_round_trip() {
        let reply = Reply::Names(vec!["a".into()]);
        let back = decode_response(encode_response(&Ok(reply.clone())));
        assert_eq!(back.ok().and_then(Result::ok), Some(reply));
        let err = Error::new(ErrorKind::Busy, Subject::ConfigKey("k".into())).with_detail("held");
        let back = decode_response(encode_response(&Err(err)));
        let back = back.unwrap_or_else(|e| panic!("{e}"));
        let back = back.err().unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(back.kind(), ErrorKind::Busy);
        assert_eq!(back.to_string(), "config-key 'k': busy (held)");
    }
}
