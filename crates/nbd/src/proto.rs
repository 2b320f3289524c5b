//! The NBD wire format, as far as rbdx serves it: the fixed newstyle handshake, options and
//! their replies, transmission requests, simple and structured replies.
//!
//! Every number is big-endian. The magic numbers and codes are fixed by the protocol; never
//! change them.
//!
//! ```text
//! handshake (server):  "NBDMAGIC" u64 | "IHAVEOPT" u64 | handshake flags u16
//! handshake (client):  client flags u32
//! option (client):     "IHAVEOPT" u64 | option u32 | length u32 | data
//! option reply:        0x3e889045565a9 u64 | option u32 | reply type u32 | length u32 | data
//! request:             0x25609513 u32 | flags u16 | type u16 | cookie u64 | offset u64
//!                      | length u32 | (write payload)
//! simple reply:        0x67446698 u32 | error u32 | cookie u64 | (read payload)
//! structured chunk:    0x668e33ef u32 | flags u16 | type u16 | cookie u64 | length u32
//!                      | payload
//! ```
//!
//! Parsers here never trust a length: option data is capped at [`MAX_OPTION_DATA`], strings
//! inside options are checked against the data that holds them, and requests are checked by
//! the transmission phase against [`MAX_REQUEST`] and the export size.

use thiserror::Error;

/// `"NBDMAGIC"`, the first thing a server sends. Never change.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`, which starts the newstyle handshake and every option. Never change.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of an option reply. Never change.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request. Never change.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply. Never change.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk. Never change.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can leave out the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// The largest option payload the server reads; larger ones end the connection.
pub const MAX_OPTION_DATA: u32 = 64 << 10;
/// The largest read or write the server accepts (also advertised as the maximum block size).
pub const MAX_REQUEST: u32 = 32 << 20;
/// The name of the one meta context served.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id the server gives `base:allocation` when a client selects it.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Option codes (client to server).
pub mod opt {
    /// Selects an export by name and ends the handshake (oldest form).
    pub const EXPORT_NAME: u32 = 1;
    /// Ends the session.
    pub const ABORT: u32 = 2;
    /// Lists the exports.
    pub const LIST: u32 = 3;
    /// Asks for TLS.
    pub const STARTTLS: u32 = 5;
    /// Describes an export.
    pub const INFO: u32 = 6;
    /// Describes an export and ends the handshake.
    pub const GO: u32 = 7;
    /// Turns on structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// Lists meta contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Selects meta contexts.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types (server to client).
pub mod rep {
    /// The option succeeded (or a list is complete).
    pub const ACK: u32 = 1;
    /// One export of a list.
    pub const SERVER: u32 = 2;
    /// One piece of export information.
    pub const INFO: u32 = 3;
    /// One meta context.
    pub const META_CONTEXT: u32 = 4;
    /// The option is not known.
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    /// The option is forbidden by policy.
    pub const ERR_POLICY: u32 = 0x8000_0002;
    /// The option data is malformed.
    pub const ERR_INVALID: u32 = 0x8000_0003;
    /// The export does not exist.
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = 0x8000_0007;
    /// The option data is too large.
    pub const ERR_TOO_BIG: u32 = 0x8000_0009;
}

/// Information types of `NBD_OPT_INFO` and `NBD_OPT_GO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// The canonical export name.
    pub const NAME: u16 = 1;
    /// A human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags, sent with the export size.
pub mod tflag {
    /// The flags field is meaningful.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is supported.
    pub const SEND_DF: u16 = 1 << 7;
    /// A flush on one connection covers writes on every connection to the export.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Request types.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write.
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Discard (trim).
    pub const TRIM: u16 = 4;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
    /// Block status.
    pub const BLOCK_STATUS: u16 = 7;
}

/// Request flags.
pub mod cmdflag {
    /// Force unit access: the write is durable before the reply.
    pub const FUA: u16 = 1 << 0;
    /// Write-zeroes must leave the range allocated.
    pub const NO_HOLE: u16 = 1 << 1;
    /// A read reply must not be fragmented.
    pub const DF: u16 = 1 << 2;
    /// Block status: one extent is enough.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Write-zeroes must fail at once if it would be slower than a write.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod chunk {
    /// The last chunk of a reply.
    pub const FLAG_DONE: u16 = 1 << 0;
    /// No payload.
    pub const NONE: u16 = 0;
    /// Data at an offset.
    pub const OFFSET_DATA: u16 = 1;
    /// A hole (zeros) at an offset.
    pub const OFFSET_HOLE: u16 = 2;
    /// Block status descriptors of one meta context.
    pub const BLOCK_STATUS: u16 = 5;
    /// An error with a message.
    pub const ERROR: u16 = 0x8001;
}

/// `base:allocation` status bits.
pub mod state {
    /// The extent is not allocated.
    pub const HOLE: u32 = 1 << 0;
    /// The extent reads as zeros.
    pub const ZERO: u32 = 1 << 1;
}

/// Error values of replies (Linux errno numbers, as the protocol fixes them).
pub mod errno {
    /// Operation not permitted (a write to a read-only export).
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left (a write past the end).
    pub const ENOSPC: u32 = 28;
    /// Value too large (a request over the maximum).
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// A protocol violation found while parsing.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// A message started with the wrong magic number.
    #[error("bad magic {found:#x} (expected {expected:#x})")]
    BadMagic {
        /// What the client sent.
        found: u64,
        /// What the protocol requires there.
        expected: u64,
    },
    /// Option data ended before a field it declares.
    #[error("option {option}: data ends inside a field")]
    TruncatedOption {
        /// The option code.
        option: u32,
    },
    /// A string field is not UTF-8.
    #[error("option {option}: a name is not valid UTF-8")]
    NotUtf8 {
        /// The option code.
        option: u32,
    },
    /// Option data has bytes after its last field.
    #[error("option {option}: {extra} bytes after the last field")]
    TrailingOptionData {
        /// The option code.
        option: u32,
        /// How many bytes are left over.
        extra: usize,
    },
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The header of an option: `"IHAVEOPT"`, the code and the data length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code.
    pub option: u32,
    /// Length of the data that follows.
    pub length: u32,
}

impl OptionHeader {
    /// Size of the header on the wire.
    pub const SIZE: usize = 16;

    /// Parses an option header.
    pub fn parse(b: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = be_u64(&b[0..8]);
        if magic != IHAVEOPT {
            return Err(ProtoError::BadMagic {
                found: magic,
                expected: IHAVEOPT,
            });
        }
        Ok(OptionHeader {
            option: be_u32(&b[8..12]),
            length: be_u32(&b[12..16]),
        })
    }
}

/// An option the server understands, with its data parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_INFO` (`go` false) or `NBD_OPT_GO` (`go` true).
    Info {
        /// True for `NBD_OPT_GO`.
        go: bool,
        /// The export name.
        name: String,
        /// The information types asked for.
        requests: Vec<u16>,
    },
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT` (`set` false) or `NBD_OPT_SET_META_CONTEXT` (`set` true).
    MetaContext {
        /// True for `NBD_OPT_SET_META_CONTEXT`.
        set: bool,
        /// The export name.
        export: String,
        /// The queries.
        queries: Vec<String>,
    },
    /// Any other option code (with its data length, for the error reply).
    Other(u32),
}

/// Walks option data field by field.
struct Fields<'a> {
    option: u32,
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.data.len() < n {
            return Err(ProtoError::TruncatedOption {
                option: self.option,
            });
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        self.take(2).map(be_u16)
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        self.take(4).map(be_u32)
    }

    /// A string of `len` bytes.
    fn string(&mut self, len: usize) -> Result<String, ProtoError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::NotUtf8 {
            option: self.option,
        })
    }

    /// A string prefixed by its u32 length.
    fn prefixed_string(&mut self) -> Result<String, ProtoError> {
        let len = self.u32()? as usize;
        self.string(len)
    }

    fn finish(self) -> Result<(), ProtoError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::TrailingOptionData {
                option: self.option,
                extra: self.data.len(),
            })
        }
    }
}

impl ClientOption {
    /// Parses the data of option `option`.
    pub fn parse(option: u32, data: &[u8]) -> Result<Self, ProtoError> {
        let mut f = Fields { option, data };
        let parsed = match option {
            opt::EXPORT_NAME => return f.string(data.len()).map(ClientOption::ExportName),
            opt::ABORT => ClientOption::Abort,
            opt::LIST => ClientOption::List,
            opt::STRUCTURED_REPLY => ClientOption::StructuredReply,
            opt::INFO | opt::GO => {
                let name = f.prefixed_string()?;
                let count = f.u16()?;
                let requests = (0..count).map(|_| f.u16()).collect::<Result<_, _>>()?;
                ClientOption::Info {
                    go: option == opt::GO,
                    name,
                    requests,
                }
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                let export = f.prefixed_string()?;
                let count = f.u32()?;
                let mut queries = Vec::new();
                for _ in 0..count {
                    queries.push(f.prefixed_string()?);
                }
                ClientOption::MetaContext {
                    set: option == opt::SET_META_CONTEXT,
                    export,
                    queries,
                }
            }
            other => return Ok(ClientOption::Other(other)),
        };
        f.finish()?;
        Ok(parsed)
    }
}

/// Encodes an option reply.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The data of an `NBD_REP_INFO` with `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&info::EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// The data of an `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&minimum.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&maximum.to_be_bytes());
    out
}

/// The data of an `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME`, `NBD_INFO_DESCRIPTION`).
pub fn info_string(kind: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The data of an `NBD_REP_SERVER` (one export of a list).
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len() + description.len());
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(description.as_bytes());
    out
}

/// The data of an `NBD_REP_META_CONTEXT`.
pub fn rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A transmission request header (the payload of a write follows it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags ([`cmdflag`]).
    pub flags: u16,
    /// Command type ([`cmd`]).
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

impl Request {
    /// Size of a request header on the wire.
    pub const SIZE: usize = 28;

    /// Parses a request header.
    pub fn parse(b: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = be_u32(&b[0..4]);
        if magic != REQUEST_MAGIC {
            return Err(ProtoError::BadMagic {
                found: magic.into(),
                expected: REQUEST_MAGIC.into(),
            });
        }
        Ok(Request {
            flags: be_u16(&b[4..6]),
            kind: be_u16(&b[6..8]),
            cookie: be_u64(&b[8..16]),
            offset: be_u64(&b[16..24]),
            length: be_u32(&b[24..28]),
        })
    }

    /// Encodes a request header.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// Encodes a simple reply header (read data, if any, follows it).
pub fn simple_reply(cookie: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// Encodes a structured reply chunk header whose payload is `length` bytes.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, length: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// Encodes a whole `NBD_REPLY_TYPE_ERROR` chunk (the last of its reply).
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // The message length is a u16; cut it at a character boundary well inside that.
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message[..end];
    let mut out = Vec::with_capacity(26 + message.len());
    out.extend_from_slice(&chunk_header(
        cookie,
        chunk::FLAG_DONE,
        chunk::ERROR,
        6 + message.len() as u32,
    ));
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// Encodes a whole `NBD_REPLY_TYPE_OFFSET_HOLE` chunk.
pub fn hole_chunk(cookie: u64, flags: u16, offset: u64, length: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..20].copy_from_slice(&chunk_header(cookie, flags, chunk::OFFSET_HOLE, 12));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..32].copy_from_slice(&length.to_be_bytes());
    b
}

/// Encodes a whole `NBD_REPLY_TYPE_BLOCK_STATUS` chunk (the last of its reply) from
/// (length, status flags) descriptors.
pub fn block_status_chunk(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let length = 4 + 8 * extents.len() as u32;
    let mut out = Vec::with_capacity(20 + length as usize);
    out.extend_from_slice(&chunk_header(
        cookie,
        chunk::FLAG_DONE,
        chunk::BLOCK_STATUS,
        length,
    ));
    out.extend_from_slice(&context.to_be_bytes());
    for (len, flags) in extents {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
