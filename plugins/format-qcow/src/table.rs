//! Cluster mapping: from a virtual offset, through the L1 and L2 tables, to where the bytes
//! are (a host offset, zeros, a compressed cluster, or the backing image).

use rbdx_source::Result;

use crate::header::{Header, error};

/// Where the bytes at one virtual offset come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// At this host offset of the image file.
    Data(u64),
    /// Zeros (a zero cluster or subcluster).
    Zero,
    /// Not in this image: from the backing image, or zeros without one.
    Unallocated,
    /// Inside a compressed cluster stored at `host`, `len` bytes long; `at` is the offset
    /// within the cluster.
    Compressed {
        /// Host offset of the compressed data.
        host: u64,
        /// Stored length (sector-rounded).
        len: u64,
        /// Offset within the decompressed cluster.
        at: u64,
    },
}

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED_V2: u64 = 1 << 62;
const COMPRESSED_V1: u64 = 1 << 63;
const ZERO_FLAG: u64 = 1;

/// Returns the L2 table offset an L1 entry points to (0: none).
pub fn l2_offset(header: &Header, l1_entry: u64) -> u64 {
    if header.version == 1 {
        l1_entry
    } else {
        l1_entry & L1_OFFSET_MASK
    }
}

/// Returns the byte length of an L2 table.
pub fn l2_table_len(header: &Header) -> u64 {
    let entry = if header.extended_l2 { 16 } else { 8 };
    (1u64 << header.l2_bits) * entry
}

/// Splits a virtual offset into (L1 index, L2 index, offset in cluster).
pub fn split(header: &Header, virt: u64) -> (u64, u64, u64) {
    let in_cluster = virt & (header.cluster_size() - 1);
    let cluster = virt >> header.cluster_bits;
    (
        cluster >> header.l2_bits,
        cluster & ((1 << header.l2_bits) - 1),
        in_cluster,
    )
}

/// Classifies the L2 entry (and, with extended L2, its subcluster bitmap) for the byte at
/// `in_cluster`; returns the mapping and how many bytes from there it covers (to the end of
/// the cluster or subcluster).
pub fn classify(
    header: &Header,
    entry: u64,
    bitmap: u64,
    in_cluster: u64,
    stream_size: u64,
) -> Result<(Mapping, u64)> {
    let cluster_size = header.cluster_size();
    let to_cluster_end = cluster_size - in_cluster;
    if header.version == 1 {
        if entry & COMPRESSED_V1 != 0 {
            let shift = 63 - header.cluster_bits;
            let host = entry & ((1u64 << shift) - 1);
            let len = (entry >> shift) & (cluster_size - 1);
            return compressed(host, len, in_cluster, to_cluster_end, stream_size);
        }
        return Ok(if entry == 0 {
            (Mapping::Unallocated, to_cluster_end)
        } else {
            data(entry, in_cluster, to_cluster_end, stream_size)?
        });
    }
    if entry & COMPRESSED_V2 != 0 {
        let bits = 62 - (header.cluster_bits - 8);
        let host = entry & ((1u64 << bits) - 1);
        let sectors = ((entry >> bits) & ((1u64 << (header.cluster_bits - 8)) - 1)) + 1;
        let len = (sectors * 512).saturating_sub(host & 511);
        return compressed(host, len, in_cluster, to_cluster_end, stream_size);
    }
    let host = entry & L2_OFFSET_MASK;
    if header.extended_l2 {
        let sub_size = cluster_size / 32;
        let sub = in_cluster / sub_size;
        let to_sub_end = sub_size - in_cluster % sub_size;
        let allocated = bitmap & (1 << sub) != 0;
        let zero = bitmap & (1 << (32 + sub)) != 0;
        if zero {
            return Ok((Mapping::Zero, to_sub_end));
        }
        if allocated {
            if host == 0 {
                return Err(error(
                    rbdx_source::ErrorKind::Invalid,
                    "allocated subcluster without a host cluster",
                ));
            }
            return data(host, in_cluster, to_sub_end, stream_size);
        }
        return Ok((Mapping::Unallocated, to_sub_end));
    }
    if header.version >= 3 && entry & ZERO_FLAG != 0 {
        return Ok((Mapping::Zero, to_cluster_end));
    }
    if host == 0 {
        return Ok((Mapping::Unallocated, to_cluster_end));
    }
    data(host, in_cluster, to_cluster_end, stream_size)
}

fn data(host: u64, in_cluster: u64, run: u64, stream_size: u64) -> Result<(Mapping, u64)> {
    if host >= stream_size {
        return Err(error(
            rbdx_source::ErrorKind::Invalid,
            format!("data cluster at {host} is past the end of the file ({stream_size} bytes)"),
        ));
    }
    Ok((Mapping::Data(host + in_cluster), run))
}

fn compressed(host: u64, len: u64, at: u64, run: u64, stream_size: u64) -> Result<(Mapping, u64)> {
    if host >= stream_size || len == 0 {
        return Err(error(
            rbdx_source::ErrorKind::Invalid,
            format!(
                "compressed cluster at {host} is past the end of the file ({stream_size} bytes)"
            ),
        ));
    }
    Ok((Mapping::Compressed { host, len, at }, run))
}

/// Decompresses one cluster.
pub fn decompress(header: &Header, input: &[u8]) -> Result<Vec<u8>> {
    let size = header.cluster_size() as usize;
    let mut out = vec![0u8; size];
    let bad = |what: String| error(rbdx_source::ErrorKind::Invalid, what);
    match header.compression {
        crate::header::Compression::Zlib => {
            let mut z = flate2::Decompress::new(false);
            let status = z
                .decompress(input, &mut out, flate2::FlushDecompress::Finish)
                .map_err(|e| bad(format!("cannot inflate a compressed cluster: {e}")))?;
            if z.total_out() as usize != size && status != flate2::Status::StreamEnd {
                return Err(bad(format!(
                    "a compressed cluster inflates to {} bytes, not {size}",
                    z.total_out()
                )));
            }
        }
        crate::header::Compression::Zstd => {
            use std::io::Read as _;
            let mut d = zstd::stream::read::Decoder::new(input)
                .map_err(|e| bad(format!("cannot start zstd: {e}")))?
                .single_frame();
            d.read_exact(&mut out)
                .map_err(|e| bad(format!("cannot decompress a zstd cluster: {e}")))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Compression;

    fn header(version: u32, extended_l2: bool) -> Header {
        Header {
            version,
            size: 1 << 30,
            cluster_bits: 16,
            l2_bits: if extended_l2 { 12 } else { 13 },
            l1_size: 2,
            l1_offset: 0,
            backing_name: None,
            backing_format: None,
            snapshot_count: 0,
            snapshots_offset: 0,
            extended_l2,
            compression: Compression::Zlib,
        }
    }

    #[test]
    fn standard_entries_map_data_zero_and_holes() {
        let h = header(3, false);
        let (m, run) = classify(&h, 0x30000 | (1 << 63), 0, 100, 1 << 20).unwrap();
        assert_eq!((m, run), (Mapping::Data(0x30000 + 100), 65536 - 100));
        assert_eq!(classify(&h, 1, 0, 0, 1 << 20).unwrap().0, Mapping::Zero);
        assert_eq!(
            classify(&h, 0, 0, 0, 1 << 20).unwrap().0,
            Mapping::Unallocated
        );
        assert!(classify(&h, 0x300000, 0, 0, 1 << 20).is_err());
    }

    #[test]
    fn subclusters_follow_their_bitmap() {
        let h = header(3, true);
        // Subcluster 1 allocated, subcluster 2 zero, the rest unallocated.
        let bitmap = (1u64 << 1) | (1u64 << (32 + 2));
        let sub = 65536 / 32;
        assert_eq!(
            classify(&h, 0x10000, bitmap, 0, 1 << 20).unwrap(),
            (Mapping::Unallocated, sub)
        );
        assert_eq!(
            classify(&h, 0x10000, bitmap, sub + 5, 1 << 20).unwrap(),
            (Mapping::Data(0x10000 + sub + 5), sub - 5)
        );
        assert_eq!(
            classify(&h, 0x10000, bitmap, 2 * sub, 1 << 20).unwrap().0,
            Mapping::Zero
        );
    }

    #[test]
    fn compressed_entries_give_host_and_length() {
        let h = header(3, false);
        let bits = 62 - 8;
        let entry = COMPRESSED_V2 | (2u64 << bits) | 0x1200;
        let (m, _) = classify(&h, entry, 0, 7, 1 << 20).unwrap();
        assert_eq!(
            m,
            Mapping::Compressed {
                host: 0x1200,
                len: 3 * 512,
                at: 7
            }
        );
    }
}
