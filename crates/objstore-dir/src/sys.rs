//! Thin, safe wrappers over the Linux calls the backend needs and `std` does not offer:
//! open-file-description byte-range locks, hole punching and data/hole seeking.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes an exclusive open-file-description lock on byte `offset` of `file`, waiting for it.
///
/// OFD locks belong to the open file description, not the process, so two threads using two
/// descriptors exclude each other, and the kernel drops them when the process dies.
pub fn ofd_lock(file: &File, offset: u64, wait: bool) -> io::Result<bool> {
    let mut lock = flock_for(offset, libc::F_WRLCK as libc::c_short);
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: `lock` is a valid, initialised `struct flock` that outlives the call, and the
        // descriptor is owned by `file`, which is borrowed for the duration of the call.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Releases the lock taken by [`ofd_lock`] on byte `offset`.
pub fn ofd_unlock(file: &File, offset: u64) -> io::Result<()> {
    let mut lock = flock_for(offset, libc::F_UNLCK as libc::c_short);
    // SAFETY: as in `ofd_lock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn flock_for(offset: u64, kind: libc::c_short) -> libc::flock {
    // SAFETY: `struct flock` is plain old data; all-zero is a valid value, and OFD locks
    // require `l_pid` to be zero.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Deallocates `[offset, offset + length)` of `file` without changing its size; the range then
/// reads as zeros.
pub fn punch_hole(file: &File, offset: u64, length: u64) -> io::Result<()> {
    if length == 0 {
        return Ok(());
    }
    // SAFETY: plain system call on a descriptor owned by `file`.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            length as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return write_zeros(file, offset, length);
    }
    Err(err)
}

fn write_zeros(file: &File, offset: u64, length: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let end = (offset + length).min(len);
    let zeros = vec![0u8; 1 << 20];
    let mut pos = offset;
    while pos < end {
        let n = ((end - pos) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: plain system call on a descriptor owned by `file`; `lseek` with SEEK_DATA or
    // SEEK_HOLE does not move data, only the descriptor's offset, which this crate never uses
    // (all I/O is positional).
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if rc >= 0 {
        return Ok(Some(rc as u64));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Reads up to `len` bytes at `offset` into a new buffer, without zero-filling it first;
/// returns the bytes read (fewer at the end of the file).
pub fn pread_new(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0usize;
    while filled < len {
        // SAFETY: the pointer and length describe the vector's spare capacity, which the kernel
        // writes without reading; no reference to uninitialised memory is created, and
        // `set_len` below only covers bytes the kernel reported as written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                len - filled,
                (offset + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        filled += n as usize;
        // SAFETY: the first `filled` bytes were written by `pread` above.
        unsafe { buf.set_len(filled) };
    }
    Ok(buf)
}

/// Returns the allocated ranges of `file` within `[offset, end)`, as `(start, end)` pairs.
/// File systems without SEEK_DATA report the whole range as allocated.
pub fn data_ranges(file: &File, offset: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let start = match seek(file, pos, libc::SEEK_DATA) {
            Ok(Some(start)) => start,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                out.push((pos, end));
                break;
            }
            Err(e) => return Err(e),
        };
        if start >= end {
            break;
        }
        let stop = seek(file, start, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        out.push((start, stop));
        pos = stop;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn punched_range_reads_zero_and_is_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.write_all_at(&vec![7u8; 1 << 20], 0).unwrap();
        punch_hole(&file, 0, 512 << 10).unwrap();
        let mut buf = [1u8; 16];
        file.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [0u8; 16]);
        let ranges = data_ranges(&file, 0, 1 << 20).unwrap();
        assert!(ranges.iter().all(|(s, _)| *s >= 512 << 10), "{ranges:?}");
        assert!(ranges.iter().any(|(_, e)| *e == 1 << 20));
    }

    #[test]
    fn ofd_locks_exclude_other_descriptors_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let a = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let b = File::options().read(true).write(true).open(&path).unwrap();
        assert!(ofd_lock(&a, 5, true).unwrap());
        assert!(!ofd_lock(&b, 5, false).unwrap());
        assert!(ofd_lock(&b, 6, false).unwrap());
        ofd_unlock(&a, 5).unwrap();
        assert!(ofd_lock(&b, 5, false).unwrap());
    }
}

/// A file mapped shared into memory as 64-bit words that other processes change too.
#[derive(Debug)]
pub struct SharedMap {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through atomics, which may be shared and sent
// between threads; it stays valid until the owner drops it.
unsafe impl Send for SharedMap {}
// SAFETY: as above.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps the first `len` bytes of `file` (which must be at least that long), read-write
    /// and shared.
    pub fn new(file: &File, len: usize) -> io::Result<SharedMap> {
        // SAFETY: a fresh mapping at an address the kernel picks, of a descriptor `file` owns;
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<std::sync::atomic::AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SharedMap {
            ptr,
            words: len / 8,
        })
    }

    /// The mapped words.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is page-aligned, `words * 8` bytes long, lives as long as
        // `self`, and is only accessed atomically (by this and other processes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing borrows any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.words * 8);
        }
    }
}
