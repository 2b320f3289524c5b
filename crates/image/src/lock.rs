//! The exclusive lock and the header watch.
//!
//! Every open image watches its header, which is how `status` lists it and how it hears from
//! other clients. Two messages travel as notifies on the header:
//!
//! - `header_update`: the header changed; the receiver re-reads it before its next use.
//! - `request_lock`: another client wants to write. The owner answers at once, waits for its
//!   in-flight operations to finish (the gate), and releases the lock; it takes it back (by
//!   asking in turn) when it next needs to write. This cooperative hand-over is what lets
//!   `snap create`, `resize` or `flatten` from one process work while another one writes.
//!
//! The lock is the store's advisory lock `rbd_lock` on the header (exclusive, tag `internal`,
//! cookie `auto <watch cookie>`), as librbd names it. A holder whose process is gone is seen
//! as not alive and its lock is broken; a live holder that does not release within the wait
//! time makes the request fail with `Busy`, naming the holder.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{
    ErrorKind as StoreKind, IoCtx, LockKind, LockOptions, ObjectStore, WatchEvent,
};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use crate::error::{Error, Result, StoreContext};
use crate::features::Features;
use crate::header::FLAG_OBJECT_MAP_INVALID;
use crate::image::{Inner, load_object_map};

/// The lock name on the header, as librbd's.
pub const LOCK_NAME: &str = "rbd_lock";
/// The lock tag, as librbd's.
pub const LOCK_TAG: &str = "internal";
const HEADER_UPDATE: &[u8] = b"header_update";
const REQUEST_LOCK: &[u8] = b"request_lock";
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// After handing the lock over, how long this handle leaves it to the requester before
/// taking it back unasked.
const HANDOVER_GRACE: Duration = Duration::from_secs(2);

/// Lock and watch state of an open image.
#[derive(Debug, Default)]
pub(crate) struct LockState {
    owned: AtomicBool,
    acquiring: AsyncMutex<()>,
    watch_cookie: AtomicU64,
    watching: AtomicBool,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// When this handle last released the lock because another client asked for it.
    handed_over: std::sync::Mutex<Option<Instant>>,
}

impl LockState {
    fn cookie(&self) -> String {
        format!("auto {}", self.watch_cookie.load(Ordering::SeqCst))
    }

    fn set_handed_over(&self, at: Option<Instant>) {
        *self.handed_over.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Returns true while this handle holds the exclusive lock.
    pub fn owned(&self) -> bool {
        self.owned.load(Ordering::SeqCst)
    }
}

/// Starts watching the header and handling notifies.
pub(crate) async fn start_watch(inner: &Arc<Inner>) -> Result<()> {
    let mut watch = inner
        .store
        .watch(&inner.io, &inner.header_oid)
        .await
        .ctx(|| format!("cannot watch the header of image {}", inner.name))?;
    inner
        .lock
        .watch_cookie
        .store(watch.cookie(), Ordering::SeqCst);
    inner.lock.watching.store(true, Ordering::SeqCst);
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let task = tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            let Some(inner) = weak.upgrade() else { return };
            match event {
                WatchEvent::Notify(n) => {
                    if n.payload.as_ref() == HEADER_UPDATE {
                        inner.stale.store(true, Ordering::SeqCst);
                        n.ack(Bytes::new());
                    } else if n.payload.as_ref() == REQUEST_LOCK {
                        let owned = inner.lock.owned();
                        n.ack(Bytes::from_static(if owned {
                            b"releasing"
                        } else {
                            b"not owner"
                        }));
                        if owned {
                            tokio::spawn(async move {
                                if let Err(e) = hand_over(&inner).await {
                                    tracing::warn!("releasing the lock of {}: {e}", inner.name);
                                }
                            });
                        }
                    } else {
                        n.ack(Bytes::new());
                    }
                }
                WatchEvent::Disconnected(e) => {
                    tracing::warn!("lost the watch on image {}: {e}", inner.name);
                    inner.lock.watching.store(false, Ordering::SeqCst);
                    inner.lock.owned.store(false, Ordering::SeqCst);
                    return;
                }
                _ => {}
            }
        }
    });
    *inner.lock.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    Ok(())
}

/// Tells every watcher of the header that it changed.
pub(crate) async fn notify_header_update(inner: &Inner) {
    notify_header(&inner.store, &inner.io, &inner.header_oid).await;
}

/// Tells every watcher of header object `oid` that it changed.
pub(crate) async fn notify_header(store: &Arc<dyn ObjectStore>, io: &IoCtx, oid: &str) {
    if let Err(e) = store
        .notify(io, oid, Bytes::from_static(HEADER_UPDATE), NOTIFY_TIMEOUT)
        .await
    {
        tracing::debug!("header update notify for {oid}: {e}");
    }
}

impl crate::Image {
    /// Takes the exclusive lock now (asking its holder to hand it over), as a first write
    /// would; for a journaling image this replays what its journal holds past the image.
    pub async fn acquire_exclusive_lock(&self) -> Result<()> {
        self.inner.check_writable()?;
        ensure_lock(&self.inner).await
    }
}

/// Makes sure this handle holds the exclusive lock if the image has that feature; on taking
/// it, re-reads the header and loads the head object map.
pub(crate) async fn ensure_lock(inner: &Inner) -> Result<()> {
    if !inner.header().features.contains(Features::EXCLUSIVE_LOCK) {
        inner.refresh_if_stale().await?;
        if !inner.read_only {
            inner.check_writable()?;
        }
        return Ok(());
    }
    if inner.lock.owned() {
        return Ok(());
    }
    let _acquiring = inner.lock.acquiring.lock().await;
    if inner.lock.owned() {
        return Ok(());
    }
    if !inner.lock.watching.load(Ordering::SeqCst) {
        return Err(Error::busy(format!(
            "image {} lost its watch and cannot take the exclusive lock",
            inner.name
        )));
    }
    let deadline = Instant::now() + inner.lock_wait;
    let handed_over = *inner
        .lock
        .handed_over
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(at) = handed_over {
        // Leave the lock to the client that asked for it: wait until it has taken it (then
        // ask for it back as usual) or until the grace time is over.
        while at.elapsed() < HANDOVER_GRACE {
            let info = inner
                .store
                .lock_info(&inner.io, &inner.header_oid, LOCK_NAME)
                .await
                .ctx(|| format!("cannot read the lock of image {}", inner.name))?;
            if !info.lockers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut pause = Duration::from_millis(5);
    loop {
        let opts = LockOptions::new(LOCK_NAME, LockKind::Exclusive, inner.lock.cookie())
            .with_tag(LOCK_TAG)
            .with_description("rbdx exclusive lock");
        match inner
            .store
            .lock_opts(&inner.io, &inner.header_oid, &opts)
            .await
        {
            Ok(()) => break,
            Err(e) if e.kind() == StoreKind::AlreadyExists => break,
            Err(e) if e.kind() == StoreKind::Busy => {}
            Err(e) => {
                return Err(Error::store(
                    format!("cannot take the exclusive lock of image {}", inner.name),
                    e,
                ));
            }
        }
        let info = inner
            .store
            .lock_info(&inner.io, &inner.header_oid, LOCK_NAME)
            .await
            .ctx(|| format!("cannot read the lock of image {}", inner.name))?;
        let Some(holder) = info.lockers.first() else {
            continue;
        };
        if !holder.alive {
            tracing::info!(
                "breaking the lock of image {} held by gone client {}",
                inner.name,
                holder.client.id
            );
            match inner
                .store
                .lock_break(
                    &inner.io,
                    &inner.header_oid,
                    LOCK_NAME,
                    holder.client.id,
                    &holder.cookie,
                )
                .await
            {
                Ok(()) => continue,
                Err(e) if e.kind() == StoreKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::store(
                        format!("cannot break the lock of image {}", inner.name),
                        e,
                    ));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::busy(format!(
                "image {} is locked by {} ({}), which did not release it within {} s",
                inner.name,
                holder.client.id,
                holder.client.addr,
                inner.lock_wait.as_secs()
            )));
        }
        let releasing = match inner
            .store
            .notify(
                &inner.io,
                &inner.header_oid,
                Bytes::from_static(REQUEST_LOCK),
                NOTIFY_TIMEOUT,
            )
            .await
        {
            Ok(result) => result.acks.iter().any(|a| a.reply.as_ref() == b"releasing"),
            Err(_) => false,
        };
        if releasing {
            // The owner is letting go: try again soon and often.
            pause = Duration::from_millis(5);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    // Only a handle that has loaded the object map may count as owner: writers that see
    // `owned` go straight to the map.
    if let Err(e) = take_over(inner).await {
        let _ = unlock(inner).await;
        return Err(e);
    }
    inner.lock.owned.store(true, Ordering::SeqCst);
    inner.lock.set_handed_over(None);
    Ok(())
}

/// Releases the lock because another client asked for it, and remembers when.
async fn hand_over(inner: &Inner) -> Result<()> {
    inner.lock.set_handed_over(Some(Instant::now()));
    release(inner).await?;
    // The grace time counts from the actual release.
    inner.lock.set_handed_over(Some(Instant::now()));
    Ok(())
}

/// What a new lock owner does first: re-read the header and load the object map.
async fn take_over(inner: &Inner) -> Result<()> {
    inner.refresh().await?;
    // The image may have been demoted (or become a migration source) since this handle
    // last looked.
    inner.check_writable()?;
    let header = inner.header();
    *inner.map.lock().await = None;
    if header.features.contains(Features::OBJECT_MAP) && header.flags & FLAG_OBJECT_MAP_INVALID == 0
    {
        let loaded = load_object_map(&inner.store, &inner.io, &inner.id, None).await?;
        let expected = header.layout.num_objects(header.size);
        match loaded {
            Some(m) if m.len() == expected => *inner.map.lock().await = Some(m),
            _ => {
                tracing::warn!("object map of image {} is missing or damaged", inner.name);
                inner.set_flags(None, FLAG_OBJECT_MAP_INVALID, 0).await?;
            }
        }
    }
    // A journaling image is brought up to date with its journal before anything else.
    inner.open_journal().await
}

async fn unlock(inner: &Inner) -> Result<()> {
    inner.lock.owned.store(false, Ordering::SeqCst);
    inner.close_journal().await;
    *inner.map.lock().await = None;
    match inner
        .store
        .unlock(
            &inner.io,
            &inner.header_oid,
            LOCK_NAME,
            &inner.lock.cookie(),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == StoreKind::NotFound => Ok(()),
        Err(e) => Err(Error::store(
            format!("cannot release the lock of image {}", inner.name),
            e,
        )),
    }
}

/// Waits for in-flight operations, then releases the lock.
pub(crate) async fn release(inner: &Inner) -> Result<()> {
    let _gate = inner.gate.write().await;
    let _acquiring = inner.lock.acquiring.lock().await;
    if inner.lock.owned() {
        unlock(inner).await?;
    }
    Ok(())
}

/// Releases the lock if held, for a caller that already holds the gate.
pub(crate) async fn release_held(inner: &Inner) -> Result<()> {
    let _acquiring = inner.lock.acquiring.lock().await;
    if inner.lock.owned() {
        unlock(inner).await?;
    }
    Ok(())
}

/// Releases the lock and stops the watch.
pub(crate) async fn shutdown(inner: &Inner) -> Result<()> {
    if inner.lock.closed.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let released = release(inner).await;
    if let Some(task) = inner
        .lock
        .task
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        task.abort();
    }
    if inner.lock.watching.swap(false, Ordering::SeqCst) {
        let cookie = inner.lock.watch_cookie.load(Ordering::SeqCst);
        match inner
            .store
            .unwatch(&inner.io, &inner.header_oid, cookie)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == StoreKind::NotFound => {}
            Err(e) => tracing::debug!("unwatching image {}: {e}", inner.name),
        }
    }
    // What this image opened to read through to goes with it.
    if let Some(source) = inner.migration_source.lock().await.take() {
        source.close().await;
    }
    if let Some((_, parent)) = inner.parent.lock().await.take()
        && let Err(e) = Box::pin(parent.close()).await
    {
        tracing::debug!("closing the parent of image {}: {e}", inner.name);
    }
    released
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.lock.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(task) = self
            .lock
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        // Dropped without close(): let go of the lock and the watch in the background if a
        // runtime is still there; otherwise the store sees this client go away.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let io = self.io.clone();
            let oid = self.header_oid.clone();
            let owned = self.lock.owned();
            let cookie = self.lock.watch_cookie.load(Ordering::SeqCst);
            let watching = self.lock.watching.load(Ordering::SeqCst);
            handle.spawn(async move {
                if owned {
                    let _ = store
                        .unlock(&io, &oid, LOCK_NAME, &format!("auto {cookie}"))
                        .await;
                }
                if watching {
                    let _ = store.unwatch(&io, &oid, cookie).await;
                }
            });
        }
    }
}
