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
        let head = frame_head(self.tag_tid, self.entry_tid, self.data.len());
        out.reserve(OVERHEAD + self.data.len());
        out.put_slice(&head);
        out.put_slice(&self.data);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &self.data);
        out.put_u32_le(crc);
    }

    /// Returns the frame of this entry.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out.freeze()
    }
}

/// The first 28 bytes of a frame: magic, tag tid, entry tid and data length.
fn frame_head(tag_tid: u64, entry_tid: u64, len: usize) -> [u8; 28] {
    let mut head = [0u8; 28];
    head[..8].copy_from_slice(MAGIC);
    head[8..16].copy_from_slice(&tag_tid.to_le_bytes());
    head[16..24].copy_from_slice(&entry_tid.to_le_bytes());
    head[24..28].copy_from_slice(&(len as u32).to_le_bytes());
    head
}

/// Pieces of entry data at least this long are written from where they are, not copied.
pub const SHARE_MIN: usize = 64 << 10;

/// The frames of one object write, gathered without copying large data: small pieces are
/// copied together into one buffer, pieces of [`SHARE_MIN`] bytes or more are kept as they
/// are. Writing [`Frames::into_pieces`] back to back gives the same bytes as
/// [`Entry::encode_into`] of each entry.
#[derive(Debug, Default)]
pub struct Frames {
    done: Vec<Bytes>,
    open: BytesMut,
    len: usize,
}

impl Frames {
    /// Appends the frame of entry `entry_tid` under tag `tag_tid`, whose data is the
    /// concatenation of `data`.
    pub fn push(&mut self, tag_tid: u64, entry_tid: u64, data: &[Bytes]) {
        let len = data.iter().map(Bytes::len).sum();
        let head = frame_head(tag_tid, entry_tid, len);
        let crc = data.iter().fold(crc32c::crc32c(&head), |crc, piece| {
            crc32c::crc32c_append(crc, piece)
        });
        self.copy(&head);
        for piece in data {
            if piece.len() < SHARE_MIN {
                self.copy(piece);
            } else {
                if !self.open.is_empty() {
                    self.done.push(self.open.split().freeze());
                }
                self.done.push(piece.clone());
                self.len += piece.len();
            }
        }
        self.copy(&crc.to_le_bytes());
    }

    fn copy(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The gathered bytes, as pieces to write back to back.
    pub fn into_pieces(mut self) -> Vec<Bytes> {
        if !self.open.is_empty() {
            self.done.push(self.open.freeze());
        }
        self.done
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
    fn gathered_frames_are_the_encoded_entries_and_share_large_data() {
        let large = Bytes::from(vec![0x5a; SHARE_MIN + 3]);
        let mut frames = Frames::default();
        frames.push(3, 1, &[Bytes::from_static(b"first")]);
        frames.push(
            3,
            2,
            &[
                Bytes::from_static(b"head"),
                large.clone(),
                Bytes::from_static(b"t"),
            ],
        );
        frames.push(3, 3, &[]);
        let mut expected = BytesMut::new();
        entry(1, b"first").encode_into(&mut expected);
        let mut data = b"head".to_vec();
        data.extend_from_slice(&large);
        data.extend_from_slice(b"t");
        Entry {
            tag_tid: 3,
            entry_tid: 2,
            data: Bytes::from(data),
        }
        .encode_into(&mut expected);
        entry(3, b"").encode_into(&mut expected);
        assert_eq!(frames.len(), expected.len());
        let pieces = frames.into_pieces();
        assert_eq!(pieces.len(), 3, "copied, shared, copied");
        assert_eq!(
            pieces[1].as_ptr(),
            large.as_ptr(),
            "the large piece is not copied"
        );
        assert_eq!(pieces.concat(), expected.to_vec());
        assert_eq!(parse(&expected.freeze()).entries.len(), 3);
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
