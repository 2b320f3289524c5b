//! Advisory locks through the `lock` object class, and the liveness of their holders.
//!
//! RADOS does not know whether a lock holder's process still runs. Like librbd, this backend
//! counts a holder as alive while it watches the locked object (a watch ends when its session
//! stops answering), and counts this session's own holds as alive.

use std::sync::Arc;

use rbdx_objstore::{
    ClientId, Error, ErrorKind, IoCtx, LockInfo, LockOptions, LockerInfo, Result, Subject,
};

use crate::cls_lock;
use crate::store::Inner;
use crate::watch::list_watchers;

fn lock_subject(oid: &str, name: &str) -> Subject {
    Subject::Lock {
        oid: oid.to_owned(),
        name: name.to_owned(),
    }
}

fn malformed(ctx: &IoCtx, oid: &str) -> Error {
    Error::new(ErrorKind::Io, ctx.object_subject(oid))
        .with_detail("malformed reply of the lock class")
}

/// Names the lock rather than the object in errors about the lock itself.
fn about_lock(e: Error, oid: &str, name: &str) -> Error {
    match e.kind() {
        ErrorKind::Busy => Error::new(ErrorKind::Busy, lock_subject(oid, name))
            .with_detail("held by another client"),
        ErrorKind::AlreadyExists => Error::new(ErrorKind::AlreadyExists, lock_subject(oid, name))
            .with_detail("already held with this cookie (renew to extend it)"),
        ErrorKind::NotFound => {
            Error::new(ErrorKind::NotFound, lock_subject(oid, name)).with_detail("no such hold")
        }
        _ => e,
    }
}

impl Inner {
    async fn lock_call(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        method: &'static str,
        input: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let oid = oid.to_owned();
        self.io_call(ctx, move |io, ctx| {
            io.exec(&oid, "lock", method, &input, || ctx.object_subject(&oid))
        })
        .await
    }

    /// Takes a lock; the lock class creates the object if it is absent.
    pub(crate) async fn lock(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        opts: &LockOptions,
    ) -> Result<()> {
        self.lock_call(ctx, oid, "lock", cls_lock::lock_op(opts))
            .await
            .map(drop)
            .map_err(|e| about_lock(e, oid, &opts.name))
    }

    /// Releases this session's hold with `cookie`.
    pub(crate) async fn unlock(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        name: &str,
        cookie: &str,
    ) -> Result<()> {
        self.lock_call(ctx, oid, "unlock", cls_lock::unlock_op(name, cookie))
            .await
            .map(drop)
            .map_err(|e| about_lock(e, oid, name))
    }

    /// Removes another client's hold.
    pub(crate) async fn lock_break(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()> {
        self.lock_call(
            ctx,
            oid,
            "break_lock",
            cls_lock::break_op(name, client, cookie),
        )
        .await
        .map(drop)
        .map_err(|e| about_lock(e, oid, name))
    }

    /// Describes a lock; holders are alive while they watch the object.
    pub(crate) async fn lock_info(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        name: &str,
    ) -> Result<LockInfo> {
        let reply = self
            .lock_call(ctx, oid, "get_info", cls_lock::get_info_op(name))
            .await?;
        let info = cls_lock::decode_info(&reply).map_err(|_| malformed(ctx, oid))?;
        let me = self.client.id;
        let watchers = if info.holders.iter().any(|h| h.client.id != me) {
            let oid = oid.to_owned();
            self.io_call(ctx, move |io, ctx| list_watchers(io, ctx, &oid))
                .await?
        } else {
            Vec::new()
        };
        let lockers = info
            .holders
            .into_iter()
            .map(|h| LockerInfo {
                alive: h.client.id == me || watchers.iter().any(|w| w.client.id == h.client.id),
                client: h.client,
                cookie: h.cookie,
                description: h.description,
                expiration: h.expiration,
            })
            .collect();
        Ok(LockInfo {
            kind: info.kind,
            tag: info.tag,
            lockers,
        })
    }

    /// Lists the names of the locks held on an object. The lock class keeps a lock's entry
    /// after its last holder leaves, so each listed lock is checked for holders.
    pub(crate) async fn lock_list(self: &Arc<Self>, ctx: &IoCtx, oid: &str) -> Result<Vec<String>> {
        let reply = self.lock_call(ctx, oid, "list_locks", Vec::new()).await?;
        let names = cls_lock::decode_list(&reply).map_err(|_| malformed(ctx, oid))?;
        let mut held = Vec::with_capacity(names.len());
        for name in names {
            let reply = self
                .lock_call(ctx, oid, "get_info", cls_lock::get_info_op(&name))
                .await?;
            let info = cls_lock::decode_info(&reply).map_err(|_| malformed(ctx, oid))?;
            if !info.holders.is_empty() {
                held.push(name);
            }
        }
        held.sort();
        Ok(held)
    }
}
