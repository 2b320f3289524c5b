//! Reading the little-endian results the C++ shim returns (layouts in `shim/shim.cc`). Byte
//! slices share the shim's one buffer instead of being copied.

use bytes::Bytes;

use crate::cluster::ForeignBuf;

/// A cursor over one shim result.
#[derive(Debug)]
pub(crate) struct ShimReader {
    buf: Bytes,
    pos: usize,
}

impl ShimReader {
    /// Reads `buf` from its start.
    pub(crate) fn new(buf: ForeignBuf) -> Self {
        ShimReader::from_bytes(Bytes::from_owner(buf))
    }

    /// Reads `buf` from its start.
    pub(crate) fn from_bytes(buf: Bytes) -> Self {
        ShimReader { buf, pos: 0 }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len())?;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(out)
    }

    /// A `u8`.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| <[u8; 4]>::try_from(&b[..]).ok())
            .map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map(u64::from_le_bytes)
    }

    /// A `u32` length and that many bytes.
    pub(crate) fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A `u32` length and that many bytes of text.
    pub(crate) fn string(&mut self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// A `u32` count and that many (text, bytes) pairs.
    pub(crate) fn pairs(&mut self) -> Option<Vec<(String, Bytes)>> {
        let n = self.u32()?;
        (0..n)
            .map(|_| Some((self.string()?, self.bytes()?)))
            .collect()
    }
}
