//! Watches and notifies on librados' `watch3`/`notify2`.
//!
//! librados calls the watch callbacks on its own threads. They turn each notification into a
//! [`Notification`] on the watch's channel; when the user acknowledges it, a task on the
//! runtime that created the watch sends `rados_notify_ack` through the store's blocking pool.
//! A watch keeps its own I/O context until it is unwatched, and its callback context is freed
//! only after `rados_watch_flush` guarantees no callback still runs.

use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rbdx_objstore::{
    ClientId, ClientInfo, Error, ErrorKind, IoCtx, Notification, NotifyAck, NotifyResult, Result,
    Subject, Watch, WatchEvent, WatcherInfo,
};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{ForeignBuf, Io, cstr};
use crate::errors::{check, from_errno};
use crate::ffi;
use crate::shim_reader::ShimReader;
use crate::store::{Inner, guard};

/// What a watch callback needs; owned by the watch registration.
pub(crate) struct WatchCtx {
    pub(crate) events: mpsc::UnboundedSender<WatchEvent>,
    pub(crate) store: Weak<Inner>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) io: IoCtx,
    pub(crate) oid: String,
}

/// The watch callback. A panic must not unwind into librados, so it is caught and logged.
pub(crate) unsafe extern "C" fn on_notify(
    arg: *mut c_void,
    notify_id: u64,
    cookie: u64,
    notifier: u64,
    data: *mut c_void,
    len: usize,
) {
    // SAFETY: `arg` is the WatchCtx registered with this watch; it is freed only after the
    // watch is removed and rados_watch_flush has returned, so it is alive here.
    let ctx = unsafe { &*(arg as *const WatchCtx) };
    let payload = if data.is_null() || len == 0 {
        Bytes::new()
    } else {
        // SAFETY: librados passes `len` readable bytes at `data` for the call's duration.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
    };
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deliver(ctx, notify_id, cookie, notifier, payload)
    }));
    if delivered.is_err() {
        tracing::error!("delivering notify {notify_id} panicked");
    }
}

/// Queues a notification on the watch's channel and answers it from a task once the user
/// acknowledges it.
fn deliver(ctx: &WatchCtx, notify_id: u64, cookie: u64, notifier: u64, payload: Bytes) {
    let (tx, rx) = oneshot::channel();
    let who = ClientInfo {
        id: ClientId(notifier),
        addr: format!("client.{notifier}"),
    };
    if ctx
        .events
        .send(WatchEvent::Notify(Notification::new(
            notify_id, who, payload, tx,
        )))
        .is_err()
    {
        return;
    }
    let (store, io, oid) = (ctx.store.clone(), ctx.io.clone(), ctx.oid.clone());
    ctx.runtime.spawn(async move {
        // A notification dropped without an answer is left unacknowledged: the notifier counts
        // it as timed out.
        let Ok(reply) = rx.await else { return };
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = Inner::notify_ack(&store, io, oid, notify_id, cookie, reply).await {
            tracing::warn!("acknowledging notify {notify_id}: {e}");
        }
    });
}

/// The watch error callback: the watch is lost (e.g. the session timed out).
pub(crate) unsafe extern "C" fn on_error(arg: *mut c_void, _cookie: u64, err: c_int) {
    // SAFETY: as in `on_notify`.
    let ctx = unsafe { &*(arg as *const WatchCtx) };
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let error = from_errno(err.min(-1), ctx.io.object_subject(&ctx.oid));
        let _ = ctx.events.send(WatchEvent::Disconnected(error));
    }));
    if sent.is_err() {
        tracing::error!("reporting a lost watch panicked");
    }
}

/// The watchers that did not answer a notify: (gid, cookie) pairs.
pub(crate) type Silent = Vec<(u64, u64)>;

/// One acknowledgement in a notify reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) gid: u64,
    pub(crate) cookie: u64,
    pub(crate) reply: Bytes,
}

/// Decodes `rados_notify2`'s reply buffer: acks (gid, cookie, reply) then timeouts (gid, cookie).
pub(crate) fn decode_reply(b: &[u8]) -> Option<(Vec<Ack>, Silent)> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos.checked_add(n)?)?;
        pos += n;
        Some(s)
    };
    let u32_ = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    let acks_n = u32_(take(4)?);
    let mut acks = Vec::new();
    for _ in 0..acks_n {
        let gid = u64_(take(8)?);
        let cookie = u64_(take(8)?);
        let len = u32_(take(4)?) as usize;
        let reply = Bytes::copy_from_slice(take(len)?);
        acks.push(Ack { gid, cookie, reply });
    }
    let timeouts_n = u32_(take(4)?);
    let mut timeouts = Vec::new();
    for _ in 0..timeouts_n {
        timeouts.push((u64_(take(8)?), u64_(take(8)?)));
    }
    Some((acks, timeouts))
}

/// A watch this session holds: its own I/O context and its callback context.
#[derive(Debug)]
pub(crate) struct Registration {
    io: Io,
    ctx: *mut WatchCtx,
    cookie: u64,
}

// SAFETY: the callback context is only read by librados callbacks and freed once, by the
// registration, after the watch is removed and flushed; the I/O context is used by one thread
// at a time.
unsafe impl Send for Registration {}

impl Registration {
    /// Removes the watch from the cluster (errors mean it was lost already).
    pub(crate) fn unwatch(&self) {
        // SAFETY: valid io handle and a cookie librados gave for it.
        let r = unsafe { ffi::rados_unwatch2(self.io.handle, self.cookie) };
        if r < 0 && r != -libc::ENOENT && r != -libc::ENOTCONN {
            tracing::debug!("unwatching cookie {}: errno {}", self.cookie, -r);
        }
    }

    /// Frees the callback context; call only after [`Registration::unwatch`] and
    /// `rados_watch_flush`.
    pub(crate) fn free(self) {
        // SAFETY: the context came from Box::into_raw, the watch is gone and flushed, so no
        // callback can use it any more.
        drop(unsafe { Box::from_raw(self.ctx) });
    }
}

impl std::fmt::Debug for WatchCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCtx")
            .field("io", &self.io)
            .field("oid", &self.oid)
            .finish()
    }
}

/// Lists the watchers of `oid`.
pub(crate) fn list_watchers(io: &mut Io, ctx: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
    let subject = || ctx.object_subject(oid);
    let c_oid = cstr(oid, subject)?;
    let buf = io.shim(
        // SAFETY: valid io and oid; the shim writes the out-pointers.
        |h, buf, len| unsafe { ffi::rbdx_list_watchers(h, c_oid.as_ptr(), buf, len) },
        subject,
    )?;
    let mut r = ShimReader::new(buf);
    let parse = |r: &mut ShimReader| -> Option<Vec<WatcherInfo>> {
        let n = r.u32()?;
        (0..n)
            .map(|_| {
                let id = r.u64()?;
                let cookie = r.u64()?;
                let _timeout = r.u32()?;
                let addr = r.string()?;
                Some(WatcherInfo {
                    client: ClientInfo {
                        id: ClientId(id),
                        addr,
                    },
                    cookie,
                })
            })
            .collect()
    };
    parse(&mut r).ok_or_else(|| {
        Error::new(ErrorKind::Io, subject())
            .with_detail("the shim returned a malformed watcher list")
    })
}

impl Inner {
    /// Starts watching `oid` with a dedicated I/O context.
    pub(crate) async fn watch(self: &Arc<Self>, ctx: &IoCtx, oid: &str) -> Result<Watch> {
        let (events, receiver) = mpsc::unbounded_channel();
        let watch_ctx = WatchCtx {
            events,
            store: Arc::downgrade(self),
            runtime: tokio::runtime::Handle::current(),
            io: ctx.clone(),
            oid: oid.to_owned(),
        };
        let timeout = self
            .config
            .watch_timeout
            .as_secs()
            .clamp(1, u64::from(u32::MAX)) as u32;
        let cookie = self
            .run(move |inner| {
                let subject = || watch_ctx.io.object_subject(&watch_ctx.oid);
                let c_oid = cstr(&watch_ctx.oid, subject)?;
                let io = inner
                    .cluster
                    .io(watch_ctx.io.pool(), watch_ctx.io.namespace())?;
                let raw = Box::into_raw(Box::new(watch_ctx));
                let mut cookie = 0u64;
                // SAFETY: valid io and oid; `raw` stays alive until the registration frees it
                // after unwatching and flushing, or below if the watch was not established.
                let r = unsafe {
                    ffi::rados_watch3(
                        io.handle,
                        c_oid.as_ptr(),
                        &mut cookie,
                        on_notify,
                        on_error,
                        timeout,
                        raw.cast(),
                    )
                };
                if r < 0 {
                    inner.cluster.watch_flush();
                    // SAFETY: the watch was not established and callbacks are flushed.
                    let lost = unsafe { Box::from_raw(raw) };
                    return Err(from_errno(r, lost.io.object_subject(&lost.oid)));
                }
                guard(&inner.watches).insert(
                    cookie,
                    Registration {
                        io,
                        ctx: raw,
                        cookie,
                    },
                );
                Ok(cookie)
            })
            .await?;
        Ok(Watch::new(cookie, receiver))
    }

    /// Stops a watch of this session.
    pub(crate) async fn unwatch(self: &Arc<Self>, cookie: u64) -> Result<()> {
        let registration = guard(&self.watches)
            .remove(&cookie)
            .ok_or_else(|| Error::not_found(Subject::Watch(cookie)))?;
        self.run(move |inner| {
            registration.unwatch();
            inner.cluster.watch_flush();
            registration.free();
            Ok(())
        })
        .await
    }

    /// Sends a notify and collects who answered and who did not.
    pub(crate) async fn notify(
        self: &Arc<Self>,
        ctx: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult> {
        let oid = oid.to_owned();
        self.io_call(ctx, move |io, ctx| {
            let subject = || ctx.object_subject(&oid);
            let c_oid = cstr(&oid, subject)?;
            let (mut reply, mut reply_len) = (std::ptr::null_mut(), 0usize);
            let timeout_ms = u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            // SAFETY: valid io, oid and payload; librados allocates the reply, freed below.
            let r = unsafe {
                ffi::rados_notify2(
                    io.handle,
                    c_oid.as_ptr(),
                    payload.as_ptr().cast(),
                    payload.len() as c_int,
                    timeout_ms,
                    &mut reply,
                    &mut reply_len,
                )
            };
            let reply = ForeignBuf::rados(reply, reply_len);
            // A watcher that did not answer makes the whole notify time out; the reply still
            // says who answered.
            if r < 0 && r != -libc::ETIMEDOUT {
                return Err(from_errno(r, subject()));
            }
            let (acks, timeouts) = decode_reply(reply.as_ref()).ok_or_else(|| {
                Error::new(ErrorKind::Io, subject()).with_detail("malformed notify reply")
            })?;
            let addrs: HashMap<(u64, u64), String> = if acks.is_empty() && timeouts.is_empty() {
                HashMap::new()
            } else {
                list_watchers(io, ctx, &oid)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| ((w.client.id.0, w.cookie), w.client.addr))
                    .collect()
            };
            let watcher = |gid: u64, cookie: u64| WatcherInfo {
                client: ClientInfo {
                    id: ClientId(gid),
                    addr: addrs
                        .get(&(gid, cookie))
                        .cloned()
                        .unwrap_or_else(|| format!("client.{gid}")),
                },
                cookie,
            };
            Ok(NotifyResult {
                acks: acks
                    .into_iter()
                    .map(|a| NotifyAck {
                        watcher: watcher(a.gid, a.cookie),
                        reply: a.reply,
                    })
                    .collect(),
                timeouts: timeouts
                    .into_iter()
                    .map(|(gid, cookie)| watcher(gid, cookie))
                    .collect(),
            })
        })
        .await
    }

    /// Answers a notify received by watch `cookie`.
    pub(crate) async fn notify_ack(
        self: &Arc<Self>,
        ctx: IoCtx,
        oid: String,
        notify_id: u64,
        cookie: u64,
        reply: Bytes,
    ) -> Result<()> {
        self.run_unlimited(&ctx, move |io, ctx| {
            let subject = || ctx.object_subject(&oid);
            let c_oid = cstr(&oid, subject)?;
            // SAFETY: valid io, oid and reply buffer.
            let r = unsafe {
                ffi::rados_notify_ack(
                    io.handle,
                    c_oid.as_ptr(),
                    notify_id,
                    cookie,
                    reply.as_ptr().cast(),
                    reply.len() as c_int,
                )
            };
            check(r, subject)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reply_decodes() {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(b"pong");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(&10u64.to_le_bytes());
        let (acks, timeouts) = decode_reply(&b).unwrap();
        assert_eq!(
            acks,
            vec![Ack {
                gid: 7,
                cookie: 9,
                reply: Bytes::from_static(b"pong")
            }]
        );
        assert_eq!(timeouts, vec![(8, 10)]);
        for len in 0..b.len() {
            assert!(decode_reply(&b[..len]).is_none(), "cut at {len}");
        }
    }
}
