//! Chunk digests, the output of [`crate::ReadStep::Checksum`]: what two copies of an object
//! compare without moving its bytes.
//!
//! A digest is the xxHash64 (seed 0) of one chunk, the function RADOS' `checksum` op computes
//! with `LIBRADOS_CHECKSUM_TYPE_XXHASH64` and a zero seed. Bytes past the end of an object hash
//! as zeros, so an object and the same object with zeros written at its end compare equal, as
//! an image reads them.

use xxhash_rust::xxh64::Xxh64;

/// The chunk size rbdx compares copies with (verify, a migration abort's write-back).
pub const DEFAULT_CHUNK: u64 = 64 << 10;

/// The most chunks one checksum step may ask for.
pub const MAX_CHUNKS: u64 = 1 << 16;

/// Zeros hashed for bytes past the data.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Returns the digests of `length` bytes cut into `chunk`-byte pieces (the last may be
/// shorter), of which `data` holds the first ones; the rest are zeros.
pub fn chunk_digests(data: &[u8], length: u64, chunk: u64) -> Vec<u64> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(length.div_ceil(chunk) as usize);
    let mut at = 0u64;
    while at < length {
        let end = (at + chunk).min(length);
        let mut hasher = Xxh64::new(0);
        let from = (data.len() as u64).min(at);
        let have = (data.len() as u64).min(end);
        hasher.update(&data[from as usize..have as usize]);
        let mut zeros = end - at - (have - from);
        while zeros > 0 {
            let n = zeros.min(ZEROS.len() as u64);
            hasher.update(&ZEROS[..n as usize]);
            zeros -= n;
        }
        out.push(hasher.digest());
        at = end;
    }
    out
}

/// Returns the digest of `length` zeros cut into `chunk`-byte pieces: what an absent object
/// (or a hole) gives.
pub fn zero_digests(length: u64, chunk: u64) -> Vec<u64> {
    chunk_digests(&[], length, chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_past_the_data_hash_as_zeros() {
        let mut full = vec![0u8; 10_000];
        full[..3].copy_from_slice(b"abc");
        assert_eq!(
            chunk_digests(b"abc", 10_000, 4096),
            chunk_digests(&full, 10_000, 4096)
        );
        assert_eq!(chunk_digests(b"abc", 10_000, 4096).len(), 3);
        assert_eq!(zero_digests(8192, 4096)[0], zero_digests(8192, 4096)[1]);
        assert_ne!(chunk_digests(b"abc", 4096, 4096), zero_digests(4096, 4096));
    }

    #[test]
    fn the_digest_is_xxhash64_with_a_zero_seed() {
        // The published test vector of XXH64 for the empty input, seed 0.
        assert_eq!(chunk_digests(b"", 0, 1), Vec::<u64>::new());
        let mut h = Xxh64::new(0);
        h.update(b"");
        assert_eq!(h.digest(), 0xEF46_DB37_51D8_E999);
    }
}
