//! The envelope of export format 2, byte for byte as `rbd export --export-format 2` writes it:
//!
//! ```text
//! "rbd image v2\n"
//! metadata records: u8 tag, le64 length, data
//!   'O' le64 order | 'T' le64 features | 'U' le64 stripe unit | 'C' le64 stripe count
//!   'M' string key, string value (strings: le32 length + bytes), one per image-meta pair
//! 'E' (no length)
//! "rbd image diffs v2\n"
//! le64 number of diffs (snapshots + 1)
//! the diffs: version 2 diff streams, each with its banner
//! ```
//!
//! The banners and tags are Ceph's; never change them. Unknown metadata tags are skipped by
//! their length, as Ceph's reader does.

use std::io::{self, Read, Write};

use crate::wire::WireError;

/// Banner of export format 2.
pub const IMAGE_BANNER: &[u8] = b"rbd image v2\n";
/// Banner before the diffs of export format 2.
pub const DIFFS_BANNER: &[u8] = b"rbd image diffs v2\n";
/// The most image-meta pairs and bytes of metadata accepted.
const MAX_META_BYTES: u64 = 64 << 20;

/// Metadata record tags.
pub mod tag {
    /// Image order (object size as a power of two).
    pub const ORDER: u8 = b'O';
    /// Feature bits.
    pub const FEATURES: u8 = b'T';
    /// Stripe unit.
    pub const STRIPE_UNIT: u8 = b'U';
    /// Stripe count.
    pub const STRIPE_COUNT: u8 = b'C';
    /// One image-meta key and value.
    pub const META: u8 = b'M';
    /// The end of the metadata.
    pub const END: u8 = b'E';
}

/// The image properties export format 2 carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Image order, if recorded.
    pub order: Option<u64>,
    /// Feature bits, if recorded.
    pub features: Option<u64>,
    /// Stripe unit, if recorded.
    pub stripe_unit: Option<u64>,
    /// Stripe count, if recorded.
    pub stripe_count: Option<u64>,
    /// Image-meta pairs, in order.
    pub image_meta: Vec<(String, String)>,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes the banner, the metadata and the diff count; the diffs follow.
pub fn write_header(w: &mut impl Write, meta: &Metadata, diffs: u64) -> io::Result<()> {
    let mut out = IMAGE_BANNER.to_vec();
    let mut u64_record = |t: u8, v: Option<u64>| {
        if let Some(v) = v {
            out.push(t);
            out.extend_from_slice(&8u64.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    u64_record(tag::ORDER, meta.order);
    u64_record(tag::FEATURES, meta.features);
    u64_record(tag::STRIPE_UNIT, meta.stripe_unit);
    u64_record(tag::STRIPE_COUNT, meta.stripe_count);
    for (k, v) in &meta.image_meta {
        out.push(tag::META);
        out.extend_from_slice(&(k.len() as u64 + v.len() as u64 + 8).to_le_bytes());
        put_string(&mut out, k);
        put_string(&mut out, v);
    }
    out.push(tag::END);
    out.extend_from_slice(DIFFS_BANNER);
    out.extend_from_slice(&diffs.to_le_bytes());
    w.write_all(&out)
}

/// Reads exactly `buf.len()` bytes, reporting a short stream at position `at`.
fn fill(r: &mut impl Read, buf: &mut [u8], at: &mut u64) -> Result<(), WireError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(WireError::Truncated {
                    at: *at + done as u64,
                });
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    *at += buf.len() as u64;
    Ok(())
}

fn malformed(tag: u8, at: u64, why: impl Into<String>) -> WireError {
    WireError::Malformed {
        tag: tag as char,
        at,
        why: why.into(),
    }
}

fn take_string(body: &[u8], pos: &mut usize, tag: u8, at: u64) -> Result<String, WireError> {
    let len_bytes: [u8; 4] = body
        .get(*pos..*pos + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(tag, at, "a string length runs past the record"))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    *pos += 4;
    let bytes = body
        .get(*pos..*pos + len)
        .ok_or_else(|| malformed(tag, at, "a string runs past the record"))?;
    *pos += len;
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(tag, at, "a string is not UTF-8"))
}

/// Reads the banner, the metadata and the diff count; returns them and the stream position.
pub fn read_header(r: &mut impl Read) -> Result<(Metadata, u64, u64), WireError> {
    let mut at = 0;
    let mut banner = [0u8; 13];
    fill(r, &mut banner, &mut at).map_err(|_| WireError::Banner)?;
    if banner != IMAGE_BANNER {
        return Err(WireError::Banner);
    }
    let mut meta = Metadata::default();
    let mut meta_bytes = 0u64;
    loop {
        let start = at;
        let mut t = [0u8; 1];
        fill(r, &mut t, &mut at)?;
        if t[0] == tag::END {
            break;
        }
        let mut len = [0u8; 8];
        fill(r, &mut len, &mut at)?;
        let len = u64::from_le_bytes(len);
        meta_bytes += len;
        if meta_bytes > MAX_META_BYTES {
            return Err(malformed(t[0], start, format!("{len} bytes of metadata")));
        }
        let mut body = vec![0u8; len as usize];
        fill(r, &mut body, &mut at)?;
        let as_u64 = || -> Result<u64, WireError> {
            let b: [u8; 8] = body
                .as_slice()
                .try_into()
                .map_err(|_| malformed(t[0], start, format!("{len} bytes instead of 8")))?;
            Ok(u64::from_le_bytes(b))
        };
        match t[0] {
            tag::ORDER => meta.order = Some(as_u64()?),
            tag::FEATURES => meta.features = Some(as_u64()?),
            tag::STRIPE_UNIT => meta.stripe_unit = Some(as_u64()?),
            tag::STRIPE_COUNT => meta.stripe_count = Some(as_u64()?),
            tag::META => {
                let mut pos = 0;
                let k = take_string(&body, &mut pos, t[0], start)?;
                let v = take_string(&body, &mut pos, t[0], start)?;
                if pos != body.len() {
                    return Err(malformed(t[0], start, "bytes after the value"));
                }
                meta.image_meta.push((k, v));
            }
            // Unknown properties (newer writers) are skipped by their length.
            _ => {}
        }
    }
    let mut banner = [0u8; 19];
    fill(r, &mut banner, &mut at)?;
    if banner != DIFFS_BANNER {
        return Err(malformed(
            b'E',
            at - 19,
            "no 'rbd image diffs v2' banner after it",
        ));
    }
    let mut count = [0u8; 8];
    fill(r, &mut count, &mut at)?;
    Ok((meta, u64::from_le_bytes(count), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_vector_parses_and_reencodes_identically() {
        let mut b = b"rbd image v2\n".to_vec();
        b.push(b'O');
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0]);
        b.push(b'T');
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 61, 0, 0, 0, 0, 0, 0, 0]);
        b.push(b'U');
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0]);
        b.push(b'C');
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        b.push(b'M');
        b.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'1']);
        b.push(b'E');
        b.extend_from_slice(b"rbd image diffs v2\n");
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        let (meta, count, at) = read_header(&mut &b[..]).unwrap();
        let expected = Metadata {
            order: Some(22),
            features: Some(61),
            stripe_unit: Some(4 << 20),
            stripe_count: Some(1),
            image_meta: vec![("k".into(), "v1".into())],
        };
        assert_eq!(meta, expected);
        assert_eq!((count, at), (2, b.len() as u64));
        let mut out = Vec::new();
        write_header(&mut out, &expected, 2).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn unknown_metadata_is_skipped_and_bad_banners_refused() {
        let mut b = b"rbd image v2\n".to_vec();
        b.push(b'F');
        b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        b.push(b'E');
        b.extend_from_slice(b"rbd image diffs v2\n");
        b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let (meta, count, _) = read_header(&mut &b[..]).unwrap();
        assert_eq!((meta, count), (Metadata::default(), 1));
        assert!(matches!(
            read_header(&mut &b"rbd diff v1\n"[..]),
            Err(WireError::Banner)
        ));
        assert!(matches!(
            read_header(&mut &b[..20]),
            Err(WireError::Truncated { .. })
        ));
    }
}
