//! Reusable read buffers.
//!
//! A fresh multi-megabyte buffer costs a page fault per 4 KiB page the first time it is
//! written, which is more than the read itself when the data is in the page cache. Drivers
//! take their read buffers from the [`BufferPool`] instead; a buffer returns to the pool when
//! the last [`Bytes`] made from it is dropped.

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// Buffers larger than this are never kept.
const MAX_KEPT: usize = 16 << 20;
/// Buffers smaller than this are cheap to allocate and never kept.
const MIN_KEPT: usize = 64 << 10;

/// The largest run of zeros [`zeros`] shares instead of allocating.
const SHARED_ZEROS: usize = 4 << 20;

/// Returns `len` zero bytes; up to 4 MiB they are one shared static buffer, which costs
/// nothing to make and, never written, no memory either.
pub fn zeros(len: usize) -> Bytes {
    static ZEROS: [u8; SHARED_ZEROS] = [0; SHARED_ZEROS];
    if len <= SHARED_ZEROS {
        Bytes::from_static(&ZEROS[..len])
    } else {
        Bytes::from(vec![0u8; len])
    }
}

/// A bounded set of free buffers, shared by every driver of the process.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    budget: usize,
}

/// A buffer taken from a [`BufferPool`], returned to it on drop.
#[derive(Debug)]
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: &'static BufferPool,
}

impl BufferPool {
    /// Returns the process-wide pool, which keeps at most 128 MiB of free buffers.
    pub fn global() -> &'static BufferPool {
        static POOL: OnceLock<BufferPool> = OnceLock::new();
        POOL.get_or_init(|| BufferPool::new(128 << 20))
    }

    /// Returns a pool that keeps at most `budget` bytes of free buffers.
    pub fn new(budget: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            budget,
        }
    }

    /// Returns a buffer of exactly `len` bytes, reusing a free one of up to twice that
    /// capacity. Its contents are unspecified (a reused buffer keeps what it last held): the
    /// caller overwrites all of it.
    pub fn take(&'static self, len: usize) -> PooledBuf {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
                .map(|i| free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        PooledBuf { buf, pool: self }
    }

    fn give_back(&self, buf: Vec<u8>) {
        if !(MIN_KEPT..=MAX_KEPT).contains(&buf.capacity()) {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= self.budget {
            free.push(buf);
        }
    }
}

impl PooledBuf {
    /// Turns the buffer into [`Bytes`] without copying; the buffer goes back to the pool when
    /// the last clone or slice of them is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// Shortens the buffer to `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused_within_the_budget() {
        let pool: &'static BufferPool = Box::leak(Box::new(BufferPool::new(3 << 20)));
        let mut a = pool.take(1 << 20);
        a.fill(7);
        let ptr = a.as_ptr();
        let bytes = a.freeze();
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert!(
            pool.free.lock().unwrap().is_empty(),
            "a slice still holds it"
        );
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        let small = pool.take(4096);
        assert_ne!(
            small.as_ptr(),
            ptr,
            "a small read does not pin a big buffer"
        );
        drop(small);
        let b = pool.take(600 << 10);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), 600 << 10);
        drop(b);
        let big: Vec<PooledBuf> = (0..4).map(|_| pool.take(1 << 20)).collect();
        drop(big);
        let kept: usize = pool.free.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(kept <= 3 << 20, "{kept}");
    }
}
