//! The primitive encodings of message fields: little-endian integers, length-prefixed bytes and
//! strings, options and lists. Decoding never trusts a length: every one is checked against
//! the bytes that are left before anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a payload is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The result of decoding.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// Returns a decode error saying `what`.
pub fn invalid<T>(what: impl Into<String>) -> DecodeResult<T> {
    Err(DecodeError(what.into()))
}

/// Byte strings at least this long are not copied into a payload but kept as their own chunk.
const SHARED_MIN: usize = 64 << 10;

/// A payload as a list of chunks, sent one after the other (so that large data is not copied).
pub type Rope = Vec<Bytes>;

/// Returns the length of a rope.
pub fn rope_len(rope: &[Bytes]) -> usize {
    rope.iter().map(Bytes::len).sum()
}

/// Builds a payload.
#[derive(Debug, Default)]
pub struct Writer {
    chunks: Vec<Bytes>,
    buf: BytesMut,
}

impl Writer {
    /// Returns an empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Returns the payload in one piece.
    pub fn finish(self) -> Bytes {
        if self.chunks.is_empty() {
            return self.buf.freeze();
        }
        let rope = self.finish_rope();
        let mut out = BytesMut::with_capacity(rope_len(&rope));
        for chunk in rope {
            out.put_slice(&chunk);
        }
        out.freeze()
    }

    /// Returns the payload as chunks, large byte strings among them uncopied.
    pub fn finish_rope(mut self) -> Rope {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        self.chunks
    }

    /// Appends length-prefixed bytes, keeping large ones as their own chunk (no copy).
    pub fn data(&mut self, v: &Bytes) {
        if v.len() < SHARED_MIN {
            self.bytes(v);
            return;
        }
        self.len(v.len());
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        self.chunks.push(v.clone());
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// Appends a boolean as one byte.
    pub fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    /// Appends a u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }

    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }

    /// Appends an i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64_le(v);
    }

    /// Appends a length (as u32).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Appends length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.put_slice(v);
    }

    /// Appends a length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// Appends fixed bytes without a length.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    /// Appends an optional value: a presence byte, then the value.
    pub fn option<T>(&mut self, v: Option<T>, put: impl FnOnce(&mut Writer, T)) {
        match v {
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
            None => self.u8(0),
        }
    }

    /// Appends a list: its length, then each item.
    pub fn list<T>(&mut self, items: &[T], mut put: impl FnMut(&mut Writer, &T)) {
        self.len(items.len());
        for item in items {
            put(self, item);
        }
    }
}

/// Reads a payload front to back.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Reads `payload`.
    pub fn new(payload: Bytes) -> Reader {
        Reader {
            buf: payload,
            pos: 0,
        }
    }

    fn take(&mut self, n: usize) -> DecodeResult<&[u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return invalid(format!(
                "message truncated: {n} bytes wanted at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            ));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Reads a byte.
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a boolean byte (0 or 1).
    pub fn bool(&mut self) -> DecodeResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            n => invalid(format!("boolean byte {n}")),
        }
    }

    /// Reads a u32.
    pub fn u32(&mut self) -> DecodeResult<u32> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a u64.
    pub fn u64(&mut self) -> DecodeResult<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Reads an i64.
    pub fn i64(&mut self) -> DecodeResult<i64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(b))
    }

    /// Reads a length that the rest of the payload can hold at `min_item` bytes per item.
    pub fn len(&mut self, min_item: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_item.max(1)) > left && min_item > 0 {
            return invalid(format!(
                "length {n} cannot fit in the {left} bytes left of the message"
            ));
        }
        Ok(n)
    }

    /// Reads length-prefixed bytes without copying them.
    pub fn bytes(&mut self) -> DecodeResult<Bytes> {
        let n = self.len(1)?;
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> DecodeResult<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).or_else(|_| invalid("a string is not UTF-8"))
    }

    /// Reads `N` fixed bytes.
    pub fn raw<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads an optional value.
    pub fn option<T>(
        &mut self,
        get: impl FnOnce(&mut Reader) -> DecodeResult<T>,
    ) -> DecodeResult<Option<T>> {
        if self.bool()? {
            get(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a list whose items take at least `min_item` bytes each.
    pub fn list<T>(
        &mut self,
        min_item: usize,
        mut get: impl FnMut(&mut Reader) -> DecodeResult<T>,
    ) -> DecodeResult<Vec<T>> {
        let n = self.len(min_item)?;
        let mut out = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            out.push(get(self)?);
        }
        Ok(out)
    }

    /// Fails unless every byte was read.
    pub fn end(&self) -> DecodeResult<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            invalid(format!(
                "{} bytes left over after the message",
                self.buf.len() - self.pos
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_lengths_are_checked() {
        let mut w = Writer::new();
        w.u8(3);
        w.u64(u64::MAX);
        w.str("pool");
        w.option(Some(5u32), |w, v| w.u32(v));
        w.list(&["a", "bc"], |w, s| w.str(s));
        let mut r = Reader::new(w.finish());
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.str().as_deref(), Ok("pool"));
        assert_eq!(r.option(|r| r.u32()), Ok(Some(5)));
        assert_eq!(r.list(4, |r| r.str()), Ok(vec!["a".into(), "bc".into()]));
        assert!(r.end().is_ok());

        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f, 1]));
        assert!(r.bytes().is_err());
    }
}
