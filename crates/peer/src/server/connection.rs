//! One client connection at the gateway: TLS, the handshake, then frames until either side
//! stops.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::ReadStep;
use rbdx_objstore::limits::MAX_NOTIFY_PAYLOAD;
use rbdx_objstore::{Error, ErrorKind, Subject};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::codec::rope_len;
use crate::conn::{ConnError, FrameReader, Outgoing, outgoing, outgoing_rope, write_loop};
use crate::frame::MAX_PAYLOAD;
use crate::frame::{self, Frame, FrameType, MAGIC, VERSION};
use crate::handshake::{self, Challenge, EXPORTER_LABEL, Hello, Side, Welcome};
use crate::message::{Event, Request, encode_fatal, encode_response_rope};
use crate::server::session::{Attachment, Seen, Session};
use crate::server::{GatewayInner, dispatch};

/// The largest answer kept for a resent request (answers of state-changing requests are
/// versions, ids and notify outcomes).
const KEPT_ANSWER_MAX: usize = 64 << 10;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

fn fatal_frame(kind: ErrorKind, detail: String) -> Frame {
    let e = Error::new(kind, Subject::Store).with_detail(detail);
    Frame::new(FrameType::Error, 0, encode_fatal(&e))
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(gw: Arc<GatewayInner>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 4];
    let peeked = tokio::time::timeout(gw.opts.handshake_timeout, tcp.peek(&mut first)).await;
    match peeked {
        Ok(Ok(n)) if n > 0 && first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(n)) => {
            tracing::warn!("connection from {peer} does not start with TLS; closed");
            if n >= 4 && first == MAGIC {
                plain_refusal(tcp).await;
            }
            return;
        }
        _ => {
            tracing::warn!("connection from {peer} sent nothing; closed");
            return;
        }
    }
    let accepted = tokio::time::timeout(gw.opts.handshake_timeout, gw.acceptor.accept(tcp)).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("TLS handshake with {peer} timed out");
            return;
        }
    };
    let mut exporter = [0u8; 32];
    match tls
        .get_ref()
        .1
        .export_keying_material(&mut exporter, EXPORTER_LABEL, None)
    {
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("TLS exporter for {peer}: {e}");
            return;
        }
    }
    let (read, write) = tokio::io::split(tls);
    let mut reader = FrameReader::new(read);
    let (tx, rx) = mpsc::channel::<Outgoing>(gw.opts.max_requests as usize + 64);
    let bandwidth = gw.opts.bandwidth_limit;
    let writer = tokio::spawn(write_loop(write, rx, bandwidth));
    let session = tokio::time::timeout(
        gw.opts.handshake_timeout,
        handshake(&gw, &mut reader, &tx, &exporter, peer),
    )
    .await;
    let (session, compress) = match session {
        Ok(Ok(s)) => s,
        Ok(Err(refusal)) => {
            if let Some(frame) = refusal
                && let Ok(mut out) = outgoing(&frame, false)
            {
                out.last = true;
                let _ = tx.send(out).await;
            }
            drop(tx);
            let _ = writer.await;
            return;
        }
        Err(_) => {
            tracing::warn!("handshake with {peer} timed out");
            return;
        }
    };
    reader.open(compress);
    run(&gw, session, reader, tx, compress, peer).await;
    let _ = writer.await;
}

/// Answers a client that speaks the peer protocol without TLS, in plain text, and closes.
async fn plain_refusal(mut tcp: TcpStream) {
    let frame = fatal_frame(
        ErrorKind::Protocol,
        "this gateway speaks TLS 1.3 from the first byte".into(),
    );
    if let Ok(out) = frame::encode(&frame, false) {
        let _ = tcp.write_all(&out).await;
        let _ = tcp.shutdown().await;
    }
}

/// Runs the handshake; on success returns the session and whether to compress. A refusal
/// carries the `Error` frame to send before closing.
async fn handshake<R: AsyncRead + Unpin>(
    gw: &Arc<GatewayInner>,
    reader: &mut FrameReader<R>,
    tx: &mpsc::Sender<Outgoing>,
    exporter: &[u8; 32],
    peer: SocketAddr,
) -> Result<(Arc<Session>, bool), Option<Frame>> {
    let frame = reader.next().await.map_err(|e| {
        tracing::warn!("handshake with {peer}: {e}");
        None
    })?;
    if frame.kind != FrameType::Hello {
        tracing::warn!(
            "{peer} began with a {:?} frame, not Hello; closed",
            frame.kind
        );
        return Err(Some(fatal_frame(
            ErrorKind::Protocol,
            "the first frame must be Hello".into(),
        )));
    }
    let hello = Hello::decode(frame.payload).map_err(|e| {
        tracing::warn!("bad Hello from {peer}: {e}");
        Some(fatal_frame(ErrorKind::Protocol, format!("bad Hello: {e}")))
    })?;
    if hello.min_version > VERSION || hello.max_version < VERSION {
        tracing::warn!(
            "{peer} speaks protocol versions {}..{}, not {VERSION}",
            hello.min_version,
            hello.max_version
        );
        return Err(Some(fatal_frame(
            ErrorKind::Protocol,
            format!(
                "the client speaks protocol versions {}..{}; this gateway speaks {VERSION}",
                hello.min_version, hello.max_version
            ),
        )));
    }
    // Only well-formed names are looked up; anything else is refused like an unknown key.
    let well_formed =
        crate::keys::entity_name(&hello.key_name).ok().as_deref() == Some(hello.key_name.as_str());
    let key = if well_formed {
        gw.keys.get(&hello.key_name).await.ok().flatten()
    } else {
        None
    };
    let server_nonce = handshake::random::<32>();
    let challenge = Challenge {
        version: VERSION,
        nonce: server_nonce,
    };
    send(
        tx,
        Frame::new(FrameType::Challenge, 0, challenge.encode()),
        false,
    )
    .await;
    let auth = reader.next().await.map_err(|e| {
        tracing::warn!("handshake with {peer}: {e}");
        None
    })?;
    let refused = || {
        tracing::warn!(
            "{peer} refused: key {} unknown or wrong proof",
            hello.key_name
        );
        Some(fatal_frame(
            ErrorKind::PermissionDenied,
            format!(
                "the gateway refused key {}: no such key or a wrong secret",
                if well_formed {
                    hello.key_name.as_str()
                } else {
                    "(malformed name)"
                }
            ),
        ))
    };
    let proof: [u8; 32] = match (auth.kind, auth.payload.as_ref().try_into()) {
        (FrameType::Auth, Ok(p)) => p,
        _ => return Err(refused()),
    };
    let Some(key) = key else {
        return Err(refused());
    };
    let secret = key.secret_bytes().map_err(|_| refused())?;
    let expected = handshake::proof(
        &secret,
        Side::Client,
        exporter,
        &hello.key_name,
        &hello.nonce,
        &server_nonce,
    );
    if !handshake::proofs_equal(&expected, &proof) {
        return Err(refused());
    }
    let (session, resumed) = gw.session_for(&key, hello.resume).await.map_err(|e| {
        tracing::warn!("cannot open a store session for {peer}: {e}");
        Some(Frame::new(FrameType::Error, 0, encode_fatal(&e)))
    })?;
    let compress = hello.compress;
    let welcome = Welcome {
        proof: handshake::proof(
            &secret,
            Side::Server,
            exporter,
            &hello.key_name,
            &hello.nonce,
            &server_nonce,
        ),
        session: session.id,
        token: session.token,
        resumed,
        client: session.store.client(),
        max_requests: gw.opts.max_requests,
        window: gw.opts.window,
        compress,
    };
    send(
        tx,
        Frame::new(FrameType::Welcome, 0, welcome.encode()),
        false,
    )
    .await;
    tracing::info!(
        "{peer} authenticated as {} ({}), session {:x}{}",
        key.name,
        key.profile.as_str(),
        session.id,
        if resumed { " resumed" } else { "" }
    );
    Ok((session, compress))
}

async fn send(tx: &mpsc::Sender<Outgoing>, frame: Frame, compress: bool) {
    if let Ok(out) = outgoing(&frame, compress) {
        let _ = tx.send(out).await;
    }
}

/// Serves frames of an authenticated connection.
async fn run<R: AsyncRead + Unpin + Send + 'static>(
    gw: &Arc<GatewayInner>,
    session: Arc<Session>,
    mut reader: FrameReader<R>,
    tx: mpsc::Sender<Outgoing>,
    compress: bool,
    peer: SocketAddr,
) {
    let (cut_tx, mut cut_rx) = watch::channel(false);
    let serial = gw.next_serial();
    let window = Arc::new(Semaphore::new(gw.opts.window as usize));
    session.attach(Attachment {
        tx: tx.clone(),
        window: window.clone(),
        compress,
        cut: cut_tx,
        serial,
    });
    if session.is_closed() {
        // The session ended between the handshake and now: the client reconnects and gets a
        // new one (and learns that its watches are gone).
        session.detach(serial);
        return;
    }
    for (cookie, e) in session.take_lost() {
        send(
            &tx,
            Frame::new(FrameType::Event, cookie, Event::Lost(e).encode()),
            compress,
        )
        .await;
    }
    let slots = Arc::new(Semaphore::new(gw.opts.max_requests as usize));
    let requests_window = Arc::new(Semaphore::new(gw.opts.window as usize));
    let mut stopping = gw.stopping.subscribe();
    let mut bye = false;
    loop {
        // Every wait of a step (reading, flow-control credit) gives way to a cut or a stop.
        let step = next_frame(
            gw,
            &session,
            &mut reader,
            &tx,
            &window,
            &slots,
            &requests_window,
            peer,
        );
        let flow = tokio::select! {
            _ = cut_rx.changed() => {
                tracing::info!("session {:x} of {peer}: connection cut", session.id);
                break;
            }
            _ = stopping.wait_for(|s| *s) => break,
            flow = step => flow,
        };
        match flow {
            Flow::Continue => {}
            Flow::Close => break,
            Flow::Bye => {
                bye = true;
                break;
            }
        }
    }
    if *gw.stopping.borrow() {
        // A clean stop: answers in flight go out before the connection closes.
        let _ = slots.acquire_many(gw.opts.max_requests).await;
    }
    session.detach(serial);
    drop(tx);
    if bye {
        gw.end_session(&session).await;
    }
}

/// Returns how many bytes the answer to `req` will take, about: what reads ask for, a few
/// KiB for the rest.
fn estimate(req: Option<&Request>) -> usize {
    const SMALL: usize = 4 << 10;
    const WHOLE_OBJECT: usize = 4 << 20;
    let Some(Request::Read { op, .. }) = req else {
        return SMALL;
    };
    op.steps()
        .iter()
        .map(|step| match step {
            ReadStep::Read { length, .. } | ReadStep::SparseRead { length, .. } => {
                length.map_or(WHOLE_OBJECT, |l| usize::try_from(l).unwrap_or(usize::MAX))
            }
            _ => SMALL,
        })
        .fold(SMALL, usize::saturating_add)
}

/// What to do after a frame.
enum Flow {
    /// Read the next frame.
    Continue,
    /// Close the connection, keeping the session for a resume.
    Close,
    /// Close the connection and end the session.
    Bye,
}

/// Reads one frame and acts on it: a request is started in its own task once its bytes and
/// its answer's credit fit in the windows.
#[allow(clippy::too_many_arguments)]
async fn next_frame<R: AsyncRead + Unpin>(
    gw: &Arc<GatewayInner>,
    session: &Arc<Session>,
    reader: &mut FrameReader<R>,
    tx: &mpsc::Sender<Outgoing>,
    window: &Arc<Semaphore>,
    slots: &Arc<Semaphore>,
    requests_window: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Flow {
    let idle = gw.opts.idle_timeout;
    let (header, head) = match tokio::time::timeout(idle, reader.header()).await {
        Ok(Ok(h)) => h,
        Ok(Err(ConnError::Closed)) => return Flow::Close,
        Ok(Err(e)) => {
            tracing::warn!("connection from {peer} closed: {e}");
            if let ConnError::Frame(f) = e {
                send(tx, fatal_frame(ErrorKind::Protocol, f.0), false).await;
            }
            return Flow::Close;
        }
        Err(_) => {
            tracing::warn!("connection from {peer} idle for {idle:?}; closed");
            return Flow::Close;
        }
    };
    // Flow control: a request's bytes count against the window until it is answered; a
    // compressed one counts for what it claims to hold, taken before it is decompressed.
    let window_bytes = gw.opts.window as usize;
    let is_request = header.kind == FrameType::Request;
    let mut permits = Vec::new();
    let credit = header.len.min(window_bytes);
    if is_request {
        match requests_window
            .clone()
            .acquire_many_owned(credit as u32)
            .await
        {
            Ok(p) => permits.push(p),
            Err(_) => return Flow::Close,
        }
    }
    let raw = match reader.raw_payload(&header).await {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!("connection from {peer} closed: {e}");
            if let ConnError::Frame(f) = e {
                send(tx, fatal_frame(ErrorKind::Protocol, f.0), false).await;
            }
            return Flow::Close;
        }
    };
    if header.compressed {
        let claimed = frame::claimed_len(&raw);
        if !is_request && claimed > MAX_NOTIFY_PAYLOAD {
            let why = format!(
                "a compressed {:?} frame claims {claimed} bytes",
                header.kind
            );
            tracing::warn!("connection from {peer} closed: {why}");
            send(tx, fatal_frame(ErrorKind::Protocol, why), false).await;
            return Flow::Close;
        }
        let more = claimed.min(window_bytes).saturating_sub(credit);
        if is_request && more > 0 {
            match requests_window
                .clone()
                .acquire_many_owned(more as u32)
                .await
            {
                Ok(p) => permits.push(p),
                Err(_) => return Flow::Close,
            }
        }
    }
    let frame = match header.finish(&head, raw) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("connection from {peer} closed: protocol error: {e}");
            send(tx, fatal_frame(ErrorKind::Protocol, e.0), false).await;
            return Flow::Close;
        }
    };
    match frame.kind {
        FrameType::Request => {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return Flow::Close;
            };
            let req = match Request::decode(frame.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("bad request from {peer}: {e}; connection closed");
                    let fatal = fatal_frame(ErrorKind::Protocol, format!("bad request: {e}"));
                    send(tx, fatal, false).await;
                    return Flow::Close;
                }
            };
            // The answer's credit is taken before the request runs, so a client that does
            // not read stops the gateway from reading (and running) its next requests.
            let estimate = estimate(req.as_ref()).min(window_bytes) as u32;
            let Ok(reserved) = window.clone().acquire_many_owned(estimate).await else {
                return Flow::Close;
            };
            let session = session.clone();
            tokio::spawn(async move {
                answer(&session, frame.id, req, reserved, window_bytes).await;
                drop(permits);
                drop(slot);
            });
            Flow::Continue
        }
        FrameType::NotifyAck if frame.payload.len() > MAX_NOTIFY_PAYLOAD => {
            let why = format!("a notify answer of {} bytes", frame.payload.len());
            tracing::warn!("connection from {peer} closed: {why}");
            send(tx, fatal_frame(ErrorKind::Protocol, why), false).await;
            Flow::Close
        }
        FrameType::NotifyAck => {
            session.ack(frame.id, frame.payload);
            Flow::Continue
        }
        FrameType::Ping => {
            let pong = Frame::new(FrameType::Pong, frame.id, Bytes::new());
            send(tx, pong, false).await;
            Flow::Continue
        }
        FrameType::Pong => Flow::Continue,
        FrameType::Bye => Flow::Bye,
        other => {
            tracing::warn!("unexpected {other:?} frame from {peer}; connection closed");
            let fatal = fatal_frame(ErrorKind::Protocol, format!("unexpected {other:?} frame"));
            send(tx, fatal, false).await;
            Flow::Close
        }
    }
}

/// Runs request `id` once, however often it arrives, and sends its answer to whichever
/// connection the session has then. `reserved` is the credit taken for the answer; it is
/// trimmed to the answer's real size, or given back and the whole size taken at once (never
/// holding part of the window while waiting for the rest).
async fn answer(
    session: &Arc<Session>,
    id: u64,
    req: Option<Request>,
    mut reserved: OwnedSemaphorePermit,
    window_bytes: usize,
) {
    let encoded = match session.begin(id) {
        Seen::Done(answer) => answer,
        Seen::Running(mut rx) => {
            let waited = rx.wait_for(Option::is_some).await.map(|a| a.clone());
            match waited {
                Ok(Some(answer)) => answer,
                _ => encode_response_rope(&Err(Error::new(ErrorKind::Io, Subject::Store)
                    .with_detail("the first copy of this request failed at the gateway"))),
            }
        }
        Seen::New(tx) => {
            let (result, keep) = match req {
                Some(req) => {
                    let keep = req.changes_state();
                    // In its own task, so that a panic in the store becomes an error answer
                    // rather than a request that never ends.
                    let run = tokio::spawn({
                        let session = session.clone();
                        async move { dispatch::run(&session, req).await }
                    });
                    let result = run.await.unwrap_or_else(|e| {
                        Err(Error::new(ErrorKind::Io, Subject::Store)
                            .with_detail(format!("the gateway failed running the request: {e}")))
                    });
                    (result, keep)
                }
                None => (
                    Err(Error::new(ErrorKind::Unsupported, Subject::Store)
                        .with_detail("this gateway does not know that request")),
                    false,
                ),
            };
            let mut encoded = encode_response_rope(&result);
            if rope_len(&encoded) > MAX_PAYLOAD {
                encoded = encode_response_rope(&Err(Error::new(
                    ErrorKind::InvalidArgument,
                    Subject::Store,
                )
                .with_detail(format!(
                    "the answer ({} bytes) is over the frame limit; read less at once",
                    rope_len(&encoded)
                ))));
            }
            // Small answers of state-changing requests are kept for a resend.
            let keep = keep && rope_len(&encoded) <= KEPT_ANSWER_MAX;
            session.finish(id, &encoded, keep, tx);
            encoded
        }
    };
    let Some(att) = session.attachment() else {
        return;
    };
    let Ok(mut out) = outgoing_rope(FrameType::Response, id, encoded, att.compress) else {
        return;
    };
    let need = out.len().min(window_bytes);
    let have = reserved.num_permits();
    if need <= have {
        drop(reserved.split(have - need));
        out.permits.push(reserved);
    } else {
        // The reserved credit may also belong to an earlier connection (a resumed session):
        // give it back and take the whole size from the connection the answer goes to.
        drop(reserved);
        match att.window.clone().acquire_many_owned(need as u32).await {
            Ok(all) => out.permits.push(all),
            Err(_) => return,
        }
    }
    let _ = att.tx.send(out).await;
}
