//! A pool of large read buffers.
//!
//! Object reads hand their bytes to the caller, who drops them on another thread. Allocated
//! fresh each time, a 4 MiB buffer is mapped anew by the allocator and every page faults while
//! the kernel copies into it, which measured about a quarter slower than reading into
//! resident memory. Buffers of 64 KiB and more therefore come from this pool, and go back to
//! it when the last `Bytes` pointing at them is dropped, whatever thread drops it.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Smallest buffer worth pooling.
const MIN_POOLED: usize = 64 << 10;
/// Largest buffer pooled (the object size limit).
const MAX_POOLED: usize = 128 << 20;
/// Idle buffers kept per size class: enough for 16 reads in flight, as long as they hold no
/// more than [`IDLE_BYTES_PER_CLASS`] together.
const PER_CLASS: usize = 16;
/// Idle bytes kept per size class (at least two buffers are kept whatever their size).
const IDLE_BYTES_PER_CLASS: usize = 64 << 20;
/// Size classes: powers of two from `MIN_POOLED` to `MAX_POOLED`.
const CLASSES: usize = (MAX_POOLED / MIN_POOLED).trailing_zeros() as usize + 1;

/// Idle buffers by size class.
#[derive(Debug)]
pub(crate) struct BufferPool {
    classes: Vec<Mutex<Vec<Vec<u8>>>>,
}

fn class_of(len: usize) -> Option<usize> {
    if !(MIN_POOLED..=MAX_POOLED).contains(&len) {
        return None;
    }
    Some((len.next_power_of_two() / MIN_POOLED).trailing_zeros() as usize)
}

impl BufferPool {
    pub(crate) fn new() -> Arc<BufferPool> {
        Arc::new(BufferPool {
            classes: (0..CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// Returns a buffer of exactly `len` initialised bytes (their content is unspecified).
    pub(crate) fn take(self: &Arc<Self>, len: usize) -> Buffer {
        let class = class_of(len);
        let reused = class.and_then(|c| {
            self.classes[c]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
        });
        let mut buf =
            reused.unwrap_or_else(|| Vec::with_capacity(class.map_or(len, |c| MIN_POOLED << c)));
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        Buffer {
            buf,
            pool: class.map(|_| Arc::downgrade(self)),
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        if let Some(class) = class_of(buf.capacity()) {
            let mut idle = self.classes[class]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let keep = (IDLE_BYTES_PER_CLASS / buf.capacity()).clamp(2, PER_CLASS);
            if idle.len() < keep {
                idle.push(buf);
            }
        }
    }
}

/// A buffer from the pool; becomes `Bytes` with [`Buffer::freeze`].
#[derive(Debug)]
pub(crate) struct Buffer {
    buf: Vec<u8>,
    pool: Option<Weak<BufferPool>>,
}

impl Buffer {
    /// The bytes, for filling.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Turns the buffer into `Bytes` that return it to the pool when dropped.
    pub(crate) fn freeze(self) -> Bytes {
        if self.pool.is_some() {
            Bytes::from_owner(self)
        } else {
            Bytes::from(std::mem::take(&mut { self }.buf))
        }
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().and_then(|p| p.upgrade()) {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_bytes_return_their_buffer() {
        let pool = BufferPool::new();
        let mut a = pool.take(4 << 20);
        a.as_mut_slice()[0] = 9;
        let bytes = a.freeze();
        assert_eq!(bytes.len(), 4 << 20);
        assert_eq!(bytes[0], 9);
        let ptr = bytes.as_ptr();
        drop(bytes);
        let b = pool.take(3 << 20);
        assert_eq!(b.as_ref().as_ptr(), ptr, "the same class reuses the buffer");
        assert_eq!(b.as_ref().len(), 3 << 20);
    }

    #[test]
    fn small_buffers_are_not_pooled() {
        let pool = BufferPool::new();
        let small = pool.take(100).freeze();
        assert_eq!(small.len(), 100);
        assert!(class_of(100).is_none());
    }
}
