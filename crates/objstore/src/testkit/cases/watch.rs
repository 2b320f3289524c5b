//! Watch and notify between sessions.

use std::time::Duration;

use bytes::Bytes;

use crate::testkit::{Fixture, Harness, eventually, fails, ok};
use crate::{ErrorKind, ObjectStoreExt, WatchEvent};

/// A notify reaches every watcher; the notifier gets each answer with the watcher's identity
/// and learns which watchers did not answer in time. Unwatching stops delivery.
pub async fn watch_notify_ack_and_timeout(h: &dyn Harness) {
    let fx = Fixture::new(h, "watch").await;
    let io = fx.io.clone();
    ok(fx
        .store
        .write_full(&io, "hdr", Bytes::from_static(b"h"))
        .await);
    let a = h.connect().await;
    let b = h.connect().await;
    let mut wb = ok(b.watch(&io, "hdr").await);
    let silent = ok(a.watch(&io, "hdr").await);
    let watchers = ok(fx.store.list_watchers(&io, "hdr").await);
    assert_eq!(watchers.len(), 2);
    assert!(
        watchers
            .iter()
            .any(|w| w.client.id == b.client().id && w.cookie == wb.cookie())
    );
    assert!(
        watchers
            .iter()
            .any(|w| w.client.id == a.client().id && w.cookie == silent.cookie())
    );
    assert!(watchers.iter().all(|w| !w.client.addr.is_empty()));

    let notifier = fx.store.client().id;
    let answer = tokio::spawn(async move {
        loop {
            match wb.next().await {
                Some(WatchEvent::Notify(note)) => {
                    assert_eq!(note.payload, "ping");
                    assert_eq!(note.notifier.id, notifier);
                    note.ack(Bytes::from_static(b"pong"));
                    return wb;
                }
                Some(_) => continue,
                None => panic!("watch closed before the notify"),
            }
        }
    });
    let result = ok(fx
        .store
        .notify(
            &io,
            "hdr",
            Bytes::from_static(b"ping"),
            Duration::from_millis(1500),
        )
        .await);
    let wb = answer.await.unwrap_or_else(|e| panic!("watcher task: {e}"));
    assert_eq!(result.acks.len(), 1);
    assert_eq!(result.acks[0].watcher.client.id, b.client().id);
    assert_eq!(result.acks[0].reply, "pong");
    assert_eq!(result.timeouts.len(), 1);
    assert_eq!(result.timeouts[0].cookie, silent.cookie());

    ok(b.unwatch(&io, "hdr", wb.cookie()).await);
    fails(
        b.unwatch(&io, "hdr", wb.cookie()).await,
        ErrorKind::NotFound,
    );
    ok(a.unwatch(&io, "hdr", silent.cookie()).await);
    assert!(ok(fx.store.list_watchers(&io, "hdr").await).is_empty());
    let quiet = ok(fx
        .store
        .notify(&io, "hdr", Bytes::new(), Duration::from_millis(200))
        .await);
    assert!(quiet.acks.is_empty() && quiet.timeouts.is_empty());

    fails(a.watch(&io, "absent").await, ErrorKind::NotFound);
    fails(
        a.notify(&io, "absent", Bytes::new(), Duration::from_millis(10))
            .await,
        ErrorKind::NotFound,
    );
    fx.cleanup().await;
}

/// A session that is gone stops being listed as a watcher, and notifies never count it as an
/// answer.
pub async fn watch_of_gone_session_is_dropped(h: &dyn Harness) {
    let fx = Fixture::new(h, "watchgone").await;
    let io = fx.io.clone();
    let grace = h.capabilities().dead_session_grace;
    ok(fx
        .store
        .write_full(&io, "hdr", Bytes::from_static(b"h"))
        .await);
    let gone = h.connect().await;
    let gone_id = gone.client().id;
    let watch = ok(gone.watch(&io, "hdr").await);
    assert_eq!(ok(fx.store.list_watchers(&io, "hdr").await).len(), 1);
    drop(watch);
    drop(gone);
    let store = &fx.store;
    eventually(
        grace + Duration::from_secs(5),
        "gone watcher still listed",
        async || {
            ok(store.list_watchers(&io, "hdr").await)
                .iter()
                .all(|w| w.client.id != gone_id)
        },
    )
    .await;
    let result = ok(fx
        .store
        .notify(&io, "hdr", Bytes::new(), Duration::from_millis(300))
        .await);
    assert!(result.acks.iter().all(|a| a.watcher.client.id != gone_id));
    fx.cleanup().await;
}
