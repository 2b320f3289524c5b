//! Where the writer sits: shared by its thread and by callers that find it idle.
//!
//! Every change goes through the one [`Writer`] of a store handle. Requests are sent to the
//! writer thread, which takes them in order and commits them in batches. A small write made
//! while few others are in progress, whose caller finds the writer idle and nothing queued,
//! is run on the caller's own thread instead: that saves the two thread crossings (the
//! hand-off and the answer), which at one in flight took 60 µs per 4 KiB write to 23 µs. The
//! commit itself is the same code either way, so a request run here is as crash-safe as one
//! run on the thread. Many requests in progress go to the thread, which commits them together.
//!
//! # Order
//!
//! [`Desk::queued`] counts the commands sent and not yet taken. It is raised before a command
//! is sent and lowered only by the thread, under the writer's lock, when it takes the command.
//! A caller runs its request only while it holds that lock and sees the count at zero: every
//! command sent before has then been done, so requests are committed in the order they were
//! made, as before. One exception is older than this: a request whose new object's content is
//! staged first (see [`crate::staged`]) is sent once staging is done, so requests made while
//! it stages may go first. Likewise, a group the writer gives back (see
//! [`Writer::operate_group`]) is then applied request by request, after commands sent
//! meanwhile; its one user, the journal's single appender, makes one group at a time.
//!
//! # What a caller's thread may meet
//!
//! A request run here does everything the thread would: a SQLite busy wait while another
//! process commits, the WAL checkpoint that every 64 MiB of WAL brings, the copy of an object
//! shared with a snapshot. Its caller would have waited for those anyway; the runtime thread
//! it holds meanwhile is what this costs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use rbdx_objstore::{WriteOp, WriteStep};

use crate::writer::{Command, IDLE_TICK, MAX_BATCH, OperateRequest, Writer};

/// Largest request (bytes of data, omap and xattr values) run on its caller's thread.
const INLINE_MAX: usize = 64 << 10;
/// Longest a caller waits for another caller's request before giving its own to the thread.
const WAIT_FOR_CALLER: Duration = Duration::from_micros(500);
/// Most write requests in progress on a handle for one to run on its caller's thread. With
/// more, the thread is the better place: it commits what arrives together in one transaction,
/// while a request run by its caller commits alone. Three covers a journaled write at one in
/// flight: its journal entry, the previous write's application to the image, and now and
/// then the journal's commit position being saved.
const INLINE_ACTIVE: usize = 3;
/// How long after a crowded moment requests keep going to the thread. A pipeline of requests
/// (an NBD client with 64 queued) now and then has only one or two in progress; one run by
/// its caller then holds a runtime thread that would have taken in the next requests, and 4
/// KiB writes over NBD fell from 31,000-33,000 to 27,000-28,000 a second without this.
const CROWDED_FOR: Duration = Duration::from_millis(100);

/// What became of a request offered to [`Desk::try_inline`].
pub(crate) enum Inline {
    /// Run and answered. `collect` is true if garbage waits to be collected: a job for the
    /// thread, since it syncs the WAL.
    Done { collect: bool },
    /// Not run: to be sent to the thread.
    Declined(OperateRequest),
}

/// The writer of a store handle and the count of commands waiting for its thread.
#[derive(Debug)]
pub(crate) struct Desk {
    writer: Mutex<Writer>,
    /// The way to the thread; `None` once the handle is closing.
    commands: Mutex<Option<Sender<Command>>>,
    queued: AtomicUsize,
    /// Write requests of this handle between their start and their answer.
    active: AtomicUsize,
    /// A caller holds the writer for a request of its own.
    inline: AtomicBool,
    /// Until when (nanoseconds since `epoch`) requests go to the thread: some time after the
    /// last moment more than [`INLINE_ACTIVE`] were in progress.
    crowded_until: AtomicU64,
    epoch: Instant,
}

/// One write request in progress on a [`Desk`] (see [`Desk::start`]).
#[derive(Debug)]
pub(crate) struct Active<'a>(&'a Desk);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Desk {
    /// Puts `writer` on a new desk; the receiver is the thread's (see [`spawn`]).
    pub(crate) fn new(writer: Writer) -> (Arc<Desk>, Receiver<Command>) {
        let (commands, queue) = std::sync::mpsc::channel();
        let desk = Arc::new(Desk {
            writer: Mutex::new(writer),
            commands: Mutex::new(Some(commands)),
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            inline: AtomicBool::new(false),
            crowded_until: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        (desk, queue)
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `command` to the writer thread; false if the handle is closing or the thread is
    /// gone.
    pub(crate) fn send(&self, command: Command) -> bool {
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        let Some(commands) = commands.as_ref() else {
            return false;
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        let sent = commands.send(command).is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Sends `last` (if any) and then the order to stop, and closes the way to the thread.
    pub(crate) fn close(&self, last: Option<Command>) {
        if let Some(command) = last {
            self.send(command);
        }
        self.send(Command::Shutdown);
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Counts a write request as in progress until the returned guard is dropped.
    pub(crate) fn start(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        Active(self)
    }

    /// Runs `req` on this thread if it is small, at most [`INLINE_ACTIVE`] write requests are
    /// in progress and nothing is queued for the thread, and answers it through its reply
    /// channel. If another caller holds the writer for a request like this, waits for it up
    /// to [`WAIT_FOR_CALLER`]; if the thread has the writer, or takes it meanwhile, gives the
    /// request back, to be sent.
    pub(crate) fn try_inline(&self, active: &Active<'_>, req: OperateRequest) -> Inline {
        let small = req.staged.is_none() && inline_bytes(&req.op) <= INLINE_MAX;
        match self.run_inline(active, small, req, |w, req| w.operate_inline(req)) {
            Ok(collect) => Inline::Done { collect },
            Err(req) => Inline::Declined(req),
        }
    }

    /// Like [`Desk::try_inline`], for a group to commit together (see
    /// [`Writer::operate_group`]): `Ok` with whether garbage waits to be collected if it was
    /// committed or failed, `Err` with the group if it is to be sent to the thread.
    pub(crate) fn try_inline_group(
        &self,
        active: &Active<'_>,
        group: Vec<OperateRequest>,
    ) -> Result<bool, Vec<OperateRequest>> {
        let bytes: usize = group.iter().map(|r| inline_bytes(&r.op)).sum();
        let small = bytes <= INLINE_MAX && group.iter().all(|r| r.staged.is_none());
        self.run_inline(active, small, group, |w, group| {
            w.operate_group(group, false).err()
        })
    }

    /// Runs `work` with `run` on this thread under the rules of [`Desk::try_inline`]: `Ok`
    /// with whether garbage waits to be collected, or `Err` with the work given back.
    fn run_inline<T>(
        &self,
        _active: &Active<'_>,
        small: bool,
        work: T,
        run: impl FnOnce(&mut Writer, T) -> Option<T>,
    ) -> Result<bool, T> {
        let now = self.epoch.elapsed();
        if self.active.load(Ordering::SeqCst) > INLINE_ACTIVE {
            let until = (now + CROWDED_FOR).as_nanos() as u64;
            self.crowded_until.fetch_max(until, Ordering::Relaxed);
            return Err(work);
        }
        if !small
            || (now.as_nanos() as u64) < self.crowded_until.load(Ordering::Relaxed)
            || self.queued.load(Ordering::SeqCst) != 0
        {
            return Err(work);
        }
        let Some(mut w) = self.take_for_caller() else {
            return Err(work);
        };
        if self.queued.load(Ordering::SeqCst) != 0 {
            return Err(work);
        }
        let declined = {
            let _holding = Holding::new(&self.inline);
            run(&mut w, work)
        };
        match declined {
            Some(work) => Err(work),
            None => Ok(crate::reap::collection_due(&w)),
        }
    }

    /// Takes the writer for a caller: at once if it is free, or after another caller's
    /// request. Never waits for the thread's work (a batch, a flush: milliseconds, too long to
    /// hold a runtime thread for), and never takes a writer that a panic left poisoned.
    fn take_for_caller(&self) -> Option<MutexGuard<'_, Writer>> {
        let since = Instant::now();
        loop {
            match self.writer.try_lock() {
                Ok(w) => return Some(w),
                Err(TryLockError::WouldBlock)
                    if self.inline.load(Ordering::SeqCst) && since.elapsed() < WAIT_FOR_CALLER =>
                {
                    std::thread::yield_now();
                }
                Err(_) => return None,
            }
        }
    }
}

/// Marks the writer as held by a caller until dropped (also if the request panics).
struct Holding<'a>(&'a AtomicBool);

impl<'a> Holding<'a> {
    fn new(flag: &'a AtomicBool) -> Holding<'a> {
        flag.store(true, Ordering::SeqCst);
        Holding(flag)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Bytes a request carries: its data, and its omap and xattr values.
fn inline_bytes(op: &WriteOp) -> usize {
    op.steps()
        .iter()
        .map(|s| match s {
            WriteStep::Write { data, .. } | WriteStep::WriteFull(data) => data.len(),
            WriteStep::OmapSet(entries) => entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
            WriteStep::XattrSet { name, value } => name.len() + value.len(),
            _ => 0,
        })
        .sum()
}

/// Starts the writer thread, which takes its work from `commands`.
pub(crate) fn spawn(
    desk: Arc<Desk>,
    commands: Receiver<Command>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("rbdx-dir-writer-{}", desk.lock().shared.client);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&desk, &commands))
}

/// The writer thread: runs commands until it is told to shut down or every sender is gone.
fn run(desk: &Desk, commands: &Receiver<Command>) {
    let mut carried: Option<Command> = None;
    loop {
        let command = match carried.take() {
            Some(command) => command,
            None => match commands.recv_timeout(IDLE_TICK) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    let mut w = desk.lock();
                    w.idle();
                    w.settle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut w = desk.lock();
        desk.queued.fetch_sub(1, Ordering::SeqCst);
        match command {
            Command::Run(job) => job(&mut w),
            Command::Group(group, taken) => {
                let _ = taken.send(w.operate_group(group, true).is_ok());
                crate::reap::collect_if_due_logged(&mut w);
            }
            Command::Shutdown => break,
            Command::Operate(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match commands.try_recv() {
                        Ok(Command::Operate(next)) => {
                            desk.queued.fetch_sub(1, Ordering::SeqCst);
                            batch.push(next);
                        }
                        // Taken (and counted) when it is run, after this batch.
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                w.operate_batch(batch);
                crate::reap::collect_if_due_logged(&mut w);
            }
        }
        w.settle();
    }
    desk.lock().idle();
}
