//! Following a journal: its entries in order from a position, read a piece at a time in
//! bounded memory, and, once caught up, the new ones as they are appended, until stopped.
//! This is how a mirror reads the journal of the image it replays.
//!
//! # Reading in order
//!
//! Entry `t` of object set `s` is in data object `s * splay_width + t % splay_width`, and the
//! ids of a set all come before those of the next one. The follower keeps one read cursor per
//! object of its current set and reads the object holding the entry it needs next, a chunk at
//! a time; the chunk is the budget spread over the splay width (at least one whole entry), so
//! the entries held at once (read, not yet returned) stay within the budget, plus at most one
//! entry whatever the backlog.
//!
//! # Gaps and the end of a set
//!
//! An id can be missing: an append that never completed (its writer died). The writer writes
//! one batch at a time, so an id is missing for good once a later one is visible and the
//! missing one has not appeared within the grace period; the follower then goes on without it.
//! Following a journal from its start, the first id wanted is 0 when the journal was never
//! trimmed (set 0 is its oldest), so entry 0 is waited for like any other missing id; taking
//! whichever entry shows first would drop an entry 0 whose append landed after entry 1's.
//! A set is finished when a newer set is active and every object of the set is read to its end
//! (a torn tail, left by a writer that died, ends an object too); the follower then moves to
//! the next set.
//!
//! # Waiting
//!
//! Caught up, the follower waits for a notify on the journal header (the writer sends one, at
//! most every few milliseconds, after appending) or for the poll interval, whichever comes
//! first, and looks again. A journal trimmed past the follower's position is an error: the
//! follower lost entries and its image must be synchronised anew.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_image::{Error, ErrorKind, Result};
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, Watch, WatchEvent};
use tokio::sync::watch;

use crate::entry::{self, Entry, OVERHEAD};
use crate::header::Position;
use crate::journal::Journal;

/// What a chunk read from a journal object held.
enum Absorbed {
    /// Entries (true if any was new).
    Entries(bool),
    /// Nothing whole: its first entry is this long; read that much.
    Larger(u64),
}

/// How a [`Follower`] reads.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Most bytes of entries held at once (read, not yet returned), besides one entry.
    pub budget: usize,
    /// How long to wait, caught up, before looking again without a notify.
    pub poll: Duration,
    /// How long a missing entry id is waited for before the follower goes on without it.
    pub gap_grace: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            budget: 64 << 20,
            poll: Duration::from_millis(200),
            gap_grace: Duration::from_secs(2),
        }
    }
}

/// Stops a [`Follower`] from another task.
#[derive(Debug, Clone)]
pub struct FollowStop(Arc<watch::Sender<bool>>);

impl FollowStop {
    /// Makes the follower's next (or current) wait return `None`.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Where a follower reads an object of its current set.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// Bytes of whole entries read so far.
    offset: u64,
    /// Nothing more is there now (read to its end, or to a torn tail).
    at_end: bool,
}

/// A reader of a journal's entries, in order, from a position on.
#[derive(Debug)]
pub struct Follower {
    journal: Journal,
    options: FollowOptions,
    set: u64,
    cursors: BTreeMap<u64, Cursor>,
    /// Entries read and not yet returned, by id.
    pending: BTreeMap<u64, (Position, Entry)>,
    pending_bytes: usize,
    peak_bytes: usize,
    /// The id of the last entry returned.
    last: Option<u64>,
    /// Since when the next id has been missing while a later one was there.
    gap_since: Option<Instant>,
    watch: Option<Watch>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
}

impl Follower {
    /// Follows the journal of image `image_id` (header in `io`) from the entry after
    /// `after` (from the oldest entry kept if `None`).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        io: IoCtx,
        image_id: &str,
        after: Option<Position>,
        options: FollowOptions,
    ) -> Result<Follower> {
        let journal = Journal::open(store.clone(), io.clone(), image_id).await?;
        let header = journal.header().await?;
        let splay = journal.meta().splay_width;
        let set = after.map_or(header.sets.minimum_set, |p| {
            (p.object_number / splay).max(header.sets.minimum_set)
        });
        let watch = store.watch(&io, journal.header_oid()).await.ok();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut follower = Follower {
            journal,
            options,
            set,
            cursors: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            peak_bytes: 0,
            last: after.map(|p| p.entry_tid),
            gap_since: None,
            watch,
            stop_tx: Arc::new(stop_tx),
            stop_rx,
        };
        follower.reset_cursors();
        Ok(follower)
    }

    /// Returns a handle that stops this follower.
    pub fn stopper(&self) -> FollowStop {
        FollowStop(self.stop_tx.clone())
    }

    /// Returns the position of the last entry returned, if any.
    pub fn last_entry_tid(&self) -> Option<u64> {
        self.last
    }

    /// Returns the most bytes of entries held at once so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    fn reset_cursors(&mut self) {
        let splay = self.journal.meta().splay_width;
        self.cursors = (self.set * splay..(self.set + 1) * splay)
            .map(|objno| (objno, Cursor::default()))
            .collect();
    }

    /// Bytes read from one object at a time.
    fn chunk(&self) -> u64 {
        let splay = self.journal.meta().splay_width.max(1) as usize;
        (self.options.budget / splay).clamp(64 << 10, 8 << 20) as u64
    }

    /// Returns the next entries in order (at least one, at most about half the budget),
    /// waiting while there are none; `None` once stopped.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<(Position, Entry)>>> {
        loop {
            if *self.stop_rx.borrow() {
                return Ok(None);
            }
            let batch = self.take_ready().await?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
            if self.finish_set().await? {
                continue;
            }
            if self.skip_gap() {
                continue;
            }
            self.wait().await;
        }
    }

    /// Returns the entries that follow the last one returned, reading what they need.
    async fn take_ready(&mut self) -> Result<Vec<(Position, Entry)>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < self.options.budget / 2 {
            let want = match self.last {
                Some(t) => t + 1,
                // A journal never trimmed begins at id 0 (see "Gaps" above).
                None if self.set == 0 => 0,
                None => match self.first_available().await? {
                    Some(t) => t,
                    None => break,
                },
            };
            if let Some((pos, e)) = self.pending.remove(&want) {
                self.pending_bytes -= e.data.len() + OVERHEAD;
                bytes += e.data.len() + OVERHEAD;
                self.last = Some(want);
                self.gap_since = None;
                out.push((pos, e));
                continue;
            }
            let splay = self.journal.meta().splay_width;
            let objno = self.set * splay + want % splay;
            if !self.read_round(objno).await? {
                break;
            }
        }
        Ok(out)
    }

    /// Reads a chunk of every object of the set (a trimmed journal's first id is unknown),
    /// within the budget; returns the lowest id pending.
    async fn first_available(&mut self) -> Result<Option<u64>> {
        let objects: Vec<u64> = self.cursors.keys().copied().collect();
        for objno in objects {
            let full = self.pending_bytes + self.chunk() as usize > self.options.budget;
            if full && !self.pending.is_empty() {
                break;
            }
            self.read_more(objno).await?;
        }
        Ok(self.pending.keys().next().copied())
    }

    /// Reads the next chunk of object `objno` of the current set into `pending`; returns
    /// true if it brought new entries.
    async fn read_more(&mut self, objno: u64) -> Result<bool> {
        let Some(cursor) = self.cursors.get(&objno).copied() else {
            return Ok(false);
        };
        let mut length = self.chunk();
        loop {
            let data = self.read(objno, cursor.offset, length).await?;
            match self.absorb(objno, length, &data) {
                Absorbed::Entries(added) => return Ok(added),
                Absorbed::Larger(whole) => length = whole,
            }
        }
    }

    /// Reads the next chunk of `objno` and of every other object of the set not read to its
    /// end, all at once (entries go round-robin over the objects, so the next ones are in
    /// all of them); returns true if it brought new entries.
    async fn read_round(&mut self, objno: u64) -> Result<bool> {
        let length = self.chunk();
        let mut targets: Vec<(u64, u64)> = self
            .cursors
            .iter()
            .filter(|(o, c)| **o == objno || !c.at_end)
            .map(|(o, c)| (*o, c.offset))
            .collect();
        // Stay within the budget: one chunk per object on top of what is pending.
        let room = self.options.budget.saturating_sub(self.pending_bytes) as u64 / length.max(1);
        targets.sort_by_key(|(o, _)| *o != objno);
        targets.truncate((room as usize).max(1));
        let reads = targets
            .iter()
            .map(|&(o, offset)| self.read(o, offset, length));
        let results = futures::future::join_all(reads).await;
        let mut added = false;
        let mut larger = Vec::new();
        for (&(o, _), data) in targets.iter().zip(results) {
            match self.absorb(o, length, &data?) {
                Absorbed::Entries(a) => added |= a,
                Absorbed::Larger(_) => larger.push(o),
            }
        }
        for o in larger {
            added |= self.read_more(o).await?;
        }
        Ok(added)
    }

    /// Takes the entries of a chunk of `length` bytes read from `objno` at its cursor.
    fn absorb(&mut self, objno: u64, length: u64, data: &Bytes) -> Absorbed {
        let parsed = entry::parse(data);
        if parsed.entries.is_empty() {
            // One entry larger than the chunk: read it whole.
            if data.len() as u64 == length && data.len() >= 28 {
                let n = u32::from_le_bytes([data[24], data[25], data[26], data[27]]);
                let whole = (OVERHEAD + n as usize) as u64;
                if whole > length && n as usize <= entry::MAX_DATA {
                    return Absorbed::Larger(whole);
                }
            }
            if let Some(c) = self.cursors.get_mut(&objno) {
                c.at_end = true;
            }
            return Absorbed::Entries(false);
        }
        let mut added = false;
        for e in parsed.entries {
            if self.last.is_some_and(|l| e.entry_tid <= l) {
                continue;
            }
            let pos = Position {
                object_number: objno,
                tag_tid: e.tag_tid,
                entry_tid: e.entry_tid,
            };
            self.pending_bytes += e.data.len() + OVERHEAD;
            self.pending.insert(e.entry_tid, (pos, e));
            added = true;
        }
        self.peak_bytes = self.peak_bytes.max(self.pending_bytes);
        if let Some(c) = self.cursors.get_mut(&objno) {
            c.offset += parsed.valid_len as u64;
            c.at_end = (data.len() as u64) < length && !parsed.torn;
        }
        Absorbed::Entries(added)
    }

    async fn read(&self, objno: u64, offset: u64, length: u64) -> Result<Bytes> {
        let oid = format!("{}{objno}", self.journal.prefix());
        let op = ReadOp::new().read(offset, Some(length));
        match self
            .journal
            .store()
            .read_op(&self.journal.data_io(), &oid, &op, None)
            .await
        {
            Ok(mut res) => Ok(res.take_data(0).unwrap_or_default()),
            Err(e) if e.kind() == StoreKind::NotFound => Ok(Bytes::new()),
            Err(e) => Err(Error::store(format!("cannot read journal object {oid}"), e)),
        }
    }

    /// Moves to the next set once this one is finished: a newer set is active, every object
    /// of this one is read to its end and nothing of it is pending. Returns true if it moved.
    async fn finish_set(&mut self) -> Result<bool> {
        let header = self.journal.header().await?;
        if header.sets.minimum_set > self.set {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "journal {} was trimmed past object set {} while it was followed; the \
                     follower lost entries",
                    self.journal.header_oid(),
                    self.set
                ),
            ));
        }
        if header.sets.active_set <= self.set {
            return Ok(false);
        }
        let objects: Vec<u64> = self.cursors.keys().copied().collect();
        for objno in objects {
            while !self.cursors.get(&objno).is_none_or(|c| c.at_end) {
                self.read_more(objno).await?;
            }
        }
        if !self.pending.is_empty() {
            return Ok(false);
        }
        self.set += 1;
        self.reset_cursors();
        Ok(true)
    }

    /// Goes on past a missing id once a later entry has waited for it longer than the grace
    /// period. Returns true if it did.
    fn skip_gap(&mut self) -> bool {
        let Some(&lowest) = self.pending.keys().next() else {
            self.gap_since = None;
            return false;
        };
        let since = *self.gap_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.options.gap_grace {
            return false;
        }
        tracing::warn!(
            "journal {}: entries {}..{lowest} never completed; going on without them",
            self.journal.header_oid(),
            self.last.map_or(0, |l| l + 1)
        );
        self.last = Some(lowest - 1);
        self.gap_since = None;
        true
    }

    /// Waits for a notify on the header, the poll interval or a stop.
    async fn wait(&mut self) {
        for c in self.cursors.values_mut() {
            c.at_end = false;
        }
        let poll = if self.gap_since.is_some() {
            self.options.poll.min(self.options.gap_grace / 4)
        } else {
            self.options.poll
        };
        let mut stop = self.stop_rx.clone();
        let notified = async {
            match self.watch.as_mut() {
                Some(w) => match w.next().await {
                    Some(WatchEvent::Notify(n)) => {
                        n.ack(Bytes::new());
                        true
                    }
                    // The watch is gone: polling alone from now on.
                    _ => false,
                },
                None => std::future::pending::<bool>().await,
            }
        };
        let watching = tokio::select! {
            still = notified => still,
            () = tokio::time::sleep(poll) => true,
            _ = stop.changed() => true,
        };
        if !watching {
            self.watch = None;
        }
    }

    /// Stops watching the journal header.
    pub async fn close(self) {
        if let Some(w) = self.watch {
            let _ = self
                .journal
                .store()
                .unwatch(self.journal.io_ctx(), self.journal.header_oid(), w.cookie())
                .await;
        }
    }
}
