//! Running one request against a session's store, after the key's capabilities allow it.

use std::sync::Arc;

use rbdx_objstore::{Error, ObjectStore, WatchEvent};

use crate::caps;
use crate::conn::outgoing;
use crate::frame::{Frame, FrameType};
use crate::keys::PREFIX;
use crate::message::{Event, Reply, Request};
use crate::server::session::{Session, WatchEntry};

/// Checks and runs `req` for `session`.
pub async fn run(session: &Arc<Session>, req: Request) -> Result<Reply, Error> {
    let pool = match caps::pool_by_name(&req) {
        Some(name) => Some(name.to_owned()),
        None => match request_pool(&req) {
            Some(id) => match session.pool_name(id).await {
                Some(name) => Some(name),
                // A key limited to pools reaches only pools it can name.
                None if !session.key.pools.is_empty() => {
                    return Err(Error::new(
                        rbdx_objstore::ErrorKind::PermissionDenied,
                        rbdx_objstore::Subject::PoolId(id),
                    )
                    .with_detail(format!(
                        "key {} is limited to pool(s) {}, and pool id {id} is not known",
                        session.key.name,
                        session.key.pools.join(", ")
                    )));
                }
                None => None,
            },
            None => None,
        },
    };
    caps::check(&session.key, pool.as_deref(), &req)?;
    let store = &session.store;
    Ok(match req {
        Request::PoolCreate(name) => Reply::PoolId(store.pool_create(&name).await?),
        Request::PoolRemove(name) => {
            store.pool_remove(&name).await?;
            session.forget_pool(&name);
            Reply::Unit
        }
        Request::PoolList => Reply::Pools(
            store
                .pool_list()
                .await?
                .into_iter()
                .filter(|p| session.key.allows_pool(&p.name))
                .collect(),
        ),
        Request::PoolLookup(name) => Reply::Pool(store.pool_lookup(&name).await?),
        Request::PoolById(id) => Reply::Pool(store.pool_by_id(id).await?),
        Request::NamespaceCreate(io) => {
            store.namespace_create(&io).await?;
            Reply::Unit
        }
        Request::NamespaceRemove(io) => {
            store.namespace_remove(&io).await?;
            Reply::Unit
        }
        Request::NamespaceList(pool) => Reply::Names(store.namespace_list(pool).await?),
        Request::ConfigKeyGet(key) => Reply::Bytes(store.config_key_get(&key).await?),
        Request::ConfigKeySet(key, value) => {
            store.config_key_set(&key, value).await?;
            Reply::Unit
        }
        Request::ConfigKeyRemove(key) => {
            store.config_key_remove(&key).await?;
            Reply::Unit
        }
        Request::ConfigKeyList => Reply::Names(
            store
                .config_key_list()
                .await?
                .into_iter()
                .filter(|k| !k.starts_with(PREFIX) && caps::readable_config_key(&session.key, k))
                .collect(),
        ),
        Request::SnapCreate(pool) => Reply::Snap(store.snap_create(pool).await?),
        Request::SnapRemove(pool, snap) => {
            store.snap_remove(pool, snap).await?;
            Reply::Unit
        }
        Request::Read { io, oid, op, snap } => {
            Reply::Read(store.read_op(&io, &oid, &op, snap).await?)
        }
        Request::Operate { io, oid, op, snapc } => {
            Reply::Version(store.operate(&io, &oid, &op, &snapc).await?)
        }
        Request::ListObjects(io, opts) => Reply::Page(store.list_objects_opts(&io, &opts).await?),
        Request::ListSnaps(io, oid) => Reply::SnapSet(store.list_snaps(&io, &oid).await?),
        Request::Watch(io, oid) => Reply::Watch(watch(session, io, oid).await?),
        Request::Unwatch(io, oid, cookie) => {
            if let Some(w) = session
                .watches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&cookie)
            {
                w.task.abort();
            }
            store.unwatch(&io, &oid, cookie).await?;
            Reply::Unit
        }
        Request::Notify {
            io,
            oid,
            payload,
            timeout,
        } => Reply::Notify(store.notify(&io, &oid, payload, timeout).await?),
        Request::ListWatchers(io, oid) => Reply::Watchers(store.list_watchers(&io, &oid).await?),
        Request::Lock(io, oid, opts) => {
            store.lock_opts(&io, &oid, &opts).await?;
            Reply::Unit
        }
        Request::Unlock(io, oid, name, cookie) => {
            store.unlock(&io, &oid, &name, &cookie).await?;
            Reply::Unit
        }
        Request::LockInfo(io, oid, name) => Reply::Lock(store.lock_info(&io, &oid, &name).await?),
        Request::LockList(io, oid) => Reply::Names(store.lock_list(&io, &oid).await?),
        Request::LockBreak(io, oid, name, client, cookie) => {
            store.lock_break(&io, &oid, &name, client, &cookie).await?;
            Reply::Unit
        }
        Request::Flush => {
            store.flush().await?;
            Reply::Unit
        }
    })
}

fn request_pool(req: &Request) -> Option<rbdx_objstore::PoolId> {
    match req {
        Request::PoolById(id) | Request::NamespaceList(id) | Request::SnapCreate(id) => Some(*id),
        Request::SnapRemove(id, _) => Some(*id),
        Request::NamespaceCreate(io)
        | Request::NamespaceRemove(io)
        | Request::Read { io, .. }
        | Request::Operate { io, .. }
        | Request::ListObjects(io, _)
        | Request::ListSnaps(io, _)
        | Request::Watch(io, _)
        | Request::Unwatch(io, ..)
        | Request::Notify { io, .. }
        | Request::ListWatchers(io, _)
        | Request::Lock(io, ..)
        | Request::Unlock(io, ..)
        | Request::LockInfo(io, ..)
        | Request::LockList(io, _)
        | Request::LockBreak(io, ..) => Some(io.pool()),
        _ => None,
    }
}

/// Starts a watch in the store and a task that forwards its events to whichever connection
/// the session has when they arrive.
async fn watch(
    session: &Arc<Session>,
    io: rbdx_objstore::IoCtx,
    oid: String,
) -> Result<u64, Error> {
    let mut handle = session.store.watch(&io, &oid).await?;
    let cookie = handle.cookie();
    let weak = Arc::downgrade(session);
    let task = tokio::spawn(async move {
        while let Some(event) = handle.next().await {
            let Some(session) = weak.upgrade() else {
                return;
            };
            match event {
                WatchEvent::Notify(n) => {
                    let Some(att) = session.attachment() else {
                        // Detached: nobody can answer, so the notifier sees a timeout.
                        continue;
                    };
                    let notify_id = n.notify_id;
                    let notifier = n.notifier.clone();
                    let payload = n.payload.clone();
                    let ack_id = session.hold_ack(n);
                    let ev = Event::Notify {
                        notify_id,
                        notifier,
                        payload,
                        ack_id,
                    };
                    let frame = Frame::new(FrameType::Event, cookie, ev.encode());
                    if let Ok(out) = outgoing(&frame, att.compress) {
                        // A full queue means the client is not reading: the notify times out.
                        let _ = att.tx.try_send(out);
                    }
                }
                WatchEvent::Disconnected(e) => {
                    session
                        .watches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&cookie);
                    match session.attachment() {
                        Some(att) => {
                            let ev = Event::Lost(e).encode();
                            let frame = Frame::new(FrameType::Event, cookie, ev);
                            if let Ok(out) = outgoing(&frame, att.compress) {
                                let _ = att.tx.send(out).await;
                            }
                        }
                        None => session.keep_lost(cookie, e),
                    }
                    return;
                }
                _ => {}
            }
        }
    });
    session
        .watches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(cookie, WatchEntry { io, oid, task });
    Ok(cookie)
}
