//! The diff streams `rbd export-diff` writes and `rbd import-diff` reads, byte for byte, in
//! both versions; version 2 is also the piece export format 2 is made of.
//!
//! ```text
//! v1: "rbd diff v1\n" record* 'e'
//!     'f' le32 len, name | 't' le32 len, name | 's' le64 size
//!     'w' le64 offset, le64 length, data | 'z' le64 offset, le64 length
//! v2: "rbd diff v2\n" record* 'e'
//!     every record but 'e': u8 tag, le64 length of what follows, then as v1 ('f'/'t' carry
//!     le32 len + name; 'p' carries u8 protected; 'w' carries offset, length, data)
//! ```
//!
//! The `p` record is written as Ceph writes it (checked against `rbd` 16.2): a length field of
//! 8 followed by a single byte; the reader takes one byte whether the length says 1 or 8.
//!
//! The banners and tags are fixed by Ceph; never change them. Every length read is checked
//! before anything is allocated for it: names are capped at [`MAX_NAME`], and write data is
//! never buffered whole (the reader hands it out in pieces).

use std::io::{self, Read, Write};

/// Banner of a version 1 diff.
pub const BANNER_V1: &[u8] = b"rbd diff v1\n";
/// Banner of a version 2 diff.
pub const BANNER_V2: &[u8] = b"rbd diff v2\n";
/// The length Ceph writes in a `p` record (which holds one byte).
const PROTECTION_LENGTH: u64 = 8;
/// The longest snapshot name accepted in a diff.
pub const MAX_NAME: u32 = 4096;

/// Record tags.
pub mod tag {
    /// The snapshot the diff starts from.
    pub const FROM_SNAP: u8 = b'f';
    /// The snapshot the diff leads to.
    pub const TO_SNAP: u8 = b't';
    /// The image size at the end.
    pub const SIZE: u8 = b's';
    /// Whether the to-snapshot is protected (version 2).
    pub const PROTECTION: u8 = b'p';
    /// Data at an offset.
    pub const WRITE: u8 = b'w';
    /// A range that reads as zeros.
    pub const ZERO: u8 = b'z';
    /// The end of the diff.
    pub const END: u8 = b'e';
}

/// A diff stream version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `rbd diff v1`.
    V1,
    /// `rbd diff v2`.
    V2,
}

/// What went wrong reading a diff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Reading failed.
    #[error("reading the diff: {0}")]
    Io(#[from] io::Error),
    /// The stream does not start with a diff banner.
    #[error("not an rbd diff: the stream does not start with 'rbd diff v1' or 'rbd diff v2'")]
    Banner,
    /// A record tag this reader does not know.
    #[error("unknown record tag {tag:#04x} at byte {at}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Its position in the stream.
        at: u64,
    },
    /// The stream ends inside a record (or before the end record).
    #[error("the diff is truncated at byte {at}")]
    Truncated {
        /// Where the stream ended.
        at: u64,
    },
    /// A record's fields do not fit its declared length, or exceed a limit.
    #[error("malformed '{tag}' record at byte {at}: {why}")]
    Malformed {
        /// The record tag.
        tag: char,
        /// Its position in the stream.
        at: u64,
        /// What is wrong.
        why: String,
    },
}

/// One record of a diff. The data of a [`Record::Write`] follows it in the stream and is read
/// with [`DiffReader::read_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `f`: the snapshot the diff starts from.
    FromSnap(String),
    /// `t`: the snapshot the diff leads to.
    ToSnap(String),
    /// `s`: the image size at the end.
    Size(u64),
    /// `p`: whether the to-snapshot is protected.
    Protection(bool),
    /// `w`: `length` bytes of data at `offset` follow.
    Write {
        /// Image offset.
        offset: u64,
        /// Bytes of data that follow.
        length: u64,
    },
    /// `z`: `[offset, offset + length)` reads as zeros.
    Zero {
        /// Image offset.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// `e`: the end.
    End,
}

/// Reads a diff stream record by record.
#[derive(Debug)]
pub struct DiffReader<R> {
    r: R,
    version: Version,
    at: u64,
    /// Data bytes of the current write record not yet read.
    pending: u64,
}

impl<R: Read> DiffReader<R> {
    /// Reads the banner; fails unless it is a v1 or v2 diff banner.
    pub fn new(mut r: R) -> Result<Self, WireError> {
        let mut banner = [0u8; 12];
        read_exact(&mut r, &mut banner, 0).map_err(|e| match e {
            WireError::Truncated { .. } => WireError::Banner,
            other => other,
        })?;
        let version = match &banner[..] {
            b if b == BANNER_V1 => Version::V1,
            b if b == BANNER_V2 => Version::V2,
            _ => return Err(WireError::Banner),
        };
        Ok(DiffReader {
            r,
            version,
            at: 12,
            pending: 0,
        })
    }

    /// Starts reading after a banner someone else has read (export format 2 embeds v2 diffs).
    pub fn after_banner(r: R, version: Version, at: u64) -> Self {
        DiffReader {
            r,
            version,
            at,
            pending: 0,
        }
    }

    /// Returns the stream's version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Returns the position in the stream.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// Returns the underlying reader (after the end record).
    pub fn into_inner(self) -> R {
        self.r
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        read_exact(&mut self.r, buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn le32(&mut self) -> Result<u32, WireError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn le64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn name(&mut self, tag: u8, start: u64) -> Result<String, WireError> {
        let len = self.le32()?;
        if len > MAX_NAME {
            return Err(malformed(tag, start, format!("a name of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        String::from_utf8(buf).map_err(|_| malformed(tag, start, "a name that is not UTF-8".into()))
    }

    /// Reads the next record. The data of a previous write record must have been read.
    pub fn next_record(&mut self) -> Result<Record, WireError> {
        if self.pending > 0 {
            let mut skip = io::sink();
            let n = io::copy(&mut (&mut self.r).take(self.pending), &mut skip)?;
            self.at += n;
            if n < self.pending {
                return Err(WireError::Truncated { at: self.at });
            }
            self.pending = 0;
        }
        let start = self.at;
        let t = self.u8()?;
        if t == tag::END {
            return Ok(Record::End);
        }
        let declared = match self.version {
            Version::V2 => Some(self.le64()?),
            Version::V1 => None,
        };
        let body_start = self.at;
        let record = match t {
            tag::FROM_SNAP => Record::FromSnap(self.name(t, start)?),
            tag::TO_SNAP => Record::ToSnap(self.name(t, start)?),
            tag::SIZE => Record::Size(self.le64()?),
            tag::PROTECTION if self.version == Version::V2 => Record::Protection(self.u8()? != 0),
            tag::WRITE => {
                let offset = self.le64()?;
                let length = self.le64()?;
                if offset.checked_add(length).is_none() {
                    return Err(malformed(t, start, "offset + length overflows".into()));
                }
                if let Some(d) = declared
                    && d != 16 + length
                {
                    return Err(malformed(
                        t,
                        start,
                        format!("declared {d} bytes for {length} bytes of data"),
                    ));
                }
                self.pending = length;
                return Ok(Record::Write { offset, length });
            }
            tag::ZERO => {
                let offset = self.le64()?;
                let length = self.le64()?;
                if offset.checked_add(length).is_none() {
                    return Err(malformed(t, start, "offset + length overflows".into()));
                }
                Record::Zero { offset, length }
            }
            other => {
                return Err(WireError::UnknownTag {
                    tag: other,
                    at: start,
                });
            }
        };
        let quirk = t == tag::PROTECTION && matches!(declared, Some(1 | PROTECTION_LENGTH));
        if let Some(d) = declared
            && d != self.at - body_start
            && !quirk
        {
            return Err(malformed(
                t,
                start,
                format!("declared {d} bytes, holds {}", self.at - body_start),
            ));
        }
        Ok(record)
    }

    /// Reads up to `buf.len()` bytes of the current write record's data; returns how many
    /// (0 once it is all read).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        let n = (buf.len() as u64).min(self.pending) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.fill(&mut buf[..n])?;
        self.pending -= n as u64;
        Ok(n)
    }
}

fn malformed(tag: u8, at: u64, why: String) -> WireError {
    WireError::Malformed {
        tag: tag as char,
        at,
        why,
    }
}

/// `read_exact` that reports a short stream as [`WireError::Truncated`].
fn read_exact(r: &mut impl Read, buf: &mut [u8], at: u64) -> Result<(), WireError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(WireError::Truncated {
                    at: at + done as u64,
                });
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes a diff stream.
#[derive(Debug)]
pub struct DiffWriter<W> {
    w: W,
    version: Version,
}

impl<W: Write> DiffWriter<W> {
    /// Writes the banner of `version`.
    pub fn new(mut w: W, version: Version) -> io::Result<Self> {
        w.write_all(match version {
            Version::V1 => BANNER_V1,
            Version::V2 => BANNER_V2,
        })?;
        Ok(DiffWriter { w, version })
    }

    /// Writes the records of a diff of `version` whose banner was written already.
    pub fn continuing(w: W, version: Version) -> Self {
        DiffWriter { w, version }
    }

    fn record(&mut self, t: u8, body: &[u8]) -> io::Result<()> {
        self.w.write_all(&[t])?;
        if self.version == Version::V2 {
            self.w.write_all(&(body.len() as u64).to_le_bytes())?;
        }
        self.w.write_all(body)
    }

    fn name_record(&mut self, t: u8, name: &str) -> io::Result<()> {
        let mut body = Vec::with_capacity(4 + name.len());
        body.extend_from_slice(&(name.len() as u32).to_le_bytes());
        body.extend_from_slice(name.as_bytes());
        self.record(t, &body)
    }

    /// Writes the header records in Ceph's order: from, to, protection (v2 only, when there
    /// is a to-snapshot), size.
    pub fn header(
        &mut self,
        from: Option<&str>,
        to: Option<&str>,
        protected: Option<bool>,
        size: u64,
    ) -> io::Result<()> {
        if let Some(from) = from {
            self.name_record(tag::FROM_SNAP, from)?;
        }
        if let Some(to) = to {
            self.name_record(tag::TO_SNAP, to)?;
            if let (Version::V2, Some(p)) = (self.version, protected) {
                self.w.write_all(&[tag::PROTECTION])?;
                self.w.write_all(&PROTECTION_LENGTH.to_le_bytes())?;
                self.w.write_all(&[u8::from(p)])?;
            }
        }
        self.record(tag::SIZE, &size.to_le_bytes())
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.begin_write(offset, data.len() as u64)?;
        self.w.write_all(data)
    }

    /// Starts a write record of `length` bytes at `offset`; the data follows with
    /// [`DiffWriter::write_data`], exactly `length` bytes of it.
    pub fn begin_write(&mut self, offset: u64, length: u64) -> io::Result<()> {
        self.w.write_all(&[tag::WRITE])?;
        if self.version == Version::V2 {
            self.w.write_all(&(16 + length).to_le_bytes())?;
        }
        self.w.write_all(&offset.to_le_bytes())?;
        self.w.write_all(&length.to_le_bytes())
    }

    /// Writes data of the write record begun last.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.w.write_all(data)
    }

    /// Writes a zero record.
    pub fn zero(&mut self, offset: u64, length: u64) -> io::Result<()> {
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&offset.to_le_bytes());
        body[8..].copy_from_slice(&length.to_le_bytes());
        self.record(tag::ZERO, &body)
    }

    /// Writes the end record and returns the writer.
    pub fn end(mut self) -> io::Result<W> {
        self.w.write_all(&[tag::END])?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests;
