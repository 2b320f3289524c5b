//! The encoding of journal events (the data of an entry).
//!
//! ```text
//! le32 event type | fields | le64 seconds | le32 nanoseconds (when it was journaled)
//! ```
//!
//! Event type numbers are librbd's (0 discard, 1 write, 2 flush, 3 op-finish, 4..9 snapshot
//! create/remove/rename/protect/unprotect/rollback, 11 resize, 12 flatten, 13 demote/promote,
//! 14 snapshot limit, 15 update features, 16/17 metadata set/remove, 18 write-same,
//! 19 compare-and-write), plus 20 for write-zeroes. Fields are rbdx's own: integers
//! little-endian, strings and byte strings as a le32 length and the bytes. Numbers are never
//! reused; a new event gets a new number, and readers refuse numbers they do not know.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut as _, Bytes, BytesMut};
use rbdx_image::journaling::Event;
use rbdx_image::{Error, Result};

/// Event type numbers. Never change or reuse one.
mod kind {
    pub const DISCARD: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const FLUSH: u32 = 2;
    pub const OP_FINISH: u32 = 3;
    pub const SNAP_CREATE: u32 = 4;
    pub const SNAP_REMOVE: u32 = 5;
    pub const SNAP_RENAME: u32 = 6;
    pub const SNAP_PROTECT: u32 = 7;
    pub const SNAP_UNPROTECT: u32 = 8;
    pub const SNAP_ROLLBACK: u32 = 9;
    pub const RESIZE: u32 = 11;
    pub const FLATTEN: u32 = 12;
    pub const DEMOTE_PROMOTE: u32 = 13;
    pub const SNAP_LIMIT: u32 = 14;
    pub const UPDATE_FEATURES: u32 = 15;
    pub const METADATA_SET: u32 = 16;
    pub const METADATA_REMOVE: u32 = 17;
    pub const WRITE_SAME: u32 = 18;
    pub const COMPARE_AND_WRITE: u32 = 19;
    pub const WRITE_ZEROES: u32 = 20;
}

/// Returns the name of an event, as `journal inspect` prints it.
pub fn name(event: &Event) -> &'static str {
    match event {
        Event::Discard { .. } => "AioDiscard",
        Event::Write { .. } => "AioWrite",
        Event::Flush => "AioFlush",
        Event::OpFinish { .. } => "OpFinish",
        Event::SnapCreate { .. } => "SnapCreate",
        Event::SnapRemove { .. } => "SnapRemove",
        Event::SnapRename { .. } => "SnapRename",
        Event::SnapProtect { .. } => "SnapProtect",
        Event::SnapUnprotect { .. } => "SnapUnprotect",
        Event::SnapRollback { .. } => "SnapRollback",
        Event::Resize { .. } => "Resize",
        Event::Flatten => "Flatten",
        Event::DemotePromote => "DemotePromote",
        Event::SnapLimit { .. } => "SnapLimit",
        Event::UpdateFeatures { .. } => "UpdateFeatures",
        Event::MetadataSet { .. } => "MetadataSet",
        Event::MetadataRemove { .. } => "MetadataRemove",
        Event::WriteSame { .. } => "AioWriteSame",
        Event::CompareAndWrite { .. } => "AioCompareAndWrite",
        Event::WriteZeroes { .. } => "AioWriteZeroes",
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

/// Encodes `event`, stamped with the current time.
pub fn encode(event: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    match event {
        Event::Discard { offset, length } => {
            out.put_u32_le(kind::DISCARD);
            out.put_u64_le(*offset);
            out.put_u64_le(*length);
        }
        Event::Write { offset, data } => {
            out.reserve(data.len() + 16);
            put_write_head(&mut out, *offset, data.len());
            out.put_slice(data);
        }
        Event::Flush => out.put_u32_le(kind::FLUSH),
        Event::OpFinish { op_tid, result } => {
            out.put_u32_le(kind::OP_FINISH);
            out.put_u64_le(*op_tid);
            out.put_i32_le(*result);
        }
        Event::SnapCreate { name } => named(&mut out, kind::SNAP_CREATE, name),
        Event::SnapRemove { name } => named(&mut out, kind::SNAP_REMOVE, name),
        Event::SnapRename { from, to } => {
            out.put_u32_le(kind::SNAP_RENAME);
            put_bytes(&mut out, from.as_bytes());
            put_bytes(&mut out, to.as_bytes());
        }
        Event::SnapProtect { name } => named(&mut out, kind::SNAP_PROTECT, name),
        Event::SnapUnprotect { name } => named(&mut out, kind::SNAP_UNPROTECT, name),
        Event::SnapRollback { name } => named(&mut out, kind::SNAP_ROLLBACK, name),
        Event::Resize { size } => {
            out.put_u32_le(kind::RESIZE);
            out.put_u64_le(*size);
        }
        Event::Flatten => out.put_u32_le(kind::FLATTEN),
        Event::DemotePromote => out.put_u32_le(kind::DEMOTE_PROMOTE),
        Event::SnapLimit { limit } => {
            out.put_u32_le(kind::SNAP_LIMIT);
            out.put_u8(u8::from(limit.is_some()));
            out.put_u64_le(limit.unwrap_or(0));
        }
        Event::UpdateFeatures { features, enabled } => {
            out.put_u32_le(kind::UPDATE_FEATURES);
            out.put_u64_le(*features);
            out.put_u8(u8::from(*enabled));
        }
        Event::MetadataSet { key, value } => {
            out.put_u32_le(kind::METADATA_SET);
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value);
        }
        Event::MetadataRemove { key } => named(&mut out, kind::METADATA_REMOVE, key),
        Event::WriteSame {
            offset,
            length,
            pattern,
        } => {
            out.put_u32_le(kind::WRITE_SAME);
            out.put_u64_le(*offset);
            out.put_u64_le(*length);
            put_bytes(&mut out, pattern);
        }
        Event::CompareAndWrite {
            offset,
            compare,
            data,
        } => {
            out.put_u32_le(kind::COMPARE_AND_WRITE);
            out.put_u64_le(*offset);
            put_bytes(&mut out, compare);
            put_bytes(&mut out, data);
        }
        Event::WriteZeroes { offset, length } => {
            out.put_u32_le(kind::WRITE_ZEROES);
            out.put_u64_le(*offset);
            out.put_u64_le(*length);
        }
    }
    put_stamp(&mut out);
    out.freeze()
}

/// Appends what comes before a write event's data: its type, offset and data length.
fn put_write_head(out: &mut BytesMut, offset: u64, len: usize) {
    out.put_u32_le(kind::WRITE);
    out.put_u64_le(offset);
    out.put_u32_le(len as u32);
}

/// Appends the time an event is journaled.
fn put_stamp(out: &mut BytesMut) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    out.put_u64_le(now.as_secs());
    out.put_u32_le(now.subsec_nanos());
}

/// Encodes `event` like [`encode`], as pieces to be written back to back: the data of a
/// write of [`crate::entry::SHARE_MIN`] bytes or more is a piece of its own, shared with the
/// caller instead of copied.
pub fn encode_pieces(event: &Event) -> Vec<Bytes> {
    match event {
        Event::Write { offset, data } if data.len() >= crate::entry::SHARE_MIN => {
            let mut head = BytesMut::with_capacity(16);
            put_write_head(&mut head, *offset, data.len());
            let mut stamp = BytesMut::with_capacity(12);
            put_stamp(&mut stamp);
            vec![head.freeze(), data.clone(), stamp.freeze()]
        }
        _ => vec![encode(event)],
    }
}

fn named(out: &mut BytesMut, kind: u32, name: &str) {
    out.put_u32_le(kind);
    put_bytes(out, name.as_bytes());
}

/// Reads fields of an encoded event.
struct Fields<'a> {
    all: &'a Bytes,
    at: usize,
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.all.len())
            .ok_or_else(|| Error::corrupt("journal event: a field runs past the entry"))?;
        let s = &self.all[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<Bytes> {
        let len = self.u32()? as usize;
        let start = self.at;
        self.take(len)?;
        Ok(self.all.slice(start..start + len))
    }

    fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::corrupt("journal event: a name is not UTF-8"))
    }
}

/// Decodes an event and the time (seconds, nanoseconds) it was journaled.
pub fn decode(data: &Bytes) -> Result<(Event, (u64, u32))> {
    let mut f = Fields { all: data, at: 0 };
    let event = match f.u32()? {
        kind::DISCARD => Event::Discard {
            offset: f.u64()?,
            length: f.u64()?,
        },
        kind::WRITE => Event::Write {
            offset: f.u64()?,
            data: f.bytes()?,
        },
        kind::FLUSH => Event::Flush,
        kind::OP_FINISH => Event::OpFinish {
            op_tid: f.u64()?,
            result: f.u32()? as i32,
        },
        kind::SNAP_CREATE => Event::SnapCreate { name: f.string()? },
        kind::SNAP_REMOVE => Event::SnapRemove { name: f.string()? },
        kind::SNAP_RENAME => Event::SnapRename {
            from: f.string()?,
            to: f.string()?,
        },
        kind::SNAP_PROTECT => Event::SnapProtect { name: f.string()? },
        kind::SNAP_UNPROTECT => Event::SnapUnprotect { name: f.string()? },
        kind::SNAP_ROLLBACK => Event::SnapRollback { name: f.string()? },
        kind::RESIZE => Event::Resize { size: f.u64()? },
        kind::FLATTEN => Event::Flatten,
        kind::DEMOTE_PROMOTE => Event::DemotePromote,
        kind::SNAP_LIMIT => {
            let has = f.u8()? != 0;
            let limit = f.u64()?;
            Event::SnapLimit {
                limit: has.then_some(limit),
            }
        }
        kind::UPDATE_FEATURES => Event::UpdateFeatures {
            features: f.u64()?,
            enabled: f.u8()? != 0,
        },
        kind::METADATA_SET => Event::MetadataSet {
            key: f.string()?,
            value: f.bytes()?,
        },
        kind::METADATA_REMOVE => Event::MetadataRemove { key: f.string()? },
        kind::WRITE_SAME => Event::WriteSame {
            offset: f.u64()?,
            length: f.u64()?,
            pattern: f.bytes()?,
        },
        kind::COMPARE_AND_WRITE => Event::CompareAndWrite {
            offset: f.u64()?,
            compare: f.bytes()?,
            data: f.bytes()?,
        },
        kind::WRITE_ZEROES => Event::WriteZeroes {
            offset: f.u64()?,
            length: f.u64()?,
        },
        other => {
            return Err(Error::corrupt(format!(
                "journal event: unknown event type {other}"
            )));
        }
    };
    let secs = f.u64()?;
    let nanos = f.u32()?;
    if f.at != data.len() {
        return Err(Error::corrupt("journal event: bytes after the timestamp"));
    }
    Ok((event, (secs, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events() -> Vec<Event> {
        let b = |s: &'static [u8]| Bytes::from_static(s);
        vec![
            Event::Discard {
                offset: 1,
                length: 2,
            },
            Event::Write {
                offset: 3,
                data: b(b"data"),
            },
            Event::Flush,
            Event::OpFinish {
                op_tid: 9,
                result: -17,
            },
            Event::SnapCreate { name: "s".into() },
            Event::SnapRemove { name: "s".into() },
            Event::SnapRename {
                from: "a".into(),
                to: "b".into(),
            },
            Event::SnapProtect { name: "s".into() },
            Event::SnapUnprotect { name: "s".into() },
            Event::SnapRollback { name: "s".into() },
            Event::Resize { size: 1 << 30 },
            Event::Flatten,
            Event::DemotePromote,
            Event::SnapLimit { limit: Some(5) },
            Event::SnapLimit { limit: None },
            Event::UpdateFeatures {
                features: 8,
                enabled: true,
            },
            Event::MetadataSet {
                key: "k".into(),
                value: b(b"v"),
            },
            Event::MetadataRemove { key: "k".into() },
            Event::WriteSame {
                offset: 0,
                length: 8,
                pattern: b(b"ab"),
            },
            Event::CompareAndWrite {
                offset: 4,
                compare: b(b"x"),
                data: b(b"y"),
            },
            Event::WriteZeroes {
                offset: 7,
                length: 9,
            },
        ]
    }

    #[test]
    fn every_event_decodes_to_itself() {
        for e in all_events() {
            let (back, _) = decode(&encode(&e)).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn pieces_decode_to_the_event_and_share_large_write_data() {
        let large = Bytes::from(vec![7u8; crate::entry::SHARE_MIN]);
        let mut events = all_events();
        events.push(Event::Write {
            offset: 1 << 20,
            data: large.clone(),
        });
        for e in events {
            let pieces = encode_pieces(&e);
            let (back, _) = decode(&Bytes::from(pieces.concat())).unwrap();
            assert_eq!(back, e);
            let shared = pieces.iter().any(|p| p.as_ptr() == large.as_ptr());
            assert_eq!(
                shared,
                matches!(&e, Event::Write { data, .. } if data.len() == large.len())
            );
        }
    }

    #[test]
    fn write_event_matches_the_documented_layout() {
        let enc = encode(&Event::Write {
            offset: 0x10,
            data: Bytes::from_static(b"ab"),
        });
        assert_eq!(&enc[..4], &1u32.to_le_bytes());
        assert_eq!(&enc[4..12], &0x10u64.to_le_bytes());
        assert_eq!(&enc[12..16], &2u32.to_le_bytes());
        assert_eq!(&enc[16..18], b"ab");
        assert_eq!(enc.len(), 18 + 12);
    }

    #[test]
    fn truncated_or_unknown_events_are_refused() {
        let enc = encode(&Event::Resize { size: 5 });
        for cut in 0..enc.len() {
            assert!(decode(&enc.slice(..cut)).is_err(), "cut {cut}");
        }
        let mut bad = enc.to_vec();
        bad[0] = 99;
        assert!(decode(&Bytes::from(bad)).is_err());
    }
}
