//! A gateway session: one client's store session, which outlives a dropped connection for a
//! grace period so that the client can resume it with its watches, locks and the answers to
//! the requests it may resend.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use rbdx_objstore::{IoCtx, Notification, ObjectStore, PoolId};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::codec::Rope;
use crate::conn::Outgoing;
use crate::keys::KeyRecord;

/// How many answers to state-changing requests a session remembers for resent requests.
const COMPLETED_KEPT: usize = 4096;

/// The connection a session is attached to.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Frames to send.
    pub tx: mpsc::Sender<Outgoing>,
    /// Credit for queued response bytes (the flow-control window toward the client).
    pub window: Arc<Semaphore>,
    /// Whether frames may be compressed.
    pub compress: bool,
    /// Cuts the connection (sends `true`).
    pub cut: watch::Sender<bool>,
    /// Distinguishes connections of one session.
    pub serial: u64,
}

/// Where a request with a given id stands.
#[derive(Debug)]
pub enum Seen {
    /// Never seen: run it.
    New(watch::Sender<Option<Rope>>),
    /// Answered already: this is the answer.
    Done(Rope),
    /// Running: the answer will appear here.
    Running(watch::Receiver<Option<Rope>>),
}

#[derive(Debug, Default)]
struct Requests {
    completed: HashMap<u64, Rope>,
    order: VecDeque<u64>,
    running: HashMap<u64, watch::Receiver<Option<Rope>>>,
}

/// A watch the session holds in the store, and the task forwarding its events.
#[derive(Debug)]
pub struct WatchEntry {
    /// Where the watched object is.
    pub io: IoCtx,
    /// The watched object.
    pub oid: String,
    /// The forwarding task.
    pub task: JoinHandle<()>,
}

/// One client session.
#[derive(Debug)]
pub struct Session {
    /// The session id.
    pub id: u64,
    /// The token that resumes it.
    pub token: [u8; 16],
    /// The key it authenticated with.
    pub key: KeyRecord,
    /// Its session in the served store.
    pub store: Arc<dyn ObjectStore>,
    attached: Mutex<Option<Attachment>>,
    detached_since: Mutex<Option<Instant>>,
    requests: Mutex<Requests>,
    /// Its watches by cookie.
    pub watches: Mutex<HashMap<u64, WatchEntry>>,
    acks: Mutex<HashMap<u64, (Instant, Notification)>>,
    next_ack: Mutex<u64>,
    pools: Mutex<HashMap<PoolId, String>>,
    lost: Mutex<Vec<(u64, rbdx_objstore::Error)>>,
    closed: std::sync::atomic::AtomicBool,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Returns a new, detached session.
    pub fn new(id: u64, token: [u8; 16], key: KeyRecord, store: Arc<dyn ObjectStore>) -> Self {
        Session {
            id,
            token,
            key,
            store,
            attached: Mutex::new(None),
            detached_since: Mutex::new(Some(Instant::now())),
            requests: Mutex::new(Requests::default()),
            watches: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: Mutex::new(1),
            pools: Mutex::new(HashMap::new()),
            lost: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Attaches a connection, cutting the one attached before, if any.
    pub fn attach(&self, att: Attachment) {
        if let Some(old) = guard(&self.attached).replace(att) {
            let _ = old.cut.send(true);
        }
        *guard(&self.detached_since) = None;
    }

    /// Detaches connection `serial` if it is the attached one.
    pub fn detach(&self, serial: u64) {
        let mut attached = guard(&self.attached);
        if attached.as_ref().is_some_and(|a| a.serial == serial) {
            *attached = None;
            *guard(&self.detached_since) = Some(Instant::now());
            // Notifications nobody can answer now count as timed out for their notifiers.
            guard(&self.acks).clear();
        }
    }

    /// Returns the attached connection.
    pub fn attachment(&self) -> Option<Attachment> {
        guard(&self.attached).clone()
    }

    /// Returns how long the session has been without a connection.
    pub fn detached_for(&self) -> Option<std::time::Duration> {
        guard(&self.detached_since).map(|t| t.elapsed())
    }

    /// Cuts the attached connection, if any.
    pub fn cut(&self) {
        if let Some(att) = guard(&self.attached).take() {
            let _ = att.cut.send(true);
        }
    }

    /// Registers request `id`, or says what became of it.
    pub fn begin(&self, id: u64) -> Seen {
        let mut reqs = guard(&self.requests);
        if let Some(done) = reqs.completed.get(&id) {
            return Seen::Done(done.clone());
        }
        if let Some(rx) = reqs.running.get(&id) {
            return Seen::Running(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        reqs.running.insert(id, rx);
        Seen::New(tx)
    }

    /// Records the answer to request `id`; answers to state-changing requests are kept for a
    /// resend.
    pub fn finish(&self, id: u64, answer: &Rope, keep: bool, tx: watch::Sender<Option<Rope>>) {
        let mut reqs = guard(&self.requests);
        reqs.running.remove(&id);
        if keep {
            reqs.completed.insert(id, answer.clone());
            reqs.order.push_back(id);
            while reqs.order.len() > COMPLETED_KEPT {
                if let Some(old) = reqs.order.pop_front() {
                    reqs.completed.remove(&old);
                }
            }
        }
        drop(reqs);
        let _ = tx.send(Some(answer.clone()));
    }

    /// Keeps a notification until the client answers it; returns the id it answers with.
    pub fn hold_ack(&self, n: Notification) -> u64 {
        let mut next = guard(&self.next_ack);
        let id = *next;
        *next += 1;
        let mut acks = guard(&self.acks);
        acks.retain(|_, (t, _)| t.elapsed().as_secs() < 300);
        acks.insert(id, (Instant::now(), n));
        id
    }

    /// Answers a held notification.
    pub fn ack(&self, id: u64, reply: Bytes) {
        if let Some((_, n)) = guard(&self.acks).remove(&id) {
            n.ack(reply);
        }
    }

    /// Keeps the loss of watch `cookie` for the next connection to learn of.
    pub fn keep_lost(&self, cookie: u64, e: rbdx_objstore::Error) {
        guard(&self.lost).push((cookie, e));
    }

    /// Takes the watch losses no connection has learnt of yet.
    pub fn take_lost(&self) -> Vec<(u64, rbdx_objstore::Error)> {
        std::mem::take(&mut *guard(&self.lost))
    }

    /// Returns the name of pool `id`, looking it up once.
    pub async fn pool_name(&self, id: PoolId) -> Option<String> {
        if let Some(name) = guard(&self.pools).get(&id) {
            return Some(name.clone());
        }
        let info = self.store.pool_by_id(id).await.ok()?;
        guard(&self.pools).insert(id, info.name.clone());
        Some(info.name)
    }

    /// Forgets the cached name of pool `name` (it was removed).
    pub fn forget_pool(&self, name: &str) {
        guard(&self.pools).retain(|_, n| n != name);
    }

    /// Returns true once the session has ended; it cannot be resumed or attached then.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks the session ended (before its watches are stopped), so that no connection
    /// attaches to it any more.
    pub fn mark_closed(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ends the session: stops its watches in the store and cuts its connection.
    pub async fn close(&self) {
        self.mark_closed();
        self.cut();
        let watches: Vec<(u64, WatchEntry)> = guard(&self.watches).drain().collect();
        for (cookie, w) in watches {
            w.task.abort();
            let _ = self.store.unwatch(&w.io, &w.oid, cookie).await;
        }
        guard(&self.acks).clear();
    }
}
