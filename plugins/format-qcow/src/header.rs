//! QCOW headers (v1, and QCOW2 v2/v3 with header extensions) and the QCOW2 snapshot table.
//!
//! All fields are big-endian. Every offset and count read here is checked against the stream
//! size and fixed limits before anything is allocated, so a hostile header cannot make the
//! reader allocate without bound.

use rbdx_source::{Error, ErrorKind, Result};

/// `QFI\xfb`: the magic of every QCOW version.
pub const MAGIC: u32 = 0x5146_49fb;

/// The smallest and largest cluster sizes accepted (512 B to 2 MiB, as qemu).
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
/// The largest L1 table accepted (qemu's limit: 32 MiB of entries).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The largest number of internal snapshots accepted (qemu's limit).
const MAX_SNAPSHOTS: u32 = 65_536;
/// The longest backing file name accepted.
const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bits of QCOW2 v3.
pub mod incompat {
    /// The image was not closed cleanly (refcounts may be stale; data is fine to read).
    pub const DIRTY: u64 = 1 << 0;
    /// The image is marked corrupt.
    pub const CORRUPT: u64 = 1 << 1;
    /// Data lives in an external file.
    pub const DATA_FILE: u64 = 1 << 2;
    /// The compression type field is meaningful.
    pub const COMPRESSION: u64 = 1 << 3;
    /// L2 entries are 16 bytes with 32 subclusters.
    pub const EXTL2: u64 = 1 << 4;
    /// Every bit this reader understands.
    pub const KNOWN: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION | EXTL2;
}

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate.
    Zlib,
    /// Zstandard frames.
    Zstd,
}

/// What the reader needs from a header, for any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1, 2 or 3.
    pub version: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// log2 of the number of entries of an L2 table.
    pub l2_bits: u32,
    /// Entries of the active L1 table.
    pub l1_size: u64,
    /// Where the active L1 table is.
    pub l1_offset: u64,
    /// The backing file name, if any.
    pub backing_name: Option<String>,
    /// The backing file's format (`qcow2`, `raw`…), from a header extension.
    pub backing_format: Option<String>,
    /// Internal snapshots (QCOW2): count and table offset.
    pub snapshot_count: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// 16-byte L2 entries with subclusters.
    pub extended_l2: bool,
    /// Compression of compressed clusters.
    pub compression: Compression,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::invalid(format!("qcow: {}", what.into()))
}

/// The number of header bytes to read to parse any header (extensions are read separately).
pub const PROBE_LEN: u64 = 112;

impl Header {
    /// Returns the cluster size.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Parses the fixed header from `b` (at least [`PROBE_LEN`] bytes, or the whole stream if
    /// shorter) of a stream of `stream_size` bytes.
    pub fn parse(b: &[u8], stream_size: u64) -> Result<(Header, HeaderLayout)> {
        if b.len() < 48 {
            return Err(corrupt(format!("header truncated ({} bytes)", b.len())));
        }
        if be32(b, 0) != MAGIC {
            return Err(corrupt("bad magic (not a qcow image)"));
        }
        let version = be32(b, 4);
        let backing_offset = be64(b, 8);
        let backing_size = be32(b, 16);
        let (header, layout) = match version {
            1 => {
                let cluster_bits = u32::from(b[32]);
                let l2_bits = u32::from(b[33]);
                let crypt = be32(b, 36);
                let size = be64(b, 24);
                if crypt != 0 {
                    return Err(Error::unsupported(
                        "qcow: encrypted images are not supported",
                    ));
                }
                if !(MIN_CLUSTER_BITS..=16).contains(&cluster_bits)
                    || !(cluster_bits.saturating_sub(3)..=cluster_bits).contains(&l2_bits)
                    || l2_bits < 6
                {
                    return Err(corrupt(format!(
                        "unsupported cluster bits {cluster_bits} / l2 bits {l2_bits}"
                    )));
                }
                let per_l1 = 1u64 << (cluster_bits + l2_bits);
                let l1_size = size.div_ceil(per_l1);
                (
                    Header {
                        version,
                        size,
                        cluster_bits,
                        l2_bits,
                        l1_size,
                        l1_offset: be64(b, 40),
                        backing_name: None,
                        backing_format: None,
                        snapshot_count: 0,
                        snapshots_offset: 0,
                        extended_l2: false,
                        compression: Compression::Zlib,
                    },
                    HeaderLayout {
                        header_length: 48,
                        backing_offset,
                        backing_size,
                    },
                )
            }
            2 | 3 => {
                if b.len() < 72 {
                    return Err(corrupt(format!("header truncated ({} bytes)", b.len())));
                }
                let cluster_bits = be32(b, 20);
                let crypt = be32(b, 32);
                if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
                    return Err(corrupt(format!("unsupported cluster bits {cluster_bits}")));
                }
                if crypt != 0 {
                    return Err(Error::unsupported(
                        "qcow: encrypted images are not supported (decrypt with qemu-img convert first)",
                    ));
                }
                let (incompatible, header_length, compression_byte) = if version == 3 {
                    if b.len() < 104 {
                        return Err(corrupt("v3 header truncated"));
                    }
                    let header_length = be32(b, 100);
                    let compression = if header_length > 104 && b.len() > 104 {
                        b[104]
                    } else {
                        0
                    };
                    (be64(b, 72), header_length, compression)
                } else {
                    (0, 72, 0)
                };
                if version == 3 && !(104..=4096).contains(&header_length) {
                    return Err(corrupt(format!("bad header length {header_length}")));
                }
                if incompatible & incompat::DATA_FILE != 0 {
                    return Err(Error::unsupported(
                        "qcow: images with an external data file are not supported",
                    ));
                }
                if incompatible & incompat::CORRUPT != 0 {
                    return Err(corrupt(
                        "the image is marked corrupt; repair it with qemu-img check -r all",
                    ));
                }
                let unknown = incompatible & !incompat::KNOWN;
                if unknown != 0 {
                    return Err(Error::unsupported(format!(
                        "qcow: unknown incompatible features {unknown:#x}"
                    )));
                }
                let compression =
                    match (incompatible & incompat::COMPRESSION != 0, compression_byte) {
                        (_, 0) => Compression::Zlib,
                        (true, 1) => Compression::Zstd,
                        (_, other) => {
                            return Err(Error::unsupported(format!(
                                "qcow: unknown compression type {other}"
                            )));
                        }
                    };
                let extended_l2 = incompatible & incompat::EXTL2 != 0;
                let entry_bits = if extended_l2 { 4 } else { 3 };
                if extended_l2 && cluster_bits < 14 {
                    return Err(corrupt(
                        "extended L2 entries need clusters of at least 16 KiB",
                    ));
                }
                (
                    Header {
                        version,
                        size: be64(b, 24),
                        cluster_bits,
                        l2_bits: cluster_bits - entry_bits,
                        l1_size: u64::from(be32(b, 36)),
                        l1_offset: be64(b, 40),
                        backing_name: None,
                        backing_format: None,
                        snapshot_count: be32(b, 60),
                        snapshots_offset: be64(b, 64),
                        extended_l2,
                        compression,
                    },
                    HeaderLayout {
                        header_length: u64::from(header_length),
                        backing_offset,
                        backing_size,
                    },
                )
            }
            other => {
                return Err(Error::unsupported(format!(
                    "qcow: unsupported version {other}"
                )));
            }
        };
        header.check(stream_size)?;
        if layout.backing_size > MAX_BACKING_NAME {
            return Err(corrupt(format!(
                "backing file name of {} bytes",
                layout.backing_size
            )));
        }
        if layout.backing_size > 0
            && layout
                .backing_offset
                .saturating_add(u64::from(layout.backing_size))
                > stream_size
        {
            return Err(corrupt("backing file name is past the end of the file"));
        }
        Ok((header, layout))
    }

    fn check(&self, stream_size: u64) -> Result<()> {
        let needed = self
            .size
            .div_ceil(1u64 << (self.cluster_bits + self.l2_bits));
        if self.l1_size < needed {
            return Err(corrupt(format!(
                "L1 table of {} entries is too small for a {} byte image",
                self.l1_size, self.size
            )));
        }
        let l1_bytes = self.l1_size.saturating_mul(8);
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(format!(
                "L1 table of {l1_bytes} bytes is too large"
            )));
        }
        if self.l1_offset.saturating_add(l1_bytes) > stream_size {
            return Err(corrupt(format!(
                "L1 table at {} is past the end of the file ({stream_size} bytes)",
                self.l1_offset
            )));
        }
        if self.snapshot_count > MAX_SNAPSHOTS {
            return Err(corrupt(format!("{} snapshots", self.snapshot_count)));
        }
        if self.snapshot_count > 0 && self.snapshots_offset >= stream_size {
            return Err(corrupt("snapshot table is past the end of the file"));
        }
        Ok(())
    }
}

/// Where the variable parts of a header are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLayout {
    /// Bytes of the fixed header; extensions follow (v3: this many; v2: 72).
    pub header_length: u64,
    /// Where the backing file name is.
    pub backing_offset: u64,
    /// Its length.
    pub backing_size: u32,
}

/// Header extension type: the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension type: full-disk encryption header.
const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension type: external data file name.
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Reads the extensions in `b` (the bytes from the end of the fixed header up to the first
/// cluster, or less): returns the backing format, if any.
pub fn parse_extensions(b: &[u8]) -> Result<Option<String>> {
    let mut at = 0usize;
    let mut backing_format = None;
    while at + 8 <= b.len() {
        let kind = be32(b, at);
        let len = be32(b, at + 4) as usize;
        at += 8;
        if kind == 0 {
            break;
        }
        if at + len > b.len() {
            return Err(corrupt("header extension runs past the first cluster"));
        }
        let data = &b[at..at + len];
        match kind {
            EXT_BACKING_FORMAT => {
                backing_format = Some(
                    String::from_utf8(data.to_vec())
                        .map_err(|_| corrupt("backing format is not UTF-8"))?,
                );
            }
            EXT_CRYPTO => {
                return Err(Error::unsupported(
                    "qcow: encrypted images are not supported",
                ));
            }
            EXT_DATA_FILE => {
                return Err(Error::unsupported(
                    "qcow: images with an external data file are not supported",
                ));
            }
            _ => {}
        }
        at += len.div_ceil(8) * 8;
    }
    Ok(backing_format)
}

/// An internal snapshot from the QCOW2 snapshot table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Its name (its id if the name is empty).
    pub name: String,
    /// Where its L1 table is.
    pub l1_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u64,
    /// The virtual size at the snapshot.
    pub size: u64,
}

/// Parses `count` snapshot table entries from `b`; `image_size` is used when an entry does
/// not record its own size.
pub fn parse_snapshots(
    b: &[u8],
    count: u32,
    image_size: u64,
    stream_size: u64,
) -> Result<Vec<SnapshotEntry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..count {
        let need = |at: usize, n: usize| {
            if at + n > b.len() {
                Err(corrupt(format!("snapshot table truncated at entry {i}")))
            } else {
                Ok(())
            }
        };
        need(at, 40)?;
        let l1_offset = be64(b, at);
        let l1_size = u64::from(be32(b, at + 8));
        let id_len = usize::from(u16::from_be_bytes([b[at + 12], b[at + 13]]));
        let name_len = usize::from(u16::from_be_bytes([b[at + 14], b[at + 15]]));
        let extra_len = be32(b, at + 36) as usize;
        if extra_len > 1024 {
            return Err(corrupt(format!(
                "snapshot {i} has {extra_len} bytes of extra data"
            )));
        }
        at += 40;
        need(at, extra_len)?;
        let size = if extra_len >= 16 {
            be64(b, at + 8)
        } else {
            image_size
        };
        at += extra_len;
        need(at, id_len + name_len)?;
        let id = String::from_utf8_lossy(&b[at..at + id_len]).into_owned();
        let name = String::from_utf8_lossy(&b[at + id_len..at + id_len + name_len]).into_owned();
        at += id_len + name_len;
        at = at.div_ceil(8) * 8;
        if l1_size.saturating_mul(8) > MAX_L1_BYTES
            || l1_offset.saturating_add(l1_size * 8) > stream_size
        {
            return Err(corrupt(format!(
                "snapshot {i} has an L1 table past the end of the file"
            )));
        }
        out.push(SnapshotEntry {
            name: if name.is_empty() { id } else { name },
            l1_offset,
            l1_size,
            size,
        });
    }
    Ok(out)
}

/// Returns an error of kind `kind` about the image.
pub fn error(kind: ErrorKind, what: impl Into<String>) -> Error {
    Error::new(kind, format!("qcow: {}", what.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_header() -> Vec<u8> {
        let mut b = vec![0u8; 112];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[36..40].copy_from_slice(&2u32.to_be_bytes());
        b[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    #[test]
    fn a_v3_header_parses() {
        let (h, l) = Header::parse(&v3_header(), 1 << 20).unwrap();
        assert_eq!(
            (h.version, h.cluster_bits, h.l2_bits, h.l1_size),
            (3, 16, 13, 2)
        );
        assert_eq!(l.header_length, 112);
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert!(Header::parse(&v3_header()[..20], 1 << 20).is_err());
        let mut b = v3_header();
        b[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(
            Header::parse(&b, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
        let mut b = v3_header();
        b[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(
            Header::parse(&b, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("too small")
        );
        let mut b = v3_header();
        b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            Header::parse(&b, 1 << 40)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        let mut b = v3_header();
        b[72..80].copy_from_slice(&(1u64 << 2).to_be_bytes());
        assert_eq!(
            Header::parse(&b, 1 << 20).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        let mut b = v3_header();
        b[32..36].copy_from_slice(&1u32.to_be_bytes());
        assert!(
            Header::parse(&b, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("encrypted")
        );
    }
}
