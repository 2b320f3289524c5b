//! Watch and notify: a client watches an object; a notify reaches every watcher, which
//! acknowledges it with a reply, and the notifier learns who answered and who timed out.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::types::ClientInfo;

/// A watcher of an object, as listed by [`crate::ObjectStore::list_watchers`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatcherInfo {
    /// The watching client.
    pub client: ClientInfo,
    /// The watch cookie, unique per client.
    pub cookie: u64,
}

/// A notification delivered to a watch. Call [`Notification::ack`] to answer it; a notification
/// dropped without an answer counts as timed out for the notifier.
#[derive(Debug)]
pub struct Notification {
    /// The id of this notify, unique in the store.
    pub notify_id: u64,
    /// Who sent it.
    pub notifier: ClientInfo,
    /// The payload.
    pub payload: Bytes,
    reply: Option<oneshot::Sender<Bytes>>,
}

impl Notification {
    /// Creates a notification whose answer is sent on `reply`; for backends.
    pub fn new(
        notify_id: u64,
        notifier: ClientInfo,
        payload: Bytes,
        reply: oneshot::Sender<Bytes>,
    ) -> Self {
        Notification {
            notify_id,
            notifier,
            payload,
            reply: Some(reply),
        }
    }

    /// Acknowledges the notification with `reply`.
    pub fn ack(mut self, reply: impl Into<Bytes>) {
        if let Some(sender) = self.reply.take() {
            // The notifier may have given up already; then the answer is simply late.
            let _ = sender.send(reply.into());
        }
    }
}

/// Something that happened to a watch.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A notify arrived.
    Notify(Notification),
    /// The watch was lost (object removed, session expired); watch again to resume.
    Disconnected(crate::Error),
}

/// An established watch: its cookie and the stream of its events.
#[derive(Debug)]
pub struct Watch {
    cookie: u64,
    events: mpsc::UnboundedReceiver<WatchEvent>,
}

impl Watch {
    /// Creates a watch handle fed by `events`; for backends.
    pub fn new(cookie: u64, events: mpsc::UnboundedReceiver<WatchEvent>) -> Self {
        Watch { cookie, events }
    }

    /// Returns the cookie, which [`crate::ObjectStore::unwatch`] takes.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Waits for the next event; `None` once the watch is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// Returns the next event if one is waiting.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.events.try_recv().ok()
    }
}

/// One watcher's answer to a notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAck {
    /// Who answered.
    pub watcher: WatcherInfo,
    /// The reply it gave.
    pub reply: Bytes,
}

/// The outcome of a notify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyResult {
    /// Watchers that answered in time.
    pub acks: Vec<NotifyAck>,
    /// Watchers that did not answer in time.
    pub timeouts: Vec<WatcherInfo>,
}
