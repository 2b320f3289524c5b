//! The `nbd` stream: `{"type": "nbd", "uri": "nbd://host[:port]/export"}` or
//! `"nbd+unix:///export?socket=/path"`, as in recent Ceph, for sources served by `qemu-nbd`.
//!
//! A small NBD client: fixed newstyle handshake, structured replies, the `base:allocation`
//! meta context (so holes and zeros are reported as zero extents), `NBD_OPT_GO` (an unknown
//! export is a clear error), then `READ` and `BLOCK_STATUS` requests on one connection, one
//! at a time (qemu-nbd serves one client by default).

#![warn(missing_docs, missing_debug_implementations)]

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_source::extent::normalize;
use rbdx_source::{
    Error, ErrorKind, Extent, ExtentKind, OpenContext, Result, SpecReader, Stream, StreamFactory,
    StreamRegistration, check_range,
};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Mutex;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_SET_META_CONTEXT: u32 = 10;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const INFO_EXPORT: u16 = 0;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
const CMD_READ: u16 = 0;
const CMD_DISC: u16 = 2;
const CMD_BLOCK_STATUS: u16 = 7;
const REPLY_FLAG_DONE: u16 = 1;
const CHUNK_OFFSET_DATA: u16 = 1;
const CHUNK_BLOCK_STATUS: u16 = 5;
const STATE_ZERO: u32 = 2;
/// Internal chunk kind: the data of a simple reply (no offset prefix).
const SIMPLE_DATA: u16 = u16::MAX;
/// The largest single request (qemu-nbd's limit is 32 MiB).
const MAX_REQUEST: u64 = 32 << 20;

/// Where an NBD export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host and port.
    Tcp(String, u16),
    /// A unix socket path.
    Unix(String),
}

/// Parses `nbd://host[:port]/export` and `nbd+unix:///export?socket=PATH`.
pub fn parse_uri(uri: &str) -> Result<(Address, String)> {
    let bad = |why: &str| Error::invalid(format!("invalid NBD URI '{uri}': {why}"));
    if let Some(rest) = uri.strip_prefix("nbd+unix://") {
        let (path, query) = rest
            .split_once('?')
            .ok_or_else(|| bad("missing ?socket=PATH"))?;
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .ok_or_else(|| bad("missing socket="))?;
        let export = path.trim_start_matches('/').to_owned();
        return Ok((Address::Unix(socket.to_owned()), export));
    }
    let rest = uri
        .strip_prefix("nbd://")
        .ok_or_else(|| bad("expected nbd:// or nbd+unix://"))?;
    let (authority, export) = match rest.split_once('/') {
        Some((a, e)) => (a, e.to_owned()),
        None => (rest, String::new()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => (authority, 10809),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    Ok((Address::Tcp(host.to_owned(), port), export))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

#[derive(Debug)]
struct Conn {
    io: Box<dyn Io>,
    next_handle: u64,
    meta_context: Option<u32>,
    state: State,
}

/// Where the connection's byte stream is, so that a request whose caller went away (a
/// dropped read future) never leaves its reply to be taken for the next request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Ready,
    /// A request's replies are still to come, at a chunk boundary: read and drop them first.
    Pending {
        /// The request.
        handle: u64,
        /// The data length of a simple reply to it.
        simple_len: usize,
    },
    /// Cut in the middle of a message: only a new connection is usable.
    Broken,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("nbd: {what}"), e)
}

async fn send_option(io: &mut Box<dyn Io>, option: u32, data: &[u8]) -> Result<()> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    io.write_all(&msg)
        .await
        .map_err(io_err("sending an option"))
}

/// Reads one option reply: (type, data).
async fn option_reply(io: &mut Box<dyn Io>, option: u32) -> Result<(u32, Vec<u8>)> {
    let mut head = [0u8; 20];
    io.read_exact(&mut head)
        .await
        .map_err(io_err("reading an option reply"))?;
    let magic = u64::from_be_bytes(head[0..8].try_into().unwrap_or_default());
    let opt = u32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
    let kind = u32::from_be_bytes(head[12..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default());
    if magic != OPT_REPLY_MAGIC || opt != option {
        return Err(Error::invalid("nbd: malformed option reply"));
    }
    if len > 1 << 20 {
        return Err(Error::invalid(format!("nbd: option reply of {len} bytes")));
    }
    let mut data = vec![0u8; len as usize];
    io.read_exact(&mut data)
        .await
        .map_err(io_err("reading an option reply"))?;
    Ok((kind, data))
}

fn option_error(kind: u32, data: &[u8], what: &str) -> Error {
    let msg = String::from_utf8_lossy(data);
    let errkind = match kind & 0x7fff_ffff {
        6 => ErrorKind::NotFound,
        1 => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    };
    Error::new(
        errkind,
        format!(
            "nbd: the server refused {what} (error {}): {msg}",
            kind & 0x7fff_ffff
        ),
    )
}

impl Conn {
    async fn connect(address: &Address, export: &str) -> Result<(Conn, u64)> {
        let mut io: Box<dyn Io> = match address {
            Address::Tcp(host, port) => Box::new(
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| Error::io(format!("nbd: cannot connect to {host}:{port}"), e))?,
            ),
            Address::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Error::io(format!("nbd: cannot connect to {path}"), e))?,
            ),
        };
        let mut hello = [0u8; 18];
        io.read_exact(&mut hello)
            .await
            .map_err(io_err("reading the greeting"))?;
        if u64::from_be_bytes(hello[0..8].try_into().unwrap_or_default()) != NBDMAGIC
            || u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default()) != IHAVEOPT
        {
            return Err(Error::unsupported(
                "nbd: the server does not speak newstyle NBD",
            ));
        }
        let flags = u16::from_be_bytes([hello[16], hello[17]]);
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(Error::unsupported(
                "nbd: the server does not speak fixed newstyle NBD",
            ));
        }
        let client_flags = u32::from(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES));
        io.write_all(&client_flags.to_be_bytes())
            .await
            .map_err(io_err("sending flags"))?;

        send_option(&mut io, OPT_STRUCTURED_REPLY, &[]).await?;
        let (kind, _) = option_reply(&mut io, OPT_STRUCTURED_REPLY).await?;
        let structured = kind == REP_ACK;

        let mut meta_context = None;
        if structured {
            let ctx = b"base:allocation";
            let mut data = Vec::new();
            data.extend_from_slice(&(export.len() as u32).to_be_bytes());
            data.extend_from_slice(export.as_bytes());
            data.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
            data.extend_from_slice(ctx);
            send_option(&mut io, OPT_SET_META_CONTEXT, &data).await?;
            loop {
                let (kind, data) = option_reply(&mut io, OPT_SET_META_CONTEXT).await?;
                match kind {
                    REP_META_CONTEXT if data.len() >= 4 => {
                        meta_context = Some(u32::from_be_bytes(
                            data[0..4].try_into().unwrap_or_default(),
                        ));
                    }
                    REP_ACK => break,
                    k if k & 0x8000_0000 != 0 => break,
                    _ => {}
                }
            }
        }

        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        send_option(&mut io, OPT_GO, &data).await?;
        let mut size = None;
        loop {
            let (kind, data) = option_reply(&mut io, OPT_GO).await?;
            match kind {
                REP_INFO
                    if data.len() >= 12
                        && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT =>
                {
                    size = Some(u64::from_be_bytes(
                        data[2..10].try_into().unwrap_or_default(),
                    ));
                }
                REP_ACK => break,
                k if k & 0x8000_0000 != 0 => {
                    return Err(option_error(k, &data, &format!("export '{export}'")));
                }
                _ => {}
            }
        }
        let size =
            size.ok_or_else(|| Error::invalid("nbd: the server did not give the export size"))?;
        Ok((
            Conn {
                io,
                next_handle: 1,
                meta_context: if structured { meta_context } else { None },
                state: State::Ready,
            },
            size,
        ))
    }

    /// Sends a request; its replies must then be read with [`Conn::replies`].
    async fn request(&mut self, cmd: u16, offset: u64, length: u32) -> Result<u64> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let mut msg = Vec::with_capacity(28);
        msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg.extend_from_slice(&0u16.to_be_bytes());
        msg.extend_from_slice(&cmd.to_be_bytes());
        msg.extend_from_slice(&handle.to_be_bytes());
        msg.extend_from_slice(&offset.to_be_bytes());
        msg.extend_from_slice(&length.to_be_bytes());
        self.state = State::Broken;
        self.io
            .write_all(&msg)
            .await
            .map_err(io_err("sending a request"))?;
        self.state = State::Pending {
            handle,
            simple_len: if cmd == CMD_READ { length as usize } else { 0 },
        };
        Ok(handle)
    }

    /// Makes the connection ready for a request: reads and drops the replies of a request
    /// whose caller went away, or connects again if a message was cut.
    async fn ready(&mut self, address: &Address, export: &str) -> Result<()> {
        if let State::Pending { handle, simple_len } = self.state {
            // The abandoned request's own failure does not concern the next one.
            let drained = self.replies(handle, simple_len, |_, _| Ok(())).await;
            if drained.is_err() && self.state != State::Ready {
                self.state = State::Broken;
            }
        }
        if self.state == State::Broken {
            // Close the cut connection first: a server that takes one client at a time
            // would never answer the new one otherwise.
            let _ = self.io.shutdown().await;
            self.io = Box::new(tokio::io::duplex(1).0);
            let (conn, _) = Conn::connect(address, export).await?;
            *self = conn;
        }
        Ok(())
    }

    /// Reads the replies to one request, handing each structured chunk (type, payload) or
    /// the simple reply's data to `on_chunk`.
    async fn replies(
        &mut self,
        handle: u64,
        simple_len: usize,
        mut on_chunk: impl FnMut(u16, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let pending = self.state;
        loop {
            self.state = State::Broken;
            let mut magic = [0u8; 4];
            self.io
                .read_exact(&mut magic)
                .await
                .map_err(io_err("reading a reply"))?;
            match u32::from_be_bytes(magic) {
                SIMPLE_REPLY_MAGIC => {
                    let mut rest = [0u8; 12];
                    self.io
                        .read_exact(&mut rest)
                        .await
                        .map_err(io_err("reading a reply"))?;
                    let error = u32::from_be_bytes(rest[0..4].try_into().unwrap_or_default());
                    if u64::from_be_bytes(rest[4..12].try_into().unwrap_or_default()) != handle {
                        return Err(Error::invalid("nbd: reply for an unknown request"));
                    }
                    if error != 0 {
                        // A simple error reply carries no data.
                        self.state = State::Ready;
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("nbd: the server failed a request (errno {error})"),
                        ));
                    }
                    let mut data = vec![0u8; simple_len];
                    self.io
                        .read_exact(&mut data)
                        .await
                        .map_err(io_err("reading data"))?;
                    self.state = State::Ready;
                    return on_chunk(SIMPLE_DATA, data);
                }
                STRUCTURED_REPLY_MAGIC => {
                    let mut rest = [0u8; 16];
                    self.io
                        .read_exact(&mut rest)
                        .await
                        .map_err(io_err("reading a reply"))?;
                    let flags = u16::from_be_bytes([rest[0], rest[1]]);
                    let kind = u16::from_be_bytes([rest[2], rest[3]]);
                    let len = u32::from_be_bytes(rest[12..16].try_into().unwrap_or_default());
                    if u64::from_be_bytes(rest[4..12].try_into().unwrap_or_default()) != handle {
                        return Err(Error::invalid("nbd: reply for an unknown request"));
                    }
                    if u64::from(len) > MAX_REQUEST + 64 {
                        return Err(Error::invalid(format!("nbd: reply chunk of {len} bytes")));
                    }
                    let mut payload = vec![0u8; len as usize];
                    self.io
                        .read_exact(&mut payload)
                        .await
                        .map_err(io_err("reading a reply"))?;
                    self.state = if flags & REPLY_FLAG_DONE != 0 {
                        State::Ready
                    } else {
                        pending
                    };
                    if kind & 0x8000 != 0 {
                        let errno = payload
                            .get(0..4)
                            .map_or(5, |b| u32::from_be_bytes(b.try_into().unwrap_or_default()));
                        let msg = payload
                            .get(6..)
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("nbd: the server failed a request (errno {errno}): {msg}"),
                        ));
                    }
                    on_chunk(kind, payload)?;
                    if flags & REPLY_FLAG_DONE != 0 {
                        return Ok(());
                    }
                }
                other => return Err(Error::invalid(format!("nbd: bad reply magic {other:#x}"))),
            }
        }
    }
}

/// An NBD export.
#[derive(Debug)]
pub struct NbdStream {
    uri: String,
    address: Address,
    export: String,
    size: u64,
    conn: Mutex<Conn>,
}

impl NbdStream {
    /// Connects to `uri`.
    pub async fn open(uri: &str) -> Result<NbdStream> {
        let (address, export) = parse_uri(uri)?;
        let (conn, size) = Conn::connect(&address, &export).await?;
        Ok(NbdStream {
            uri: uri.to_owned(),
            address,
            export,
            size,
            conn: Mutex::new(conn),
        })
    }
}

/// Opens `nbd` streams.
#[derive(Debug)]
pub struct NbdStreamFactory;

rbdx_source::inventory::submit! { StreamRegistration(&NbdStreamFactory) }

#[async_trait]
impl StreamFactory for NbdStreamFactory {
    fn name(&self) -> &'static str {
        "nbd"
    }

    async fn open(&self, spec: &Map<String, Value>, _ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        let mut r = SpecReader::new(spec, "nbd stream");
        let uri = r.str("uri")?;
        r.finish()?;
        Ok(Box::new(NbdStream::open(&uri).await?))
    }
}

#[async_trait]
impl Stream for NbdStream {
    fn describe(&self) -> String {
        format!("nbd export {}", self.uri)
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        check_range(self, offset, length, self.size)?;
        let mut out = vec![0u8; length as usize];
        let mut conn = self.conn.lock().await;
        conn.ready(&self.address, &self.export).await?;
        let mut done = 0u64;
        while done < length {
            let n = (length - done).min(MAX_REQUEST);
            let base = offset + done;
            let handle = conn.request(CMD_READ, base, n as u32).await?;
            let window = &mut out[done as usize..(done + n) as usize];
            conn.replies(handle, n as usize, |kind, payload| {
                let (at, data) = match kind {
                    SIMPLE_DATA => (0usize, &payload[..]),
                    CHUNK_OFFSET_DATA if payload.len() >= 8 => {
                        let off = u64::from_be_bytes(payload[0..8].try_into().unwrap_or_default());
                        if off < base {
                            return Err(Error::invalid("nbd: data chunk outside the request"));
                        }
                        ((off - base) as usize, &payload[8..])
                    }
                    // Holes are already zeros in the buffer.
                    _ => return Ok(()),
                };
                let end = at + data.len();
                if end > window.len() {
                    return Err(Error::invalid("nbd: data chunk outside the request"));
                }
                window[at..end].copy_from_slice(data);
                Ok(())
            })
            .await?;
            done += n;
        }
        Ok(Bytes::from(out))
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        check_range(self, offset, length, self.size)?;
        let mut conn = self.conn.lock().await;
        conn.ready(&self.address, &self.export).await?;
        let Some(context) = conn.meta_context else {
            return Ok(vec![Extent::data(offset, length)]);
        };
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + length;
        while pos < end {
            let n = (end - pos).min(1 << 30);
            let handle = conn.request(CMD_BLOCK_STATUS, pos, n as u32).await?;
            let mut reached = pos;
            conn.replies(handle, 0, |kind, payload| {
                if kind == CHUNK_BLOCK_STATUS && payload.len() >= 4 {
                    let id = u32::from_be_bytes(payload[0..4].try_into().unwrap_or_default());
                    if id == context {
                        for d in payload[4..].chunks_exact(8) {
                            let len = u64::from(u32::from_be_bytes(
                                d[0..4].try_into().unwrap_or_default(),
                            ));
                            let flags = u32::from_be_bytes(d[4..8].try_into().unwrap_or_default());
                            let kind = if flags & STATE_ZERO != 0 {
                                ExtentKind::Zero
                            } else {
                                ExtentKind::Data
                            };
                            out.push(Extent {
                                offset: reached,
                                length: len,
                                kind,
                            });
                            reached += len;
                        }
                    }
                }
                Ok(())
            })
            .await?;
            if reached <= pos {
                // The server described nothing: count the rest as data.
                out.push(Extent::data(pos, end - pos));
                break;
            }
            pos = reached;
        }
        Ok(normalize(out, offset, length, ExtentKind::Data))
    }
}

impl Drop for NbdStream {
    fn drop(&mut self) {
        // Say goodbye if the connection is free; the server copes with a plain close too.
        if let Ok(mut conn) = self.conn.try_lock() {
            let mut msg = Vec::with_capacity(28);
            msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
            msg.extend_from_slice(&0u16.to_be_bytes());
            msg.extend_from_slice(&CMD_DISC.to_be_bytes());
            msg.extend_from_slice(&[0u8; 20]);
            let _ = futures_lite_write(&mut conn.io, &msg);
        }
    }
}

/// Writes without waiting (best effort, from a destructor).
fn futures_lite_write(io: &mut Box<dyn Io>, msg: &[u8]) -> std::io::Result<()> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(io.as_mut()).poll_write(&mut cx, msg) {
        std::task::Poll::Ready(r) => r.map(|_| ()),
        std::task::Poll::Pending => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_as_ceph_and_libnbd_write_them() {
        assert_eq!(
            parse_uri("nbd://").unwrap(),
            (Address::Tcp("localhost".into(), 10809), String::new())
        );
        assert_eq!(
            parse_uri("nbd://h:1234/exp").unwrap(),
            (Address::Tcp("h".into(), 1234), "exp".into())
        );
        assert_eq!(
            parse_uri("nbd+unix:///exp?socket=/run/s.sock").unwrap(),
            (Address::Unix("/run/s.sock".into()), "exp".into())
        );
        assert!(parse_uri("").is_err());
        assert!(parse_uri("foo.example.com").is_err());
        assert!(parse_uri("nbd+unix:///x").is_err());
    }
}
