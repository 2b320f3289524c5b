//! The object map: two bits per data object telling whether it may exist, for the head and
//! for each snapshot (`rbd_object_map.<id>[.<snapid>]`).
//!
//! States are RBD's: nonexistent (0), exists (1), pending removal (2), exists and unchanged
//! since the last snapshot (3, used by fast-diff). The map is a promise in one direction only:
//! a nonexistent entry means the object is certainly absent, so reads, `du`, diffs and copies
//! can skip it without asking the store. The lock holder therefore marks an object as existing
//! before writing it, and as nonexistent only after removing it (pending in between).
//!
//! # Stored layout (version 1; the magic must never change)
//!
//! ```text
//! 0        8         12           16       24                      24 + n
//! | magic  | version | block size | count  | n = ceil(count/4) bytes | crc32c per block |
//! ```
//!
//! Entries are packed four to a byte, the first in the two most significant bits. Each block
//! of `block size` data bytes has its own CRC-32C (little-endian) after the data, so one entry
//! is updated by rewriting one data byte and one CRC in a single atomic batch.

use bytes::{BufMut, Bytes, BytesMut};
use rbdx_objstore::WriteOp;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RBDXOMAP";
const VERSION: u32 = 1;
const BLOCK: usize = 4096;
const HEADER_LEN: usize = 24;
/// The largest object count a map may hold (1 TiB of map data would be absurd).
pub const MAX_OBJECTS: u64 = 1 << 36;

/// The state of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectState {
    /// Certainly absent.
    Nonexistent = 0,
    /// May exist, changed since the last snapshot.
    Exists = 1,
    /// Being removed: may still exist.
    Pending = 2,
    /// Exists and unchanged since the last snapshot.
    ExistsClean = 3,
}

impl ObjectState {
    fn from_bits(bits: u8) -> ObjectState {
        match bits & 3 {
            0 => ObjectState::Nonexistent,
            1 => ObjectState::Exists,
            2 => ObjectState::Pending,
            _ => ObjectState::ExistsClean,
        }
    }

    /// Returns true unless the object is certainly absent.
    pub fn may_exist(self) -> bool {
        self != ObjectState::Nonexistent
    }
}

/// An object map in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMap {
    count: u64,
    data: Vec<u8>,
}

impl ObjectMap {
    /// Returns a map of `count` nonexistent objects.
    pub fn new(count: u64) -> ObjectMap {
        ObjectMap {
            count,
            data: vec![0; Self::data_len(count)],
        }
    }

    fn data_len(count: u64) -> usize {
        usize::try_from(count.div_ceil(4)).unwrap_or(usize::MAX)
    }

    /// Returns the number of objects.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Returns true if the map covers no objects.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Returns the state of object `i` (nonexistent past the end).
    pub fn get(&self, i: u64) -> ObjectState {
        if i >= self.count {
            return ObjectState::Nonexistent;
        }
        let byte = self.data[(i / 4) as usize];
        ObjectState::from_bits(byte >> (6 - 2 * (i % 4)))
    }

    /// Sets the state of object `i`; returns false if `i` is past the end.
    pub fn set(&mut self, i: u64, state: ObjectState) -> bool {
        if i >= self.count {
            return false;
        }
        let shift = 6 - 2 * (i % 4);
        let byte = &mut self.data[(i / 4) as usize];
        *byte = (*byte & !(3 << shift)) | ((state as u8) << shift);
        true
    }

    /// Changes the number of objects; new entries are nonexistent.
    pub fn resize(&mut self, count: u64) {
        // Clear the entries of the last kept byte that will lie past the end.
        for i in count..(count.div_ceil(4) * 4).min(self.count) {
            self.set(i, ObjectState::Nonexistent);
        }
        self.data.resize(Self::data_len(count), 0);
        self.count = count;
    }

    /// Iterates over the states in object order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectState> + '_ {
        (0..self.count).map(|i| self.get(i))
    }

    /// Encodes the whole map.
    pub fn encode(&self) -> Bytes {
        let blocks = self.data.len().div_ceil(BLOCK);
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.data.len() + 4 * blocks);
        out.put_slice(MAGIC);
        out.put_u32_le(VERSION);
        out.put_u32_le(BLOCK as u32);
        out.put_u64_le(self.count);
        out.put_slice(&self.data);
        for block in self.data.chunks(BLOCK) {
            out.put_u32_le(crc32c::crc32c(block));
        }
        out.freeze()
    }

    /// Decodes a stored map, checking magic, version, length and every block's CRC.
    pub fn decode(bytes: &[u8]) -> Result<ObjectMap> {
        let bad = |what: &str| Error::corrupt(format!("object map: {what}"));
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(8) != VERSION {
            return Err(bad(&format!("unsupported version {}", word(8))));
        }
        if word(12) as usize != BLOCK {
            return Err(bad("unsupported block size"));
        }
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(&bytes[16..24]);
        let count = u64::from_le_bytes(count_bytes);
        if count > MAX_OBJECTS {
            return Err(bad(&format!("object count {count} is too large")));
        }
        let data_len = Self::data_len(count);
        let blocks = data_len.div_ceil(BLOCK);
        if bytes.len() != HEADER_LEN + data_len + 4 * blocks {
            return Err(bad(&format!("{} bytes for {count} objects", bytes.len())));
        }
        let data = &bytes[HEADER_LEN..HEADER_LEN + data_len];
        let crcs = HEADER_LEN + data_len;
        for (k, block) in data.chunks(BLOCK).enumerate() {
            if crc32c::crc32c(block) != word(crcs + 4 * k) {
                return Err(bad(&format!("checksum mismatch in block {k}")));
            }
        }
        Ok(ObjectMap {
            count,
            data: data.to_vec(),
        })
    }

    /// Returns a batch that stores the entries of objects `first..=last` (after they were
    /// changed in memory) without rewriting the rest of the map.
    pub fn update_op(&self, first: u64, last: u64) -> WriteOp {
        let last = last.min(self.count.saturating_sub(1));
        if first > last {
            return WriteOp::new();
        }
        let first_byte = (first / 4) as usize;
        let last_byte = (last / 4) as usize;
        let mut op = WriteOp::new().write(
            (HEADER_LEN + first_byte) as u64,
            Bytes::copy_from_slice(&self.data[first_byte..=last_byte]),
        );
        let crc_base = HEADER_LEN + self.data.len();
        for k in first_byte / BLOCK..=last_byte / BLOCK {
            let end = ((k + 1) * BLOCK).min(self.data.len());
            let crc = crc32c::crc32c(&self.data[k * BLOCK..end]);
            op = op.write(
                (crc_base + 4 * k) as u64,
                Bytes::copy_from_slice(&crc.to_le_bytes()),
            );
        }
        op
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_pack_four_to_a_byte_most_significant_first() {
        let mut m = ObjectMap::new(5);
        m.set(0, ObjectState::Exists);
        m.set(3, ObjectState::ExistsClean);
        m.set(4, ObjectState::Pending);
        assert_eq!(m.data, vec![0b0100_0011, 0b1000_0000]);
        assert_eq!(m.get(3), ObjectState::ExistsClean);
        assert_eq!(m.get(99), ObjectState::Nonexistent);
    }

    #[test]
    fn encode_decode_round_trips_and_detects_damage() {
        let mut m = ObjectMap::new(40_000);
        m.set(39_999, ObjectState::Exists);
        let bytes = m.encode();
        assert_eq!(ObjectMap::decode(&bytes).unwrap(), m);
        let mut broken = bytes.to_vec();
        broken[HEADER_LEN + 9000] ^= 1;
        assert!(ObjectMap::decode(&broken).is_err());
        assert!(ObjectMap::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(ObjectMap::decode(b"short").is_err());
    }

    #[test]
    fn update_op_writes_the_changed_byte_and_its_block_crc() {
        let mut m = ObjectMap::new(20_000);
        m.set(17_000, ObjectState::Exists);
        let op = m.update_op(17_000, 17_000);
        assert_eq!(op.steps().len(), 2);
        // Applying the op to the old encoding gives the new one.
        let mut stored = ObjectMap::new(20_000).encode().to_vec();
        for step in op.steps() {
            if let rbdx_objstore::WriteStep::Write { offset, data } = step {
                let at = *offset as usize;
                stored[at..at + data.len()].copy_from_slice(data);
            }
        }
        assert_eq!(ObjectMap::decode(&stored).unwrap(), m);
    }

    #[test]
    fn shrinking_clears_entries_past_the_end() {
        let mut m = ObjectMap::new(8);
        for i in 0..8 {
            m.set(i, ObjectState::Exists);
        }
        m.resize(2);
        m.resize(8);
        assert_eq!(m.get(1), ObjectState::Exists);
        assert_eq!(m.get(2), ObjectState::Nonexistent);
    }
}
