//! The transmission phase: requests in, replies out, many in flight.
//!
//! One task reads requests (and write payloads) in order; each request then runs as its own
//! task, so replies may leave out of order, as the protocol allows. One task writes the
//! replies, whole and several per system call when several are ready, so chunks of different
//! replies never interleave. Memory is bounded: a
//! request takes permits for its payload size before its payload is read (writes) or its data
//! is allocated (reads), and gives them back once its reply is sent.
//!
//! A reply is sent only after its operation has completed, so a flush, which makes every
//! completed write durable, covers every write the client has seen acknowledged, on this
//! connection and on every other connection to the same export.
//!
//! On a stop request (server shutdown) or `NBD_CMD_DISC`, the reader stops taking requests,
//! the requests in flight finish and are answered, and the connection closes.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rbdx_image::ErrorKind;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::Error;
use crate::handshake::Session;
use crate::proto::{self, MAX_REQUEST, Request, chunk, cmd, cmdflag, errno, state};

/// Requests of one connection in flight at once.
const MAX_IN_FLIGHT: u32 = 64;
/// Payload bytes of one connection in flight at once.
const MAX_IN_FLIGHT_BYTES: u32 = 256 << 20;
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

/// An encoded reply on its way to the socket, with the permits its request holds until the
/// reply is written.
struct Outgoing {
    parts: Vec<Bytes>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Most replies written with one system call.
const MAX_COALESCED: usize = 64;
/// Extents a block-status answer stops at (the client asks again for the rest).
const MAX_STATUS_EXTENTS: usize = 4096;
/// The first range a one-extent block-status answer looks at.
const FIRST_STATUS_STEP: u64 = 256 << 10;

/// Writes replies as they come, several per system call when several are ready; returns the
/// writing half once every sender is gone.
async fn send_replies<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    peer: String,
) -> W {
    let mut broken = false;
    let mut batch: Vec<Outgoing> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_COALESCED {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !broken {
            let parts: Vec<&[u8]> = batch
                .iter()
                .flat_map(|o| o.parts.iter().map(|p| p.as_ref()))
                .collect();
            if let Err(e) = write_parts(&mut w, &parts).await {
                tracing::debug!("nbd: {peer}: cannot send replies: {e}");
                broken = true;
            }
        }
        batch.clear();
    }
    w
}

/// Writes `parts` back to back (vectored), then flushes.
async fn write_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    let parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut index = 0;
    let mut skip = 0;
    while index < parts.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(IoSlice::new(&parts[index][skip..]))
            .chain(
                parts[index + 1..]
                    .iter()
                    .take(1023)
                    .map(|p| IoSlice::new(p)),
            )
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < parts.len() && n >= parts[index].len() - skip {
            n -= parts[index].len() - skip;
            index += 1;
            skip = 0;
        }
        skip += n;
    }
    w.flush().await
}

/// Serves requests on one connection until the client leaves or `stop` turns true.
pub(crate) async fn serve<R, W>(
    session: Session,
    r: R,
    w: W,
    mut stop: watch::Receiver<bool>,
    peer: &str,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let session = Arc::new(session);
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    let (replies, outgoing) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_replies(w, outgoing, peer.to_owned()));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    let bytes = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES as usize));
    let result = loop {
        let mut head = [0u8; Request::SIZE];
        tokio::select! {
            read = r.read_exact(&mut head) => match read {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
                Err(e) => break Err(e.into()),
            },
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
        let req = match Request::parse(&head) {
            Ok(req) => req,
            Err(e) => break Err(e.into()),
        };
        if req.kind == cmd::DISC {
            break Ok(());
        }
        let cost = match req.kind {
            cmd::READ | cmd::WRITE => req.length.clamp(1, MAX_REQUEST),
            _ => 1,
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let Ok(budget) = bytes.clone().acquire_many_owned(cost).await else {
            break Ok(());
        };
        let payload = if req.kind == cmd::WRITE {
            if req.length > MAX_REQUEST {
                // The payload cannot be skipped safely at this size: end the connection.
                break Err(Error::Protocol(format!(
                    "write of {} bytes is over the {MAX_REQUEST}-byte maximum",
                    req.length
                )));
            }
            let mut buf = BytesMut::zeroed(req.length as usize);
            if let Err(e) = r.read_exact(&mut buf).await {
                break Err(Error::Protocol(format!(
                    "client left in the middle of a write payload: {e}"
                )));
            }
            Some(buf.freeze())
        } else {
            None
        };
        let session = session.clone();
        let replies = replies.clone();
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let outcome = run(&session, &req, payload).await;
            if let Outcome::Failed(code, msg) = &outcome {
                tracing::warn!("nbd: {peer}: {}: {msg} (error {code})", describe(&req));
            }
            let parts = encode(&session, &req, outcome);
            // The receiver lives until every sender is gone.
            let _ = replies.send(Outgoing {
                parts,
                _permits: (slot, budget),
            });
        });
    };
    // Let every request in flight finish and its reply go out before the connection closes.
    drop(replies);
    let mut w = match sender.await {
        Ok(w) => w,
        Err(e) => return Err(Error::Protocol(format!("reply task failed: {e}"))),
    };
    let _ = w.shutdown().await;
    result
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
