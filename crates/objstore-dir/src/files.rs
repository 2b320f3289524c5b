//! Object data files: where they live, a cache of open descriptors, sparse copies, and the set
//! of files and directories this process changed since its last flush.
//!
//! A data file is named by a file id that is never reused, but its inode may be: spares and
//! recycled files (see [`crate::recycle`]) move released files under new names. A descriptor
//! cached for a released file may therefore show another object's bytes; a data read checks
//! afterwards that the row it read from (head or clone) still names the same version and
//! file, which rejects them.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::recycle::Recycled;
use crate::sys;

/// Open descriptors kept per process.
const CACHE_CAPACITY: usize = 256;
/// Independently locked parts of the descriptor cache (by file id), so that threads reading
/// different objects do not take turns on one lock.
const CACHE_SHARDS: usize = 16;

/// Paths inside a store directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata database.
    pub(crate) fn db(&self) -> PathBuf {
        self.root.join("meta.db")
    }

    /// The file whose bytes carry the per-object stripe locks.
    pub(crate) fn stripe_locks(&self) -> PathBuf {
        self.root.join("object.locks")
    }

    /// The directory of client session files.
    pub(crate) fn clients(&self) -> PathBuf {
        self.root.join("clients")
    }

    /// The directory of pool data.
    pub(crate) fn pools(&self) -> PathBuf {
        self.root.join("pools")
    }

    /// The data directory of one pool.
    pub(crate) fn pool_dir(&self, pool: u64) -> PathBuf {
        self.pools().join(pool.to_string())
    }

    /// The directory of spare files kept by the session with `token`.
    pub(crate) fn spares(&self, token: &str) -> PathBuf {
        self.root.join("spare").join(token)
    }

    /// The directory of recycled empty files (see [`crate::recycle`]).
    pub(crate) fn recycled(&self) -> PathBuf {
        self.root.join("recycled")
    }

    /// The data file `file` of `pool`.
    pub(crate) fn data_file(&self, pool: u64, file: u64) -> PathBuf {
        self.pool_dir(pool)
            .join(format!("{:02x}", file & 0xff))
            .join(format!("{file:016x}"))
    }
}

#[derive(Debug, Default)]
struct Cache {
    open: HashMap<u64, (Arc<File>, u64)>,
    tick: u64,
}

#[derive(Debug, Default)]
struct Dirty {
    files: HashSet<(u64, u64)>,
    dirs: HashSet<PathBuf>,
}

/// Replaced files kept for reuse per session, and the smallest one worth keeping.
const MAX_SPARES: usize = 64;
const MIN_SPARE_LEN: u64 = 1 << 20;

/// Data-file access shared by the reader and writer sides of one store handle.
///
/// Files released by durable commits are not always deleted: up to [`MAX_SPARES`] of them wait
/// in the session's spare directory, and a new file whose content will be written in full
/// takes one instead of being created. Overwriting pages that are already in the page cache is
/// much cheaper than allocating new ones and later dropping the old file's pages.
#[derive(Debug)]
pub(crate) struct Files {
    layout: Layout,
    cache: Vec<Mutex<Cache>>,
    made_dirs: Mutex<HashSet<PathBuf>>,
    dirty: Mutex<Dirty>,
    spare_dir: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
    spare_seq: std::sync::atomic::AtomicU64,
    recycled: Recycled,
    /// Staged files moved into place so far (see [`crate::staged`]).
    adopted: std::sync::atomic::AtomicU64,
    buffers: Arc<crate::buffers::BufferPool>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here only inserts into or removes from a map, so the state stays
    // usable after a panic elsewhere.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Files {
    /// Creates the file access of the session with `token` (which names its spare directory).
    pub(crate) fn new(layout: Layout, token: &str) -> Self {
        Files {
            spare_dir: layout.spares(token),
            recycled: Recycled::new(layout.recycled(), token),
            layout,
            cache: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(Cache::default()))
                .collect(),
            made_dirs: Mutex::new(HashSet::new()),
            dirty: Mutex::new(Dirty::default()),
            spares: Mutex::new(Vec::new()),
            spare_seq: std::sync::atomic::AtomicU64::new(0),
            adopted: std::sync::atomic::AtomicU64::new(0),
            buffers: crate::buffers::BufferPool::new(),
        }
    }

    /// Returns the pool of read buffers.
    pub(crate) fn buffers(&self) -> &Arc<crate::buffers::BufferPool> {
        &self.buffers
    }

    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if !guard(&self.made_dirs).contains(dir) {
            std::fs::create_dir_all(dir)?;
            guard(&self.made_dirs).insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// Creates data file `file` of `pool` from a spare whose content will be overwritten in
    /// full, or creates it empty when no spare is waiting.
    pub(crate) fn create_reusing(&self, pool: u64, file: u64) -> io::Result<Arc<File>> {
        let Some(spare) = guard(&self.spares).pop() else {
            return self.create(pool, file);
        };
        let path = self.layout.data_file(pool, file);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.ensure_dir(&dir)?;
        if std::fs::rename(&spare, &path).is_err() {
            let _ = std::fs::remove_file(&spare);
            return self.create(pool, file);
        }
        let handle = Arc::new(File::options().read(true).write(true).open(&path)?);
        self.remember(file, &handle);
        let mut dirty = guard(&self.dirty);
        dirty.dirs.insert(dir);
        dirty.files.insert((pool, file));
        Ok(handle)
    }

    /// Releases data file `file` of `pool`, which nothing refers to any more: keeps it as a
    /// spare if it is worth it and there is room, else deletes it.
    pub(crate) fn release(&self, pool: u64, file: u64) -> io::Result<()> {
        let path = self.layout.data_file(pool, file);
        let worth = std::fs::metadata(&path)
            .map(|m| m.len() >= MIN_SPARE_LEN)
            .unwrap_or(false);
        if worth && guard(&self.spares).len() < MAX_SPARES {
            self.forget(file);
            guard(&self.dirty).files.remove(&(pool, file));
            self.ensure_dir(&self.spare_dir)?;
            let n = self
                .spare_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let spare = self.spare_dir.join(n.to_string());
            if std::fs::rename(&path, &spare).is_ok() {
                guard(&self.spares).push(spare);
                return Ok(());
            }
        }
        self.forget(file);
        guard(&self.dirty).files.remove(&(pool, file));
        if self.recycled.put(&path) {
            return Ok(());
        }
        self.unlink(pool, file)
    }

    /// Creates a new private file in the session's spare directory, for a staged write.
    pub(crate) fn stage(&self) -> io::Result<(PathBuf, File)> {
        self.ensure_dir(&self.spare_dir)?;
        let n = self
            .spare_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.spare_dir.join(format!("staged-{n}"));
        let handle = self.new_file(&path)?;
        Ok((path, handle))
    }

    /// Opens a new file at `path`, which must not exist: a recycled file moved there, or one
    /// created there.
    fn new_file(&self, path: &Path) -> io::Result<File> {
        match self.recycled.take(path) {
            Some(handle) => Ok(handle),
            None => File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path),
        }
    }

    /// Moves the staged file at `from` (open as `handle`) into place as data file `file` of
    /// `pool`, which must not exist yet.
    pub(crate) fn adopt(
        &self,
        pool: u64,
        file: u64,
        from: &Path,
        handle: &Arc<File>,
    ) -> io::Result<()> {
        let path = self.layout.data_file(pool, file);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.ensure_dir(&dir)?;
        std::fs::rename(from, &path)?;
        self.remember(file, handle);
        let mut dirty = guard(&self.dirty);
        dirty.dirs.insert(dir);
        dirty.files.insert((pool, file));
        self.adopted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Returns how many staged files were moved into place.
    #[cfg(test)]
    pub(crate) fn adopted(&self) -> u64 {
        self.adopted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deletes this session's spare files (on close).
    pub(crate) fn drop_spares(&self) {
        for spare in std::mem::take(&mut *guard(&self.spares)) {
            if !self.recycled.put(&spare) {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&self.spare_dir);
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The part of the descriptor cache that holds `file`.
    fn shard(&self, file: u64) -> MutexGuard<'_, Cache> {
        guard(&self.cache[(file % CACHE_SHARDS as u64) as usize])
    }

    fn remember(&self, file: u64, handle: &Arc<File>) {
        let mut cache = self.shard(file);
        cache.tick += 1;
        let tick = cache.tick;
        if cache.open.len() >= CACHE_CAPACITY / CACHE_SHARDS
            && let Some(oldest) = cache
                .open
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
        {
            cache.open.remove(&oldest);
        }
        cache.open.insert(file, (handle.clone(), tick));
    }

    /// Opens data file `file` of `pool` for reading and writing, from the cache if possible.
    pub(crate) fn open(&self, pool: u64, file: u64) -> io::Result<Arc<File>> {
        {
            let mut cache = self.shard(file);
            cache.tick += 1;
            let tick = cache.tick;
            if let Some((handle, t)) = cache.open.get_mut(&file) {
                *t = tick;
                return Ok(handle.clone());
            }
        }
        let handle = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .open(self.layout.data_file(pool, file))?,
        );
        self.remember(file, &handle);
        Ok(handle)
    }

    /// Creates data file `file` of `pool`, which must not exist yet.
    pub(crate) fn create(&self, pool: u64, file: u64) -> io::Result<Arc<File>> {
        let path = self.layout.data_file(pool, file);
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.ensure_dir(&dir)?;
        let handle = match self.new_file(&path) {
            Ok(handle) => handle,
            // A file left by an earlier attempt with the same reserved id is garbage.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => File::options()
                .read(true)
                .write(true)
                .truncate(true)
                .open(&path)?,
            Err(e) => return Err(e),
        };
        let handle = Arc::new(handle);
        self.remember(file, &handle);
        let mut dirty = guard(&self.dirty);
        dirty.dirs.insert(dir);
        dirty.files.insert((pool, file));
        Ok(handle)
    }

    /// Drops the cached descriptor of `file`.
    pub(crate) fn forget(&self, file: u64) {
        self.shard(file).open.remove(&file);
    }

    /// Deletes data file `file` of `pool`; a missing file is fine.
    pub(crate) fn unlink(&self, pool: u64, file: u64) -> io::Result<()> {
        self.forget(file);
        guard(&self.dirty).files.remove(&(pool, file));
        match std::fs::remove_file(self.layout.data_file(pool, file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records that `file` of `pool` was changed and must be synced by the next flush.
    pub(crate) fn mark_dirty(&self, pool: u64, file: u64) {
        guard(&self.dirty).files.insert((pool, file));
    }

    /// Makes every file and directory changed since the last call durable, but the files in
    /// `released` (garbage: nothing refers to them once the flush's WAL sync is done); returns
    /// how many files it synced.
    pub(crate) fn sync_dirty(&self, released: &HashSet<(u64, u64)>) -> io::Result<usize> {
        let dirty = std::mem::take(&mut *guard(&self.dirty));
        let mut synced = 0;
        for (pool, file) in dirty.files.difference(released) {
            synced += 1;
            match self.open(*pool, *file) {
                Ok(handle) => handle.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for dir in &dirty.dirs {
            match File::open(dir) {
                Ok(handle) => handle.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(synced)
    }

    /// Forgets every cached descriptor and created directory of `pool` (removed pools).
    pub(crate) fn forget_pool(&self, pool: u64) {
        let prefix = self.layout.pool_dir(pool);
        guard(&self.made_dirs).retain(|d| !d.starts_with(&prefix));
        for shard in &self.cache {
            guard(shard).open.clear();
        }
        let mut dirty = guard(&self.dirty);
        dirty.files.retain(|(p, _)| *p != pool);
        dirty.dirs.retain(|d| !d.starts_with(&prefix));
    }
}

/// Largest single `pwrite` into a data file.
///
/// Linux builds page-cache folios as large as the write that creates them. On ext4 a single
/// 4 MiB write into a new file is several times slower than the same bytes in smaller pieces,
/// and every later 4 KiB overwrite inside a large folio costs several times as much, because
/// the whole folio is prepared and dirtied (measured on Linux 6.18: 12 us inside folios made
/// by 4 MiB writes, 2.4 us inside folios made by 64 KiB writes). Object stores see many small
/// overwrites of large objects, so data goes in pieces.
pub(crate) const WRITE_CHUNK: usize = 64 << 10;

/// Writes `data` at `offset` in pieces of at most [`WRITE_CHUNK`] bytes.
pub(crate) fn write_chunked(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + WRITE_CHUNK).min(data.len());
        file.write_all_at(&data[pos..end], offset + pos as u64)?;
        pos = end;
    }
    Ok(())
}

/// Reads `[offset, end)` of a file into a pooled buffer; bytes past the file's length read as
/// zeros.
pub(crate) fn read_pooled(
    pool: &std::sync::Arc<crate::buffers::BufferPool>,
    file: Option<&File>,
    offset: u64,
    end: u64,
) -> io::Result<crate::buffers::Buffer> {
    let len = end.saturating_sub(offset) as usize;
    let mut buf = pool.take(len);
    let out = buf.as_mut_slice();
    let mut filled = 0usize;
    if let Some(file) = file {
        while filled < len {
            let n = file.read_at(&mut out[filled..], offset + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
    }
    out[filled..].fill(0);
    Ok(buf)
}

/// Reads `[offset, end)` of a file whose bytes past its length read as zeros.
pub(crate) fn read_range(file: Option<&File>, offset: u64, end: u64) -> io::Result<Vec<u8>> {
    let len = end.saturating_sub(offset) as usize;
    let Some(file) = file else {
        return Ok(vec![0u8; len]);
    };
    let mut out = sys::pread_new(file, offset, len)?;
    out.resize(len, 0);
    Ok(out)
}

/// Copies the allocated ranges of `src` (its first `len` bytes) into `dst`, keeping holes.
pub(crate) fn copy_sparse(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let src_len = src.metadata()?.len().min(len);
    for (start, end) in sys::data_ranges(src, 0, src_len)? {
        copy_range(src, dst, start, end)?;
    }
    if dst.metadata()?.len() < src_len {
        dst.set_len(src_len)?;
    }
    Ok(())
}

fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let mut off_in = pos as libc::loff_t;
        let mut off_out = pos as libc::loff_t;
        let want = (end - pos).min(1 << 30) as usize;
        // SAFETY: both descriptors are owned by the borrowed files; the offset pointers point
        // at live locals, so the kernel neither reads nor moves the descriptors' own offsets.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            pos += n as u64;
            continue;
        }
        if n == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EINVAL) => {
                let data = read_range(Some(src), pos, end)?;
                return write_chunked(dst, &data, pos);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(Layout::new(dir.path()), "t");
        let a = files.create(1, 1).unwrap();
        a.write_all_at(b"head", 0).unwrap();
        a.write_all_at(b"tail", 8 << 20).unwrap();
        let b = files.create(1, 2).unwrap();
        copy_sparse(&a, &b, 16 << 20).unwrap();
        assert_eq!(read_range(Some(&b), 0, 4).unwrap(), b"head");
        assert_eq!(
            read_range(Some(&b), 8 << 20, (8 << 20) + 4).unwrap(),
            b"tail"
        );
        let ranges = sys::data_ranges(&b, 0, 16 << 20).unwrap();
        let allocated: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        assert!(allocated < 1 << 20, "{ranges:?}");
    }

    #[test]
    fn a_flush_leaves_released_files_unsynced_and_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(Layout::new(dir.path()), "t");
        for file in 1..=3 {
            files
                .create(1, file)
                .unwrap()
                .write_all_at(b"x", 0)
                .unwrap();
        }
        let released = HashSet::from([(1, 2)]);
        assert_eq!(files.sync_dirty(&released).unwrap(), 2);
        assert_eq!(
            files.sync_dirty(&HashSet::new()).unwrap(),
            0,
            "nothing is dirty now"
        );
    }

    #[test]
    fn released_large_files_become_spares_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(Layout::new(dir.path()), "t");
        let a = files.create(1, 1).unwrap();
        a.write_all_at(&vec![1u8; 2 << 20], 0).unwrap();
        let small = files.create(1, 2).unwrap();
        small.write_all_at(b"x", 0).unwrap();
        files.release(1, 1).unwrap();
        files.release(1, 2).unwrap();
        assert!(!files.layout().data_file(1, 1).exists());
        assert!(
            !files.layout().data_file(1, 2).exists(),
            "small files are deleted"
        );
        let reused = files.create_reusing(1, 3).unwrap();
        assert_eq!(
            reused.metadata().unwrap().len(),
            2 << 20,
            "the spare's pages come along"
        );
        assert!(files.layout().data_file(1, 3).exists());
        files.drop_spares();
        let fresh = files.create_reusing(1, 4).unwrap();
        assert_eq!(
            fresh.metadata().unwrap().len(),
            0,
            "no spare left: a new empty file"
        );
    }

    #[test]
    fn reads_past_the_end_are_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(Layout::new(dir.path()), "t");
        let a = files.create(3, 9).unwrap();
        a.write_all_at(b"ab", 0).unwrap();
        assert_eq!(read_range(Some(&a), 1, 5).unwrap(), b"b\0\0\0");
        assert_eq!(read_range(None, 0, 2).unwrap(), b"\0\0");
    }
}
