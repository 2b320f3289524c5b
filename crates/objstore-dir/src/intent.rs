//! Redo intents: the in-place changes of one batch to one data file, committed in the same
//! transaction as the metadata, then applied to the file.
//!
//! Every action is absolute (bytes at an offset, a hole, a size cap), so applying an intent's
//! actions in order to any state between "none applied" and "all applied" gives the same file.
//! That is what makes a crash between commit and application harmless: whoever next holds the
//! object's stripe lock applies the intent again, and a reader that finds an intent still
//! recorded applies its actions to the bytes it read.
//!
//! Encoding (little-endian), stored in the `intents` table:
//!
//! ```text
//! +--------+---------+-----------+-----------+----------------------+----------+
//! | "RBXI" | version | file id   | n actions | actions              | crc32c   |
//! | 4 B    | u8 = 1  | u64       | u32       | tag u8 + fields each | u32      |
//! +--------+---------+-----------+-----------+----------------------+----------+
//! tag 1 write:  offset u64, length u32, bytes
//! tag 2 punch:  offset u64, length u64
//! tag 3 shrink: size u64   (cut the file to `size` if it is longer)
//! ```
//!
//! The CRC covers every byte before it. The magic and tags must never change; a new layout
//! gets a new version number.

use std::fs::File;
use std::io;

use bytes::Bytes;

use crate::sys;

/// Identifies an intent record. Never change.
const MAGIC: &[u8; 4] = b"RBXI";
/// The encoding version written by this code.
const VERSION: u8 = 1;
/// The largest intent accepted when decoding.
const MAX_ENCODED: usize = 256 << 20;

/// One in-place change to a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write bytes at an offset.
    Write { offset: u64, data: Bytes },
    /// Make a range a hole (reads as zeros), without changing the file length.
    Punch { offset: u64, length: u64 },
    /// Cut the file to `size` if it is longer.
    Shrink { size: u64 },
}

/// The in-place changes of one batch to one data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent {
    pub(crate) file: u64,
    pub(crate) actions: Vec<Action>,
}

/// Why an intent record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("intent record is {0} bytes, outside the valid range")]
    BadLength(usize),
    #[error("intent record has magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("intent record has unknown version {0}")]
    BadVersion(u8),
    #[error("intent record checksum {stored:#010x} does not match {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("intent record is truncated at byte {0}")]
    Truncated(usize),
    #[error("intent record has unknown action tag {0}")]
    BadTag(u8),
}

impl Intent {
    /// Returns the number of data bytes the actions carry.
    pub(crate) fn data_len(&self) -> usize {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Write { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Encodes the intent.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.data_len() + 17 * self.actions.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.file.to_le_bytes());
        out.extend_from_slice(&(self.actions.len() as u32).to_le_bytes());
        for action in &self.actions {
            match action {
                Action::Write { offset, data } => {
                    out.push(1);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                    out.extend_from_slice(data);
                }
                Action::Punch { offset, length } => {
                    out.push(2);
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&length.to_le_bytes());
                }
                Action::Shrink { size } => {
                    out.push(3);
                    out.extend_from_slice(&size.to_le_bytes());
                }
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies an encoded intent.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Intent, DecodeError> {
        if bytes.len() < 21 || bytes.len() > MAX_ENCODED {
            return Err(DecodeError::BadLength(bytes.len()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let magic: [u8; 4] = body[..4]
            .try_into()
            .map_err(|_| DecodeError::Truncated(0))?;
        if &magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        if body[4] != VERSION {
            return Err(DecodeError::BadVersion(body[4]));
        }
        let stored = u32::from_le_bytes(tail.try_into().map_err(|_| DecodeError::Truncated(0))?);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }
        let mut reader = Reader {
            bytes: body,
            pos: 5,
        };
        let file = reader.u64()?;
        let count = reader.u32()?;
        let mut actions = Vec::new();
        for _ in 0..count {
            let action = match reader.u8()? {
                1 => {
                    let offset = reader.u64()?;
                    let len = reader.u32()? as usize;
                    Action::Write {
                        offset,
                        data: Bytes::copy_from_slice(reader.take(len)?),
                    }
                }
                2 => Action::Punch {
                    offset: reader.u64()?,
                    length: reader.u64()?,
                },
                3 => Action::Shrink {
                    size: reader.u64()?,
                },
                tag => return Err(DecodeError::BadTag(tag)),
            };
            actions.push(action);
        }
        Ok(Intent { file, actions })
    }

    /// Applies the actions to the data file.
    pub(crate) fn apply(&self, file: &File) -> io::Result<()> {
        for action in &self.actions {
            match action {
                Action::Write { offset, data } => crate::files::write_chunked(file, data, *offset)?,
                Action::Punch { offset, length } => {
                    let len = file.metadata()?.len();
                    let end = (offset + length).min(len);
                    if *offset < end {
                        sys::punch_hole(file, *offset, end - offset)?;
                    }
                }
                Action::Shrink { size } => {
                    if file.metadata()?.len() > *size {
                        file.set_len(*size)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the actions to `buf`, which holds the bytes at `offset` as read from the file.
    pub(crate) fn overlay(&self, buf: &mut [u8], offset: u64) {
        let end = offset + buf.len() as u64;
        for action in &self.actions {
            let (lo, hi) = match action {
                Action::Write { offset: o, data } => (*o, o + data.len() as u64),
                Action::Punch { offset: o, length } => (*o, o + length),
                Action::Shrink { size } => (*size, u64::MAX),
            };
            let (lo, hi) = (lo.max(offset), hi.min(end));
            if lo >= hi {
                continue;
            }
            let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
            match action {
                Action::Write { offset: o, data } => {
                    dst.copy_from_slice(&data[(lo - o) as usize..(hi - o) as usize])
                }
                Action::Punch { .. } | Action::Shrink { .. } => dst.fill(0),
            }
        }
    }

    /// Returns the ranges the intent writes data into, as `(start, end)` pairs.
    pub(crate) fn written_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.actions.iter().filter_map(|a| match a {
            Action::Write { offset, data } if !data.is_empty() => {
                Some((*offset, offset + data.len() as u64))
            }
            _ => None,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(DecodeError::Truncated(self.pos))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn sample() -> Intent {
        Intent {
            file: 42,
            actions: vec![
                Action::Write {
                    offset: 10,
                    data: Bytes::from_static(b"hello"),
                },
                Action::Punch {
                    offset: 0,
                    length: 4,
                },
                Action::Shrink { size: 12 },
            ],
        }
    }

    #[test]
    fn encoding_round_trips() {
        let intent = sample();
        assert_eq!(Intent::decode(&intent.encode()).unwrap(), intent);
    }

    #[test]
    fn corrupt_record_is_rejected() {
        let mut bytes = sample().encode();
        bytes[12] ^= 1;
        assert!(matches!(
            Intent::decode(&bytes),
            Err(DecodeError::BadChecksum { .. })
        ));
        assert!(matches!(
            Intent::decode(&bytes[..10]),
            Err(DecodeError::BadLength(10))
        ));
    }

    #[test]
    fn overlay_matches_application_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.write_all_at(b"abcdefghijklmnopqrst", 0).unwrap();
        let mut buf = b"abcdefghijklmnopqrst".to_vec();
        let intent = sample();
        intent.overlay(&mut buf, 0);
        intent.apply(&file).unwrap();
        intent.apply(&file).unwrap();
        let mut on_disk = crate::files::read_range(Some(&file), 0, 20).unwrap();
        on_disk.truncate(20);
        assert_eq!(buf, on_disk);
        assert_eq!(&buf[..15], b"\0\0\0\0efghijhe\0\0\0");
    }
}
