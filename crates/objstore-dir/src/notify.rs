//! Notify delivery between processes.
//!
//! Each store handle that watches something listens on an abstract unix socket named after
//! the store id and its session id (`rbdx.<fsid>.<client>`); abstract names need no file, so
//! a crashed process leaves nothing behind and path-length limits do not apply. A notifier
//! reads the watchers of the object from the database, skips sessions whose process is gone,
//! and connects to each remaining watcher, which answers with the watch's reply.
//!
//! Frames (little-endian):
//!
//! ```text
//! +--------+---------+------+-----------------------------------------+----------+
//! | "RBXN" | version | kind | body                                    | crc32c   |
//! | 4 B    | u8 = 1  | u8   |                                         | u32      |
//! +--------+---------+------+-----------------------------------------+----------+
//! kind 1 notify: notify id u64, cookie u64, notifier u64, addr (u32 len + bytes),
//!                payload (u32 len + bytes)
//! kind 2 ack:    notify id u64, cookie u64, reply (u32 len + bytes)
//! kind 3 gone:   notify id u64, cookie u64         (no such watch here)
//! ```
//!
//! The frame is preceded by its length as u32; frames over 17 MiB are refused. The magic and
//! kinds never change; a new layout gets a new version.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{ClientId, ClientInfo, Notification, WatchEvent, limits};
use tokio::sync::{mpsc as tmpsc, oneshot};

const MAGIC: &[u8; 4] = b"RBXN";
const VERSION: u8 = 1;
const MAX_FRAME: usize = limits::MAX_NOTIFY_PAYLOAD + (1 << 20);

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A notification for watch `cookie`.
    Notify {
        /// Notify id.
        id: u64,
        /// Target watch.
        cookie: u64,
        /// The notifier's session.
        notifier: u64,
        /// The notifier's address.
        addr: String,
        /// Payload.
        payload: Bytes,
    },
    /// The watch's answer.
    Ack {
        /// Notify id.
        id: u64,
        /// Answering watch.
        cookie: u64,
        /// Reply.
        reply: Bytes,
    },
    /// No such watch at this session.
    Gone {
        /// Notify id.
        id: u64,
        /// The missing watch.
        cookie: u64,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the fields need.
    #[error("frame is truncated")]
    Truncated,
    /// Wrong magic bytes.
    #[error("frame has wrong magic")]
    BadMagic,
    /// Unknown version.
    #[error("frame has unknown version {0}")]
    BadVersion(u8),
    /// Unknown kind.
    #[error("frame has unknown kind {0}")]
    BadKind(u8),
    /// Checksum mismatch.
    #[error("frame checksum does not match")]
    BadChecksum,
    /// Too large.
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A text field is not UTF-8.
    #[error("frame text is not utf-8")]
    BadText,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl Frame {
    /// Encodes the frame body (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Frame::Notify {
                id,
                cookie,
                notifier,
                addr,
                payload,
            } => {
                out.push(1);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&cookie.to_le_bytes());
                out.extend_from_slice(&notifier.to_le_bytes());
                put_bytes(&mut out, addr.as_bytes());
                put_bytes(&mut out, payload);
            }
            Frame::Ack { id, cookie, reply } => {
                out.push(2);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&cookie.to_le_bytes());
                put_bytes(&mut out, reply);
            }
            Frame::Gone { id, cookie } => {
                out.push(3);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&cookie.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        if bytes.len() < 10 {
            return Err(FrameError::Truncated);
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if &body[..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if body[4] != VERSION {
            return Err(FrameError::BadVersion(body[4]));
        }
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if stored != crc32c::crc32c(body) {
            return Err(FrameError::BadChecksum);
        }
        let mut r = Cursor {
            bytes: body,
            pos: 6,
        };
        match body[5] {
            1 => Ok(Frame::Notify {
                id: r.u64()?,
                cookie: r.u64()?,
                notifier: r.u64()?,
                addr: String::from_utf8(r.bytes()?.to_vec()).map_err(|_| FrameError::BadText)?,
                payload: Bytes::copy_from_slice(r.bytes()?),
            }),
            2 => Ok(Frame::Ack {
                id: r.u64()?,
                cookie: r.u64()?,
                reply: Bytes::copy_from_slice(r.bytes()?),
            }),
            3 => Ok(Frame::Gone {
                id: r.u64()?,
                cookie: r.u64()?,
            }),
            kind => Err(FrameError::BadKind(kind)),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(FrameError::Truncated)?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| FrameError::Truncated)?,
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let b = self.take(4)?;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        self.take(len)
    }
}

fn write_frame(stream: &mut UnixStream, frame: &Frame) -> io::Result<()> {
    let body = frame.encode();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    stream.write_all(&out)
}

fn read_frame(stream: &mut UnixStream) -> io::Result<Frame> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge(len),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Frame::decode(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The abstract socket address of a session.
pub(crate) fn address(fsid: &str, client: u64) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("rbdx.{fsid}.{client}").as_bytes())
}

/// Local watches of one session, by cookie.
pub(crate) type Watches = Arc<Mutex<HashMap<u64, tmpsc::UnboundedSender<WatchEvent>>>>;

/// The listener of one session: a thread that accepts notifier connections and hands each to
/// a short-lived thread that delivers the notification and writes back the answer.
#[derive(Debug)]
pub(crate) struct NotifyServer {
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifyServer {
    /// Starts listening for session `client` of store `fsid`. Watches whose handle is dropped
    /// are reported to `dropped`.
    pub(crate) fn start(
        fsid: &str,
        client: u64,
        watches: Watches,
        dropped: Arc<Mutex<Vec<u64>>>,
    ) -> io::Result<NotifyServer> {
        let addr = address(fsid, client)?;
        let listener = UnixListener::bind_addr(&addr)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rbdx-dir-notify-{client}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    match stream {
                        Ok(stream) => {
                            let watches = watches.clone();
                            let dropped = dropped.clone();
                            let _ = std::thread::Builder::new()
                                .name("rbdx-dir-notify-conn".to_owned())
                                .spawn(move || serve(stream, &watches, &dropped));
                        }
                        Err(e) => {
                            tracing::warn!("notify listener: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })?;
        Ok(NotifyServer {
            stopping,
            addr,
            thread: Some(thread),
        })
    }
}

impl Drop for NotifyServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = UnixStream::connect_addr(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: UnixStream, watches: &Watches, dropped: &Mutex<Vec<u64>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(Frame::Notify {
        id,
        cookie,
        notifier,
        addr,
        payload,
    }) = read_frame(&mut stream)
    else {
        return;
    };
    let sender = watches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&cookie)
        .cloned();
    let (tx, rx) = oneshot::channel();
    let notifier = ClientInfo {
        id: ClientId(notifier),
        addr,
    };
    let delivered = sender.is_some_and(|s| {
        s.send(WatchEvent::Notify(Notification::new(
            id, notifier, payload, tx,
        )))
        .is_ok()
    });
    if !delivered {
        watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cookie);
        dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cookie);
        let _ = write_frame(&mut stream, &Frame::Gone { id, cookie });
        return;
    }
    // Waits for the watch's answer; the notifier closes its end when it stops waiting.
    if let Ok(reply) = rx.blocking_recv() {
        let _ = write_frame(&mut stream, &Frame::Ack { id, cookie, reply });
    }
}

/// What one watcher did with a notification.
#[derive(Debug)]
pub(crate) enum Answer {
    Ack(Bytes),
    Gone,
    TimedOut,
}

/// Sends one notification to session `client`'s watch `cookie` and waits until `deadline`.
pub(crate) fn send(
    fsid: &str,
    client: u64,
    frame: &Frame,
    cookie: u64,
    deadline: Instant,
) -> Answer {
    let attempt = || -> io::Result<Answer> {
        let mut stream = UnixStream::connect_addr(&address(fsid, client)?)?;
        write_frame(&mut stream, frame)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left))?;
        match read_frame(&mut stream)? {
            Frame::Ack {
                cookie: c, reply, ..
            } if c == cookie => Ok(Answer::Ack(reply)),
            Frame::Gone { .. } => Ok(Answer::Gone),
            _ => Ok(Answer::TimedOut),
        }
    };
    match attempt() {
        Ok(answer) => answer,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Answer::Gone,
        Err(_) => Answer::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Notify {
                id: 1,
                cookie: 2,
                notifier: 3,
                addr: "h/pid 4".into(),
                payload: Bytes::from_static(b"p"),
            },
            Frame::Ack {
                id: 1,
                cookie: 2,
                reply: Bytes::from_static(b"r"),
            },
            Frame::Gone { id: 1, cookie: 2 },
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn damaged_frames_are_refused() {
        let mut bytes = Frame::Gone { id: 1, cookie: 2 }.encode();
        assert_eq!(Frame::decode(&bytes[..5]), Err(FrameError::Truncated));
        bytes[7] ^= 0xff;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::BadChecksum));
        let mut bad_magic = Frame::Gone { id: 1, cookie: 2 }.encode();
        bad_magic[0] = b'X';
        assert_eq!(Frame::decode(&bad_magic), Err(FrameError::BadMagic));
    }
}
