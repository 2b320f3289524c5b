//! Moving frames over a byte stream: a reader that checks each frame as it arrives, and a
//! writer task that sends queued frames in order, paced by an optional bandwidth limit, and
//! gives back the flow-control credit of each frame once it is on the wire.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use crate::frame::{self, Frame, FrameError, FrameType, HEADER_LEN, Header};

/// Why a connection stopped.
#[derive(Debug)]
pub enum ConnError {
    /// The other side closed the stream between frames.
    Closed,
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The bytes are not valid frames.
    Frame(FrameError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed => f.write_str("connection closed by the other side"),
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Frame(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for ConnError {}

/// The largest handshake frame (`Hello`, `Challenge`, `Auth`, `Welcome`, `Error`).
pub const HANDSHAKE_MAX: usize = 4 << 10;

/// Reads frames from `io`.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    max_len: usize,
    compressed: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `io`, at first only small uncompressed frames (the handshake).
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            max_len: HANDSHAKE_MAX,
            compressed: false,
        }
    }

    /// After the handshake: frames up to the protocol's limit, compressed ones if that was
    /// negotiated.
    pub fn open(&mut self, compressed: bool) {
        self.max_len = frame::MAX_PAYLOAD;
        self.compressed = compressed;
    }

    /// Reads the next frame's header (`Closed` at a clean end of stream).
    pub async fn header(&mut self) -> Result<(Header, [u8; HEADER_LEN]), ConnError> {
        let mut head = [0u8; HEADER_LEN];
        let first = self.io.read(&mut head).await.map_err(ConnError::Io)?;
        if first == 0 {
            return Err(ConnError::Closed);
        }
        if first < HEADER_LEN {
            self.io
                .read_exact(&mut head[first..])
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        ConnError::Frame(FrameError("truncated frame header".into()))
                    }
                    _ => ConnError::Io(e),
                })?;
        }
        let header = Header::parse(&head, frame::VERSION).map_err(ConnError::Frame)?;
        if header.len > self.max_len {
            return Err(ConnError::Frame(FrameError(format!(
                "a {} byte {:?} frame is over the limit of {} here",
                header.len, header.kind, self.max_len
            ))));
        }
        if header.compressed && !self.compressed {
            return Err(ConnError::Frame(FrameError(
                "a compressed frame on a connection that did not negotiate compression".into(),
            )));
        }
        Ok((header, head))
    }

    /// Reads the payload that `header` announced and checks it.
    pub async fn payload(
        &mut self,
        header: &Header,
        head: &[u8; HEADER_LEN],
    ) -> Result<Frame, ConnError> {
        let raw = self.raw_payload(header).await?;
        header.finish(head, raw).map_err(ConnError::Frame)
    }

    /// Reads the payload that `header` announced as sent (compressed or not), unchecked.
    pub async fn raw_payload(&mut self, header: &Header) -> Result<bytes::Bytes, ConnError> {
        // Read into spare capacity (no zeroing first), never past this frame.
        let mut payload = BytesMut::with_capacity(header.len);
        while payload.len() < header.len {
            let left = (header.len - payload.len()) as u64;
            let n = (&mut self.io)
                .take(left)
                .read_buf(&mut payload)
                .await
                .map_err(ConnError::Io)?;
            if n == 0 {
                return Err(ConnError::Frame(FrameError(
                    "truncated frame payload".into(),
                )));
            }
        }
        Ok(payload.freeze())
    }

    /// Reads the next whole frame.
    pub async fn next(&mut self) -> Result<Frame, ConnError> {
        let (header, head) = self.header().await?;
        self.payload(&header, &head).await
    }
}

/// Paces writes to at most `rate` bytes per second, with a burst of a quarter second.
#[derive(Debug)]
pub struct Pacer {
    rate: u64,
    credit: f64,
    last: Instant,
}

impl Pacer {
    /// Paces at `rate` bytes per second.
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            rate: rate.max(1),
            credit: 0.0,
            last: Instant::now(),
        }
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn take(&mut self, n: usize) {
        let rate = self.rate as f64;
        let now = Instant::now();
        let burst = rate / 4.0;
        self.credit = (self.credit + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        self.credit -= n as f64;
        if self.credit < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.credit / rate)).await;
        }
    }
}

/// One frame queued for sending and the credit it holds until it is written.
#[derive(Debug)]
pub struct Outgoing {
    /// The encoded frame, in chunks.
    pub chunks: Vec<Bytes>,
    /// Flow-control credit given back once the frame is written.
    pub permits: Vec<OwnedSemaphorePermit>,
    /// Close the stream after this frame.
    pub last: bool,
}

impl Outgoing {
    /// Returns the frame's length on the wire.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// Returns true for an empty frame (never sent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes `frame` for sending.
pub fn outgoing(frame: &Frame, compress: bool) -> Result<Outgoing, FrameError> {
    outgoing_rope(frame.kind, frame.id, vec![frame.payload.clone()], compress)
}

/// Encodes a frame whose payload is in chunks, for sending.
pub fn outgoing_rope(
    kind: FrameType,
    id: u64,
    payload: Vec<Bytes>,
    compress: bool,
) -> Result<Outgoing, FrameError> {
    Ok(Outgoing {
        chunks: frame::encode_rope(kind, id, payload, compress)?,
        permits: Vec::new(),
        last: false,
    })
}

/// Writes queued frames to `io` until the queue closes, a frame marked last is written, or a
/// write fails; then shuts the stream down.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut queue: mpsc::Receiver<Outgoing>,
    bandwidth: Option<u64>,
) -> Result<(), std::io::Error> {
    let mut pacer = bandwidth.map(Pacer::new);
    while let Some(out) = queue.recv().await {
        if let Some(p) = pacer.as_mut() {
            p.take(out.len()).await;
        }
        for chunk in &out.chunks {
            io.write_all(chunk).await?;
        }
        // Flush when nothing else is queued, so that frames batch into TLS records.
        if queue.is_empty() {
            io.flush().await?;
        }
        drop(out.permits);
        if out.last {
            break;
        }
    }
    io.flush().await?;
    io.shutdown().await
}
