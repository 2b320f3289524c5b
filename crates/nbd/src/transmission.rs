//! The transmission phase: requests in, replies out, many in flight.
//!
//! One task per connection reads requests (and write payloads) in order and writes the
//! replies, whole and several per system call when several are ready, so chunks of different
//! replies never interleave. Each request first runs on that task: one that completes without
//! waiting (a small read or a block-status answer from the page cache) is answered at once,
//! with no hand-off between tasks or threads; one that has to wait (a write to the store's
//! writer, a read from a remote store) continues as its own task and hands its reply back, so
//! replies may leave out of order, as the protocol allows.
//!
//! Memory is bounded: at most [`MAX_IN_FLIGHT`] requests and [`MAX_IN_FLIGHT_BYTES`] of
//! payload are between being read and being answered; past that, no request is read (nor
//! its payload) until replies have gone out.
//!
//! A reply is sent only after its operation has completed, so a flush, which makes every
//! completed write durable, covers every write the client has seen acknowledged, on this
//! connection and on every other connection to the same export.
//!
//! On a stop request (server shutdown) or `NBD_CMD_DISC`, the connection stops taking
//! requests, the requests in flight finish and are answered, and the connection closes.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use rbdx_image::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::handshake::Session;
use crate::proto::{self, MAX_REQUEST, Request, chunk, cmd, cmdflag, errno, state};

/// Requests of one connection in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Payload bytes of one connection in flight at once.
const MAX_IN_FLIGHT_BYTES: u64 = 256 << 20;
/// Buffered bytes of the request stream (several small requests per system call; larger
/// payloads bypass the buffer).
const READ_BUFFER: usize = 256 << 10;
/// Zeros written by `NBD_CMD_WRITE_ZEROES` with `NO_HOLE`, one piece at a time.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// What a request produced, before it is encoded.
enum Outcome {
    Done,
    Data(Bytes),
    Status(Vec<(u32, u32)>),
    Failed(u32, String),
}

/// An encoded reply, with the payload bytes its request counts against the connection's
/// budget until the reply is written.
struct Reply {
    parts: Vec<Bytes>,
    cost: u64,
}

/// Most replies written with one system call.
const MAX_COALESCED: usize = 64;
/// Most buffers handed to one vectored write.
const MAX_SLICES: usize = 1024;
/// Extents a block-status answer stops at (the client asks again for the rest).
const MAX_STATUS_EXTENTS: usize = 4096;
/// The first range a one-extent block-status answer looks at.
const FIRST_STATUS_STEP: u64 = 256 << 10;

/// Replies waiting to be written, in order, and how much of the first is already out.
#[derive(Default)]
struct Outgoing {
    replies: VecDeque<Reply>,
    /// Bytes of the first reply already written.
    sent: usize,
}

impl Outgoing {
    /// Writes as much as one vectored system call takes; returns the replies it finished.
    async fn write_some<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<usize> {
        let mut skip = self.sent;
        let mut slices: Vec<IoSlice<'_>> = Vec::new();
        'replies: for reply in self.replies.iter().take(MAX_COALESCED) {
            for part in &reply.parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices.push(IoSlice::new(&part[skip..]));
                skip = 0;
                if slices.len() == MAX_SLICES {
                    break 'replies;
                }
            }
        }
        let n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        Ok(n)
    }

    /// Records that `n` more bytes went out; returns the replies now written in full.
    fn advance(&mut self, n: usize) -> Vec<Reply> {
        self.sent += n;
        let mut done = Vec::new();
        while let Some(first) = self.replies.front() {
            let len: usize = first.parts.iter().map(|p| p.len()).sum();
            if self.sent < len {
                break;
            }
            self.sent -= len;
            done.extend(self.replies.pop_front());
        }
        done
    }
}

/// Polls `task` once on the current task: its output if it completes without waiting.
async fn poll_once<T>(task: &mut Pin<Box<dyn Future<Output = T> + Send>>) -> Option<T> {
    poll_fn(|cx| match task.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Runs `req` and encodes its reply, logging a failure.
async fn answer(
    session: Arc<Session>,
    req: Request,
    payload: Option<Bytes>,
    peer: Arc<str>,
) -> Reply {
    let outcome = run(&session, &req, payload).await;
    if let Outcome::Failed(code, msg) = &outcome {
        tracing::warn!("nbd: {peer}: {}: {msg} (error {code})", describe(&req));
    }
    Reply {
        parts: encode(&session, &req, outcome),
        cost: cost(&req),
    }
}

/// The payload bytes `req` counts against the connection's budget.
fn cost(req: &Request) -> u64 {
    match req.kind {
        cmd::READ | cmd::WRITE => u64::from(req.length.clamp(1, MAX_REQUEST)),
        _ => 1,
    }
}

/// Requests read and not yet answered.
#[derive(Default)]
struct Flight {
    requests: usize,
    bytes: u64,
}

impl Flight {
    /// Returns true if a request costing `cost` may be taken now (one always may when none
    /// is in flight).
    fn admits(&self, cost: u64) -> bool {
        self.requests == 0
            || (self.requests < MAX_IN_FLIGHT && self.bytes + cost <= MAX_IN_FLIGHT_BYTES)
    }

    /// Counts a request taken.
    fn take(&mut self, cost: u64) {
        self.requests += 1;
        self.bytes += cost;
    }

    /// Counts a request answered (or dropped with its connection).
    fn done(&mut self, reply: &Reply) {
        self.requests -= 1;
        self.bytes -= reply.cost;
    }
}

/// What taking a request led to.
enum Taken {
    /// It completed at once; here is its reply.
    Answered(Reply),
    /// It runs as its own task, which sends its reply when done.
    Running,
    /// The client said goodbye.
    Disconnect,
}

/// The reading half of a connection and the bytes read from it but not yet used.
struct Incoming<R> {
    r: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Incoming<R> {
    /// Returns the next request header if all of it has arrived, without taking it.
    fn peek(&self) -> Option<Result<Request, Error>> {
        let head: &[u8; Request::SIZE] = self.buf.get(..Request::SIZE)?.try_into().ok()?;
        Some(Request::parse(head).map_err(Error::from))
    }

    /// Reads more of the stream; false at its end. Cancel-safe: nothing read is lost.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < READ_BUFFER / 4 {
            self.buf.reserve(READ_BUFFER);
        }
        Ok(self.r.read_buf(&mut self.buf).await? > 0)
    }

    /// Takes the `length` bytes of a write payload: those already read, then the rest
    /// straight from the stream.
    async fn payload(&mut self, length: usize) -> std::io::Result<Bytes> {
        if self.buf.len() >= length {
            return Ok(self.buf.split_to(length).freeze());
        }
        let mut data = BytesMut::zeroed(length);
        let have = self.buf.len();
        data[..have].copy_from_slice(&self.buf);
        self.buf.clear();
        self.r.read_exact(&mut data[have..]).await?;
        Ok(data.freeze())
    }
}

/// Takes request `req` (its header already consumed): reads its payload, runs it, and either
/// answers it at once or leaves it running as its own task that sends to `finished`.
async fn take<R: AsyncRead + Unpin>(
    session: &Arc<Session>,
    peer: &Arc<str>,
    incoming: &mut Incoming<R>,
    req: Request,
    finished: &mpsc::UnboundedSender<Reply>,
) -> Result<Taken, Error> {
    if req.kind == cmd::DISC {
        return Ok(Taken::Disconnect);
    }
    let payload = if req.kind == cmd::WRITE {
        if req.length > MAX_REQUEST {
            // The payload cannot be skipped safely at this size: end the connection.
            return Err(Error::Protocol(format!(
                "write of {} bytes is over the {MAX_REQUEST}-byte maximum",
                req.length
            )));
        }
        let data = incoming.payload(req.length as usize).await.map_err(|e| {
            Error::Protocol(format!("client left in the middle of a write payload: {e}"))
        })?;
        Some(data)
    } else {
        None
    };
    let mut task: Pin<Box<dyn Future<Output = Reply> + Send>> =
        Box::pin(answer(session.clone(), req, payload, peer.clone()));
    if let Some(reply) = poll_once(&mut task).await {
        return Ok(Taken::Answered(reply));
    }
    let finished = finished.clone();
    tokio::spawn(async move {
        // The receiver lives until every request in flight is answered.
        let _ = finished.send(task.await);
    });
    Ok(Taken::Running)
}

/// Serves requests on one connection until the client leaves or `stop` turns true.
pub(crate) async fn serve<R, W>(
    session: Session,
    r: R,
    mut w: W,
    mut stop: watch::Receiver<bool>,
    peer: &str,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let session = Arc::new(session);
    let peer: Arc<str> = Arc::from(peer);
    let mut incoming = Incoming {
        r,
        buf: BytesMut::with_capacity(READ_BUFFER),
    };
    let (finished, mut replies) = mpsc::unbounded_channel::<Reply>();
    let mut flight = Flight::default();
    // Requests running as their own tasks.
    let mut running = 0usize;
    let mut out = Outgoing::default();
    // Why the connection stopped taking requests, once it has.
    let mut ending: Option<Result<(), Error>> = None;
    // The client cannot be written to any more: replies are dropped.
    let mut broken = false;
    loop {
        // Take the requests whose header has arrived, while the budget allows.
        while ending.is_none() {
            let req = match incoming.peek() {
                None => break,
                Some(Err(e)) => {
                    ending = Some(Err(e));
                    break;
                }
                Some(Ok(req)) => req,
            };
            if !flight.admits(cost(&req)) {
                break;
            }
            let _ = incoming.buf.split_to(Request::SIZE);
            match take(&session, &peer, &mut incoming, req, &finished).await {
                Ok(Taken::Answered(reply)) => {
                    flight.take(reply.cost);
                    out.replies.push_back(reply);
                }
                Ok(Taken::Running) => {
                    flight.take(cost(&req));
                    running += 1;
                }
                Ok(Taken::Disconnect) => ending = Some(Ok(())),
                Err(e) => ending = Some(Err(e)),
            }
        }
        while let Ok(reply) = replies.try_recv() {
            running -= 1;
            out.replies.push_back(reply);
        }
        if broken {
            for reply in out.replies.drain(..) {
                flight.done(&reply);
            }
            out.sent = 0;
        }
        if ending.is_some() && flight.requests == 0 {
            break;
        }
        // Read more only when no whole request waits (one waits for budget).
        let room = ending.is_none() && incoming.peek().is_none();
        tokio::select! {
            biased;
            written = out.write_some(&mut w), if !out.replies.is_empty() => match written {
                Ok(n) => {
                    for reply in out.advance(n) {
                        flight.done(&reply);
                    }
                    if out.replies.is_empty()
                        && let Err(e) = w.flush().await
                    {
                        tracing::debug!("nbd: {peer}: cannot send replies: {e}");
                        broken = true;
                        ending.get_or_insert(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::debug!("nbd: {peer}: cannot send replies: {e}");
                    broken = true;
                    ending.get_or_insert(Ok(()));
                }
            },
            reply = replies.recv(), if running > 0 => {
                if let Some(reply) = reply {
                    running -= 1;
                    out.replies.push_back(reply);
                }
            }
            more = incoming.fill(), if room => match more {
                Ok(true) => {}
                Ok(false) if incoming.buf.is_empty() => ending = Some(Ok(())),
                Ok(false) => {
                    ending = Some(Err(Error::Protocol(
                        "client left in the middle of a request header".to_owned(),
                    )))
                }
                Err(e) => ending = Some(Err(e.into())),
            },
            () = async { let _ = stop.wait_for(|s| *s).await; }, if ending.is_none() => {
                ending = Some(Ok(()));
            }
            // Unreachable while the counts hold: a request in flight is queued or running.
            else => break,
        }
    }
    let _ = w.shutdown().await;
    ending.unwrap_or(Ok(()))
}

/// Names a request for log lines.
fn describe(req: &Request) -> String {
    let name = match req.kind {
        cmd::READ => "read",
        cmd::WRITE => "write",
        cmd::FLUSH => "flush",
        cmd::TRIM => "trim",
        cmd::WRITE_ZEROES => "write-zeroes",
        cmd::BLOCK_STATUS => "block-status",
        _ => "request",
    };
    format!(
        "{name} (type {}) at {} length {}",
        req.kind, req.offset, req.length
    )
}

/// Encodes the reply of `req` as the parts to write.
fn encode(session: &Session, req: &Request, outcome: Outcome) -> Vec<Bytes> {
    let structured = session.structured && matches!(req.kind, cmd::READ | cmd::BLOCK_STATUS);
    let copy = Bytes::copy_from_slice;
    match outcome {
        Outcome::Failed(code, msg) if structured => {
            vec![proto::error_chunk(req.cookie, code, &msg).into()]
        }
        Outcome::Failed(code, _) => vec![copy(&proto::simple_reply(req.cookie, code))],
        Outcome::Data(data) if structured => {
            let mut head = [0u8; 28];
            head[..20].copy_from_slice(&proto::chunk_header(
                req.cookie,
                chunk::FLAG_DONE,
                chunk::OFFSET_DATA,
                8 + data.len() as u32,
            ));
            head[20..].copy_from_slice(&req.offset.to_be_bytes());
            vec![copy(&head), data]
        }
        Outcome::Data(data) => vec![copy(&proto::simple_reply(req.cookie, 0)), data],
        Outcome::Status(extents) => {
            let context = session
                .allocation_context
                .unwrap_or(proto::BASE_ALLOCATION_ID);
            vec![proto::block_status_chunk(req.cookie, context, &extents).into()]
        }
        Outcome::Done if structured => vec![copy(&proto::chunk_header(
            req.cookie,
            chunk::FLAG_DONE,
            chunk::NONE,
            0,
        ))],
        Outcome::Done => vec![copy(&proto::simple_reply(req.cookie, 0))],
    }
}

/// Maps an image error to the errno of a reply.
fn errno_of(e: &rbdx_image::Error) -> u32 {
    match e.kind() {
        ErrorKind::ReadOnly => errno::EPERM,
        ErrorKind::InvalidArgument => errno::EINVAL,
        ErrorKind::QuotaExceeded => errno::ENOSPC,
        ErrorKind::Unsupported => errno::ENOTSUP,
        ErrorKind::Store(28) => errno::ENOSPC,
        ErrorKind::Store(12) => errno::ENOMEM,
        _ => errno::EIO,
    }
}

fn failed(e: rbdx_image::Error) -> Outcome {
    Outcome::Failed(errno_of(&e), e.to_string())
}

/// Runs one request against the export.
async fn run(session: &Session, req: &Request, payload: Option<Bytes>) -> Outcome {
    let export = &session.export;
    let image = export.image();
    let size = image.size();
    let end = req.offset.checked_add(u64::from(req.length));
    let in_range = end.is_some_and(|end| end <= size);
    let writes = matches!(req.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    if writes && export.read_only() {
        return Outcome::Failed(errno::EPERM, "the export is read-only".to_owned());
    }
    if matches!(
        req.kind,
        cmd::READ | cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES | cmd::BLOCK_STATUS
    ) && !in_range
    {
        let code = if writes { errno::ENOSPC } else { errno::EINVAL };
        return Outcome::Failed(
            code,
            format!(
                "{} bytes at offset {} reach past the end of the export ({size} bytes)",
                req.length, req.offset
            ),
        );
    }
    let result = match req.kind {
        cmd::READ => {
            if req.length > MAX_REQUEST {
                return Outcome::Failed(
                    errno::EOVERFLOW,
                    format!("read over the {MAX_REQUEST}-byte maximum"),
                );
            }
            if req.length == 0 {
                return Outcome::Data(Bytes::new());
            }
            return match image.read(req.offset, u64::from(req.length)).await {
                Ok(data) => Outcome::Data(data),
                Err(e) => failed(e),
            };
        }
        cmd::WRITE => {
            let data = payload.unwrap_or_default();
            if data.is_empty() {
                Ok(())
            } else {
                image.write(req.offset, data).await
            }
        }
        cmd::FLUSH => image.flush().await,
        cmd::TRIM if req.length > 0 => image.discard(req.offset, u64::from(req.length)).await,
        cmd::TRIM => Ok(()),
        cmd::WRITE_ZEROES => write_zeroes(session, req).await,
        cmd::BLOCK_STATUS => return block_status(session, req).await,
        other => {
            return Outcome::Failed(errno::EINVAL, format!("unknown request type {other}"));
        }
    };
    let result = match result {
        Ok(()) if req.flags & cmdflag::FUA != 0 && writes => image.flush().await,
        other => other,
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => failed(e),
    }
}

/// `NBD_CMD_WRITE_ZEROES`: a hole unless the client wants the range allocated.
async fn write_zeroes(session: &Session, req: &Request) -> rbdx_image::Result<()> {
    let image = session.export.image();
    if req.length == 0 {
        return Ok(());
    }
    if req.flags & cmdflag::NO_HOLE == 0 {
        return image.write_zeroes(req.offset, u64::from(req.length)).await;
    }
    if req.flags & cmdflag::FAST_ZERO != 0 {
        return Err(rbdx_image::Error::new(
            ErrorKind::Unsupported,
            "allocated zeros are written like data, which is not fast",
        ));
    }
    let mut at = req.offset;
    let end = req.offset + u64::from(req.length);
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64);
        image
            .write(at, Bytes::from_static(&ZEROS[..n as usize]))
            .await?;
        at += n;
    }
    Ok(())
}

/// `NBD_CMD_BLOCK_STATUS` for `base:allocation`.
async fn block_status(session: &Session, req: &Request) -> Outcome {
    if session.allocation_context.is_none() {
        return Outcome::Failed(
            errno::EINVAL,
            "block status needs the base:allocation meta context".to_owned(),
        );
    }
    if req.length == 0 {
        return Outcome::Failed(errno::EINVAL, "block status of zero bytes".to_owned());
    }
    let image = session.export.image();
    let one = req.flags & cmdflag::REQ_ONE != 0;
    let end = req.offset + u64::from(req.length);
    // The answer may stop short of the range (the client asks again from where it ends), so
    // the store is asked one object set at a time, only until the answer is long enough: a
    // client that wants one extent per request (qemu) must not cost a walk of the whole range.
    let layout = image.layout();
    let set = layout.object_size() * layout.stripe_count().max(1);
    // One extent wanted: start small and double, so the store looks at little more than
    // the extent it reports.
    let mut step = if one { FIRST_STATUS_STEP } else { set };
    let mut runs: Vec<rbdx_image::Allocation> = Vec::new();
    let mut at = req.offset;
    while at < end {
        let boundary = (at / set + 1).saturating_mul(set);
        let stop = at.saturating_add(step).min(boundary).min(end);
        step = step.saturating_mul(2);
        let found = match image.allocation_exact(at, stop - at).await {
            Ok(found) => found,
            Err(e) => return failed(e),
        };
        for run in found {
            match runs.last_mut() {
                Some(last) if last.data == run.data && last.end() == run.offset => {
                    last.length += run.length;
                }
                _ => runs.push(run),
            }
        }
        at = stop;
        // Every run but the last is complete: the next window cannot extend it.
        let complete = runs.len().saturating_sub(1);
        if (one && complete >= 1) || complete >= MAX_STATUS_EXTENTS {
            runs.truncate(complete);
            break;
        }
    }
    let mut extents: Vec<(u32, u32)> = runs
        .iter()
        .map(|run| {
            let flags = if run.data {
                0
            } else {
                state::HOLE | state::ZERO
            };
            (run.length as u32, flags)
        })
        .collect();
    if one {
        extents.truncate(1);
    }
    Outcome::Status(extents)
}
