//! Entry framing: how one journal entry sits in a data object.
//!
//! ```text
//! 0         8          16          24        28          28 + n
//! | magic   | tag tid  | entry tid | n (le32) | data (n)  | crc32c (le32) of bytes 0..28+n |
//! ```
//!
//! All integers are little-endian. The magic is `RBDXJRN1`; never change it (a new layout
//! gets a new magic). An object holds entries back to back. A reader stops at the first frame
//! that is cut short, has a bad magic or a bad checksum: a torn tail, left by a writer that
//! died mid-append, is ignored, and nothing after it in that object counts.

use bytes::{BufMut as _, Bytes, BytesMut};

/// Magic of an entry frame. Never change.
pub const MAGIC: &[u8; 8] = b"RBDXJRN1";
/// Bytes of a frame besides its data.
pub const OVERHEAD: usize = 32;
/// The largest entry data accepted (a write is split into entries below this).
pub const MAX_DATA: usize = 16 << 20;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The tag the entry was written under (which site owned the image).
    pub tag_tid: u64,
    /// The entry's id, increasing across the journal.
    pub entry_tid: u64,
    /// The encoded event.
    pub data: Bytes,
}

impl Entry {
    /// Appends the frame of this entry to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let start = out.len();
        out.reserve(OVERHEAD + self.data.len());
        out.put_slice(MAGIC);
        out.put_u64_le(self.tag_tid);
        out.put_u64_le(self.entry_tid);
        out.put_u32_le(self.data.len() as u32);
        out.put_slice(&self.data);
        let crc = crc32c::crc32c(&out[start..]);
        out.put_u32_le(crc);
    }

    /// Returns the frame of this entry.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }
}

/// The entries of one object, and whether a torn tail followed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The whole entries, in object order.
    pub entries: Vec<Entry>,
    /// Bytes of whole entries (where the next append goes).
    pub valid_len: usize,
    /// True if bytes after the last whole entry did not form one.
    pub torn: bool,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Parses the entries of an object's bytes, stopping at the first bad frame.
pub fn parse(bytes: &Bytes) -> Parsed {
    let mut out = Parsed::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < OVERHEAD || &rest[..8] != MAGIC {
            out.torn = true;
            break;
        }
        let len = le32(&rest[24..28]) as usize;
        if len > MAX_DATA || rest.len() < OVERHEAD + len {
            out.torn = true;
            break;
        }
        let crc = le32(&rest[28 + len..32 + len]);
        if crc32c::crc32c(&rest[..28 + len]) != crc {
            out.torn = true;
            break;
        }
        out.entries.push(Entry {
            tag_tid: le64(&rest[8..16]),
            entry_tid: le64(&rest[16..24]),
            data: bytes.slice(at + 28..at + 28 + len),
        });
        at += OVERHEAD + len;
        out.valid_len = at;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tid: u64, data: &'static [u8]) -> Entry {
        Entry {
            tag_tid: 3,
            entry_tid: tid,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn frame_matches_the_documented_layout() {
        let b = entry(7, b"xy").encode();
        assert_eq!(&b[..8], b"RBDXJRN1");
        assert_eq!(&b[8..16], &3u64.to_le_bytes());
        assert_eq!(&b[16..24], &7u64.to_le_bytes());
        assert_eq!(&b[24..28], &2u32.to_le_bytes());
        assert_eq!(&b[28..30], b"xy");
        assert_eq!(&b[30..], &crc32c::crc32c(&b[..30]).to_le_bytes());
    }

    #[test]
    fn entries_parse_back_and_a_torn_tail_is_ignored() {
        let mut buf = BytesMut::new();
        entry(1, b"first").encode_into(&mut buf);
        entry(2, b"second").encode_into(&mut buf);
        let whole = buf.len();
        entry(3, b"third").encode_into(&mut buf);
        let full = buf.freeze();
        let p = parse(&full);
        assert_eq!(p.entries.len(), 3);
        assert!(!p.torn);
        for cut in whole..full.len() {
            let p = parse(&full.slice(..cut));
            assert_eq!(p.entries.len(), if cut == full.len() { 3 } else { 2 });
            assert_eq!(p.valid_len, whole);
            assert_eq!(p.torn, cut > whole);
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_object_there() {
        let mut buf = BytesMut::new();
        entry(1, b"first").encode_into(&mut buf);
        let first = buf.len();
        entry(2, b"second").encode_into(&mut buf);
        buf[first + 30] ^= 1;
        let p = parse(&buf.freeze());
        assert_eq!(p.entries.len(), 1);
        assert!(p.torn);
    }
}
