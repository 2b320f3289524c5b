//! Frames: the unit of the peer protocol on the wire (inside TLS).
//!
//! Every frame is a 24-byte header and a payload; integers are little-endian:
//!
//! | offset | size | field                                                           |
//! |-------:|-----:|-----------------------------------------------------------------|
//! | 0      | 4    | magic `RBXP`                                                    |
//! | 4      | 1    | protocol version (1)                                            |
//! | 5      | 1    | frame type ([`FrameType`])                                      |
//! | 6      | 1    | flags: bit 0 = payload is zstd-compressed; other bits must be 0 |
//! | 7      | 1    | reserved, 0                                                     |
//! | 8      | 8    | id: the request a frame belongs to (0 for connection frames)    |
//! | 16     | 4    | payload length as sent, at most [`MAX_PAYLOAD`]                 |
//! | 20     | 4    | CRC-32C of bytes 0..20 and the payload as sent                  |
//!
//! A compressed payload is a 4-byte uncompressed length followed by one zstd frame. Anything
//! else (a bad magic, version, type, flag or CRC, a length over the limit) is a protocol
//! error: the receiver closes the connection.

use bytes::{BufMut, Bytes, BytesMut};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RBXP";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The length of a frame header.
pub const HEADER_LEN: usize = 24;
/// The largest payload, compressed or not: a whole 128 MiB object and room for the request
/// around it.
pub const MAX_PAYLOAD: usize = 136 << 20;
/// Payloads shorter than this are never compressed.
const COMPRESS_MIN: usize = 512;
/// The flag bit of a compressed payload.
const FLAG_ZSTD: u8 = 1;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client → gateway: versions, key name, nonce, session to resume.
    Hello = 1,
    /// Gateway → client: the chosen version and the gateway's nonce.
    Challenge = 2,
    /// Client → gateway: the proof of the key's secret.
    Auth = 3,
    /// Gateway → client: the gateway's proof, the session and its limits.
    Welcome = 4,
    /// Client → gateway: one object-store call; the id names it.
    Request = 5,
    /// Gateway → client: the answer to the request with the same id.
    Response = 6,
    /// Gateway → client: something happened to a watch (a notify, a lost watch).
    Event = 7,
    /// Client → gateway: the answer to a notify delivered by an event.
    NotifyAck = 8,
    /// Either way: are you there?
    Ping = 9,
    /// Either way: the answer to a ping with the same id.
    Pong = 10,
    /// Either way: a fatal error; the sender closes the connection after it.
    Error = 11,
    /// Client → gateway: the session ends now (not kept for a reconnect).
    Bye = 12,
}

impl FrameType {
    /// Returns the frame type with code `code` in protocol version 1.
    pub fn from_code(code: u8) -> Option<FrameType> {
        Some(match code {
            1 => FrameType::Hello,
            2 => FrameType::Challenge,
            3 => FrameType::Auth,
            4 => FrameType::Welcome,
            5 => FrameType::Request,
            6 => FrameType::Response,
            7 => FrameType::Event,
            8 => FrameType::NotifyAck,
            9 => FrameType::Ping,
            10 => FrameType::Pong,
            11 => FrameType::Error,
            12 => FrameType::Bye,
            _ => return None,
        })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameType,
    /// The request it belongs to, or 0.
    pub id: u64,
    /// The payload, uncompressed.
    pub payload: Bytes,
}

impl Frame {
    /// Returns a frame of `kind` for request `id`.
    pub fn new(kind: FrameType, id: u64, payload: impl Into<Bytes>) -> Frame {
        Frame {
            kind,
            id,
            payload: payload.into(),
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

fn bad(what: impl Into<String>) -> FrameError {
    FrameError(what.into())
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub kind: FrameType,
    /// Whether the payload is compressed.
    pub compressed: bool,
    /// Request id.
    pub id: u64,
    /// Payload length as sent.
    pub len: usize,
    crc: u32,
}

impl Header {
    /// Checks a header; `version` is the protocol version the connection speaks.
    pub fn parse(bytes: &[u8; HEADER_LEN], version: u8) -> Result<Header, FrameError> {
        if bytes[0..4] != MAGIC {
            return Err(bad(format!(
                "not a peer-protocol frame (starts with {:02x?})",
                &bytes[0..4]
            )));
        }
        if bytes[4] != version {
            return Err(bad(format!(
                "frame of protocol version {} on a version {version} connection",
                bytes[4]
            )));
        }
        let kind = FrameType::from_code(bytes[5])
            .ok_or_else(|| bad(format!("unknown frame type {}", bytes[5])))?;
        let flags = bytes[6];
        if flags & !FLAG_ZSTD != 0 || bytes[7] != 0 {
            return Err(bad(format!(
                "unknown frame flags {flags:#04x}/{}",
                bytes[7]
            )));
        }
        let id = u64::from_le_bytes(le8(&bytes[8..16]));
        let len = u32::from_le_bytes(le4(&bytes[16..20])) as usize;
        if len > MAX_PAYLOAD {
            return Err(bad(format!(
                "frame payload of {len} bytes is over the limit of {MAX_PAYLOAD}"
            )));
        }
        Ok(Header {
            kind,
            compressed: flags & FLAG_ZSTD != 0,
            id,
            len,
            crc: u32::from_le_bytes(le4(&bytes[20..24])),
        })
    }

    /// Checks the payload against the header's CRC and decompresses it.
    pub fn finish(&self, head: &[u8; HEADER_LEN], payload: Bytes) -> Result<Frame, FrameError> {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..20]), &payload);
        if crc != self.crc {
            return Err(bad(format!(
                "frame CRC mismatch (header {:#010x}, computed {crc:#010x})",
                self.crc
            )));
        }
        let payload = if self.compressed {
            decompress(&payload)?
        } else {
            payload
        };
        Ok(Frame {
            kind: self.kind,
            id: self.id,
            payload,
        })
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(&b[..4]);
    out
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// Returns the uncompressed length a compressed payload claims (0 if it is too short).
pub fn claimed_len(payload: &[u8]) -> usize {
    payload
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes(le4(b)) as usize)
}

fn decompress(payload: &[u8]) -> Result<Bytes, FrameError> {
    if payload.len() < 4 {
        return Err(bad("compressed payload shorter than its length field"));
    }
    let raw_len = u32::from_le_bytes(le4(payload)) as usize;
    if raw_len > MAX_PAYLOAD {
        return Err(bad(format!(
            "compressed payload claims {raw_len} bytes, over the limit"
        )));
    }
    let raw = zstd::bulk::decompress(&payload[4..], raw_len)
        .map_err(|e| bad(format!("compressed payload does not decompress: {e}")))?;
    if raw.len() != raw_len {
        return Err(bad(format!(
            "compressed payload holds {} bytes, its length field says {raw_len}",
            raw.len()
        )));
    }
    Ok(Bytes::from(raw))
}

/// Encodes `frame` (header and payload) for the wire in one buffer, compressing the payload
/// if `compress` is set and that makes it smaller.
pub fn encode(frame: &Frame, compress: bool) -> Result<BytesMut, FrameError> {
    let rope = encode_rope(frame.kind, frame.id, vec![frame.payload.clone()], compress)?;
    let mut out = BytesMut::with_capacity(rope.iter().map(Bytes::len).sum());
    for chunk in rope {
        out.put_slice(&chunk);
    }
    Ok(out)
}

/// Encodes a frame whose payload is the chunks of `payload`: the header, then the chunks
/// themselves (uncopied unless compressed).
pub fn encode_rope(
    kind: FrameType,
    id: u64,
    mut payload: Vec<Bytes>,
    compress: bool,
) -> Result<Vec<Bytes>, FrameError> {
    let len: usize = payload.iter().map(Bytes::len).sum();
    let mut flags = 0;
    if compress && len >= COMPRESS_MIN {
        let raw_len = u32::try_from(len).map_err(|_| bad("payload too large"))?;
        let whole: Vec<u8> = payload.concat();
        if let Ok(packed) = zstd::bulk::compress(&whole, 1)
            && packed.len() + 4 < len
        {
            let mut out = Vec::with_capacity(packed.len() + 4);
            out.extend_from_slice(&raw_len.to_le_bytes());
            out.extend_from_slice(&packed);
            payload = vec![Bytes::from(out)];
            flags = FLAG_ZSTD;
        }
    }
    let body_len: usize = payload.iter().map(Bytes::len).sum();
    if body_len > MAX_PAYLOAD {
        return Err(bad(format!(
            "a {body_len} byte payload is over the frame limit of {MAX_PAYLOAD}"
        )));
    }
    let mut head = BytesMut::with_capacity(HEADER_LEN);
    head.put_slice(&MAGIC);
    head.put_u8(VERSION);
    head.put_u8(kind as u8);
    head.put_u8(flags);
    head.put_u8(0);
    head.put_u64_le(id);
    head.put_u32_le(body_len as u32);
    let crc = payload
        .iter()
        .fold(crc32c::crc32c(&head[..20]), |crc, chunk| {
            crc32c::crc32c_append(crc, chunk)
        });
    head.put_u32_le(crc);
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(head.freeze());
    out.extend(payload.into_iter().filter(|c| !c.is_empty()));
    Ok(out)
}

/// Decodes one whole frame from `bytes` (a header and exactly its payload): what the fuzz
/// target and tests feed.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("truncated frame header"))?;
    let header = Header::parse(head, VERSION)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != header.len {
        return Err(bad(format!(
            "frame holds {} payload bytes, its header says {}",
            payload.len(),
            header.len
        )));
    }
    header.finish(head, Bytes::copy_from_slice(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_plain_and_compressed() {
        for compress in [false, true] {
            let frame = Frame::new(FrameType::Request, 7, vec![b'a'; 4096]);
            let wire = encode(&frame, compress).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(wire[6] & FLAG_ZSTD != 0, compress);
            assert_eq!(decode(&wire), Ok(frame));
        }
    }

    #[test]
    fn damaged_frames_are_refused() {
        let frame = Frame::new(FrameType::Ping, 1, &b"x"[..]);
        let wire = encode(&frame, false).unwrap_or_else(|e| panic!("{e}"));
        let mut flipped = wire.to_vec();
        flipped[HEADER_LEN] ^= 1;
        assert!(decode(&flipped).is_err_and(|e| e.0.contains("CRC")));
        let mut version = wire.to_vec();
        version[4] = 2;
        assert!(decode(&version).is_err_and(|e| e.0.contains("version 2")));
        assert!(decode(&wire[..10]).is_err());
        let mut long = wire.to_vec();
        long[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&long).is_err_and(|e| e.0.contains("over the limit")));
    }
}
