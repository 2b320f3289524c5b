//! The VHD format itself, independent of the plugin ABI: the footer, the dynamic disk header
//! and its block allocation table (BAT), and how a virtual offset maps to the file.
//!
//! Layout (all numbers big-endian):
//! - a **fixed** disk is the disk's bytes followed by a 512-byte footer;
//! - a **dynamic** disk is a copy of the footer, a 1024-byte header (`cxsparse`), the BAT (one
//!   32-bit sector number per block, `0xFFFFFFFF` for a block never written), blocks (a sector
//!   bitmap padded to 512 bytes, then the block's data), and the footer again at the end.
//!
//! The disk's size follows qemu: the footer's `current_size`, except for images made by
//! Virtual PC (`vpc `) or old qemu (`qemu`), which are sized by their CHS geometry (unless
//! that geometry is the largest one, which means "see `current_size`"). Reads of written
//! blocks return the block's data whatever its sector bitmap says, as qemu does.

use std::fmt;

/// Bytes in a footer.
pub const FOOTER_LEN: u64 = 512;
/// Bytes in a dynamic disk header.
const HEADER_LEN: u64 = 1024;
/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header's cookie.
const SPARSE_COOKIE: &[u8; 8] = b"cxsparse";
/// A BAT entry of a block never written.
const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// The largest CHS geometry: its size means "use the footer's current size".
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// The largest BAT read (4 Mi entries: 8 TiB of 2 MiB blocks).
const MAX_BAT_ENTRIES: u32 = 4 << 20;

const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;
const DISK_DIFFERENCING: u32 = 4;

/// Why a VHD cannot be read; `errno` says which kind of failure it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdError {
    /// A positive errno: 22 malformed, 95 unsupported, 5 I/O.
    pub errno: i32,
    /// What is wrong.
    pub message: String,
}

impl VhdError {
    fn corrupt(message: impl Into<String>) -> Self {
        VhdError {
            errno: 22,
            message: message.into(),
        }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        VhdError {
            errno: 95,
            message: message.into(),
        }
    }
}

impl fmt::Display for VhdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The file a VHD is read from.
pub trait File {
    /// The file's size.
    fn size(&self) -> u64;
    /// Fills `buf` with the file's bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VhdError>;
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// The one's complement of the sum of the bytes, with the checksum field at `at` as zero.
fn checksum(b: &[u8], at: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(at..at + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)));
    !sum
}

/// Returns true if `head` (the start of a file) is a dynamic VHD's footer copy. A fixed VHD
/// has no magic at its start (its footer is at the end), so, as for qemu, it probes as raw.
pub fn probe(head: &[u8]) -> bool {
    head.len() >= 8 && &head[..8] == COOKIE
}

/// How blocks of a dynamic disk are laid out.
#[derive(Debug, Clone)]
struct Dynamic {
    block_size: u64,
    bitmap_size: u64,
    /// The sector number of each block's bitmap, or [`UNALLOCATED`].
    bat: Vec<u32>,
}

/// A VHD opened for reading.
#[derive(Debug, Clone)]
pub struct Vhd {
    size: u64,
    dynamic: Option<Dynamic>,
}

/// A piece of a mapped range: where its bytes are in the file, or `None` for zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Virtual offset.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// File offset of the bytes; `None` if they read as zeros.
    pub file: Option<u64>,
}

impl Vhd {
    /// Reads and checks the footer (and for a dynamic disk its header and BAT) of `file`.
    pub fn open(file: &dyn File) -> Result<Vhd, VhdError> {
        let file_size = file.size();
        if file_size < FOOTER_LEN {
            return Err(VhdError::corrupt(format!(
                "not a VHD: the file is {file_size} bytes, smaller than a footer"
            )));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_at(0, &mut footer)?;
        if &footer[..8] != COOKIE {
            // A fixed disk has its footer only at the end.
            file.read_at(file_size - FOOTER_LEN, &mut footer)?;
            if &footer[..8] != COOKIE {
                return Err(VhdError::corrupt(
                    "not a VHD: no footer (cookie 'conectix') at the start or the end of the file",
                ));
            }
        }
        let stored = be32(&footer, 64);
        let computed = checksum(&footer, 64);
        if stored != computed {
            return Err(VhdError::corrupt(format!(
                "corrupt VHD footer: its checksum is {stored:#010x}, its bytes sum to \
                 {computed:#010x}"
            )));
        }
        let current_size = be64(&footer, 48);
        let chs = u64::from(be16(&footer, 56)) * u64::from(footer[58]) * u64::from(footer[59]);
        let app = &footer[28..32];
        let by_geometry = app == b"vpc " || app == b"qemu";
        let size = if by_geometry && chs != MAX_GEOMETRY {
            chs * 512
        } else {
            current_size / 512 * 512
        };
        match be32(&footer, 60) {
            DISK_FIXED => {
                let data = file_size - FOOTER_LEN;
                if size > data {
                    return Err(VhdError::corrupt(format!(
                        "corrupt VHD footer: it says the disk is {size} bytes, the file holds \
                         {data}"
                    )));
                }
                Ok(Vhd {
                    size,
                    dynamic: None,
                })
            }
            DISK_DYNAMIC => {
                let dynamic = open_dynamic(file, be64(&footer, 16), size)?;
                Ok(Vhd {
                    size,
                    dynamic: Some(dynamic),
                })
            }
            DISK_DIFFERENCING => Err(VhdError::unsupported(
                "differencing VHD images (with a parent disk) are not supported",
            )),
            other => Err(VhdError::corrupt(format!(
                "corrupt VHD footer: unknown disk type {other}"
            ))),
        }
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Maps `[offset, offset + length)` (within the disk) to pieces, at most one per block.
    pub fn map(&self, offset: u64, length: u64) -> Vec<Piece> {
        let end = offset + length;
        let Some(d) = &self.dynamic else {
            return vec![Piece {
                offset,
                length,
                file: Some(offset),
            }];
        };
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let block = at / d.block_size;
            let within = at % d.block_size;
            let len = (d.block_size - within).min(end - at);
            let file = match d.bat.get(block as usize) {
                Some(&sector) if sector != UNALLOCATED => {
                    Some(u64::from(sector) * 512 + d.bitmap_size + within)
                }
                _ => None,
            };
            out.push(Piece {
                offset: at,
                length: len,
                file,
            });
            at += len;
        }
        out
    }
}

fn open_dynamic(file: &dyn File, header_at: u64, size: u64) -> Result<Dynamic, VhdError> {
    let file_size = file.size();
    if header_at
        .checked_add(HEADER_LEN)
        .is_none_or(|e| e > file_size)
    {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD footer: the dynamic disk header at {header_at} is past the end of the \
             file ({file_size} bytes)"
        )));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_at(header_at, &mut header)?;
    if &header[..8] != SPARSE_COOKIE {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD: no dynamic disk header (cookie 'cxsparse') at {header_at}"
        )));
    }
    let bat_at = be64(&header, 16);
    let entries = be32(&header, 28);
    let block_size = u64::from(be32(&header, 32));
    if block_size < 512 || !block_size.is_power_of_two() {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD header: block size {block_size} is not a power of two of at least 512"
        )));
    }
    if entries > MAX_BAT_ENTRIES {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD header: {entries} BAT entries, more than {MAX_BAT_ENTRIES}"
        )));
    }
    if u64::from(entries) * block_size < size {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD header: {entries} blocks of {block_size} bytes cannot hold a disk of \
             {size} bytes"
        )));
    }
    let bat_len = u64::from(entries) * 4;
    if bat_at.checked_add(bat_len).is_none_or(|e| e > file_size) {
        return Err(VhdError::corrupt(format!(
            "corrupt VHD: the BAT ({entries} entries at {bat_at}) is past the end of the file \
             ({file_size} bytes)"
        )));
    }
    let mut raw = vec![0u8; bat_len as usize];
    file.read_at(bat_at, &mut raw)?;
    let bat: Vec<u32> = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
    let bitmap_size = (block_size / (8 * 512)).div_ceil(512) * 512;
    let used = size.div_ceil(block_size) as usize;
    for (i, &sector) in bat.iter().enumerate().take(used) {
        if sector == UNALLOCATED {
            continue;
        }
        let end = u64::from(sector) * 512 + bitmap_size + block_size;
        if end > file_size {
            return Err(VhdError::corrupt(format!(
                "corrupt VHD BAT: block {i} at sector {sector} ends at {end}, past the end of the \
                 file ({file_size} bytes)"
            )));
        }
    }
    Ok(Dynamic {
        block_size,
        bitmap_size,
        bat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<u8>);

    impl File for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VhdError> {
            let at = offset as usize;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
    }

    fn footer(kind: u32, app: &[u8; 4], current: u64, chs: (u16, u8, u8), data_at: u64) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(COOKIE);
        f[16..24].copy_from_slice(&data_at.to_be_bytes());
        f[28..32].copy_from_slice(app);
        f[48..56].copy_from_slice(&current.to_be_bytes());
        f[56..58].copy_from_slice(&chs.0.to_be_bytes());
        f[58] = chs.1;
        f[59] = chs.2;
        f[60..64].copy_from_slice(&kind.to_be_bytes());
        let sum = checksum(&f, 64);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// A dynamic disk of `blocks` 4 KiB blocks (sector bitmaps of 512 bytes), block 1 written.
    fn dynamic(blocks: u32) -> Vec<u8> {
        let size = u64::from(blocks) * 4096;
        let mut file = footer(DISK_DYNAMIC, b"qem2", size, (1, 1, 1), 512);
        let mut header = vec![0u8; 1024];
        header[..8].copy_from_slice(SPARSE_COOKIE);
        header[16..24].copy_from_slice(&1536u64.to_be_bytes());
        header[28..32].copy_from_slice(&blocks.to_be_bytes());
        header[32..36].copy_from_slice(&4096u32.to_be_bytes());
        file.extend(header);
        let mut bat = vec![0xFFu8; 512];
        bat[4..8].copy_from_slice(&4u32.to_be_bytes());
        file.extend(bat);
        file.extend(vec![0xFFu8; 512]);
        file.extend(vec![7u8; 4096]);
        file.extend(footer(DISK_DYNAMIC, b"qem2", size, (1, 1, 1), 512));
        file
    }

    #[test]
    fn a_dynamic_disk_maps_written_blocks_to_the_file_and_others_to_zeros() {
        let vhd = Vhd::open(&Mem(dynamic(4))).unwrap();
        assert_eq!(vhd.size(), 16384);
        let pieces = vhd.map(2048, 8192);
        assert_eq!(
            pieces,
            vec![
                Piece {
                    offset: 2048,
                    length: 2048,
                    file: None
                },
                Piece {
                    offset: 4096,
                    length: 4096,
                    file: Some(2048 + 512)
                },
                Piece {
                    offset: 8192,
                    length: 2048,
                    file: None
                },
            ]
        );
    }

    #[test]
    fn size_follows_the_geometry_only_for_virtual_pc_and_old_qemu() {
        let data = |f: Vec<u8>| {
            let mut file = vec![0u8; 20 * 512];
            file.extend(f);
            Mem(file)
        };
        let chs = Vhd::open(&data(footer(
            DISK_FIXED,
            b"qemu",
            20 * 512,
            (2, 4, 2),
            u64::MAX,
        )));
        assert_eq!(chs.unwrap().size(), 16 * 512);
        let cur = Vhd::open(&data(footer(
            DISK_FIXED,
            b"win ",
            20 * 512,
            (2, 4, 2),
            u64::MAX,
        )));
        assert_eq!(cur.unwrap().size(), 20 * 512);
    }

    #[test]
    fn damaged_footers_headers_and_tables_are_named() {
        let mut bad_sum = dynamic(4);
        bad_sum[100] ^= 1;
        let e = Vhd::open(&Mem(bad_sum)).unwrap_err();
        assert!(e.message.contains("checksum"), "{e}");

        let mut bad_bat = dynamic(4);
        bad_bat[1536 + 8..1536 + 12].copy_from_slice(&1000u32.to_be_bytes());
        let e = Vhd::open(&Mem(bad_bat)).unwrap_err();
        assert!(
            e.message.contains("BAT") && e.message.contains("block 2"),
            "{e}"
        );

        let mut bad_header = dynamic(4);
        bad_header[512] = b'x';
        let e = Vhd::open(&Mem(bad_header)).unwrap_err();
        assert!(e.message.contains("cxsparse"), "{e}");

        let e = Vhd::open(&Mem(vec![0u8; 4096])).unwrap_err();
        assert!(e.message.contains("not a VHD"), "{e}");

        let mut diff = dynamic(4);
        let f = footer(DISK_DIFFERENCING, b"qem2", 16384, (1, 1, 1), 512);
        diff[..512].copy_from_slice(&f);
        assert_eq!(Vhd::open(&Mem(diff)).unwrap_err().errno, 95);
    }
}
