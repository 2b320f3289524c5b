//! Recycled files: empty files of released objects, kept for any session of the store to
//! take instead of creating a file.
//!
//! Creating a file allocates an inode, and on some file systems that is most of what a 4 MiB
//! object costs: ext4 without a journal, for one, skips the inodes freed in the last minutes
//! one by one while it looks for a free one, so a store that deletes and creates objects
//! (an image removed, another imported) spends more time finding inodes than writing data.
//! A file released by a durable commit is therefore cut to zero bytes (its blocks are freed
//! as a delete frees them) and moved into the store's `recycled` directory, up to
//! [`MAX_RECYCLED`] files; a new file is one of them moved into place when there is one.
//!
//! Every file in the directory is garbage: empty, named by nothing else, and safe to delete
//! or take at any time. A file is cut before it is moved in, so a crash in between leaves a
//! released file where the collection of garbage finds it as before. Processes take files by
//! renaming them away, so two never get the same file; one that finds a name gone takes the
//! next.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most files kept in the directory (inodes only: they hold no data).
const MAX_RECYCLED: usize = 1024;
/// Most names read from the directory at once.
const SCAN_NAMES: usize = 256;
/// How long a directory found empty is not read again.
const RESCAN_EMPTY_AFTER: Duration = Duration::from_secs(1);

/// The recycled files of one store, as one session sees them.
#[derive(Debug)]
pub(crate) struct Recycled {
    dir: PathBuf,
    token: String,
    seq: AtomicU64,
    /// Names read from the directory and not yet tried.
    names: Mutex<Vec<PathBuf>>,
    /// Files in the directory as this session last counted (others add and take too).
    count: AtomicUsize,
    /// True once the directory was counted.
    counted: std::sync::atomic::AtomicBool,
    /// When the directory was last found empty.
    found_empty: Mutex<Option<Instant>>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recycled {
    /// The recycled files in `dir`, seen from the session with `token`.
    pub(crate) fn new(dir: PathBuf, token: &str) -> Self {
        Recycled {
            dir,
            token: token.to_owned(),
            seq: AtomicU64::new(0),
            names: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            counted: std::sync::atomic::AtomicBool::new(false),
            found_empty: Mutex::new(None),
        }
    }

    /// Reads up to [`SCAN_NAMES`] names from the directory into the list to try; returns
    /// how many the directory held.
    fn scan(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut names = guard(&self.names);
        let mut total = 0;
        for entry in entries.flatten() {
            total += 1;
            if names.len() < SCAN_NAMES {
                names.push(entry.path());
            }
        }
        total
    }

    /// Cuts the released file at `path` to zero bytes and moves it into the directory;
    /// returns false (leaving the file where it is) if the directory is full or the move
    /// fails.
    pub(crate) fn put(&self, path: &Path) -> bool {
        if !self.counted.swap(true, Ordering::Relaxed) {
            self.count.store(self.scan_count(), Ordering::Relaxed);
        }
        if self.count.load(Ordering::Relaxed) >= MAX_RECYCLED {
            return false;
        }
        let cut = File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
        if cut.is_err() {
            return false;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let to = self.dir.join(format!("{}-{n}", self.token));
        let moved = match std::fs::rename(path, &to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::rename(path, &to))
            }
            other => other,
        };
        if moved.is_err() {
            return false;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        guard(&self.names).push(to);
        true
    }

    /// Counts the files in the directory without keeping their names.
    fn scan_count(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |entries| entries.count())
    }

    /// Moves a recycled file to `to` (which must not exist) and opens it for reading and
    /// writing; `None` if there is none to take.
    pub(crate) fn take(&self, to: &Path) -> Option<File> {
        loop {
            let next = guard(&self.names).pop();
            let Some(from) = next else {
                if self.rescan() {
                    continue;
                }
                return None;
            };
            match std::fs::rename(&from, to) {
                Ok(()) => {
                    let _ = self
                        .count
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                            Some(c.saturating_sub(1))
                        });
                    let file = File::options().read(true).write(true).open(to).ok()?;
                    // Empty when recycled; cutting an empty file again costs nothing.
                    let empty = file.metadata().is_ok_and(|m| m.len() == 0);
                    if !empty && file.set_len(0).is_err() {
                        return None;
                    }
                    return Some(file);
                }
                // Another session took it: try the next.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads the directory again for files other sessions recycled, unless it was found
    /// empty less than [`RESCAN_EMPTY_AFTER`] ago; returns true if it found any.
    fn rescan(&self) -> bool {
        let mut last = guard(&self.found_empty);
        if last.is_some_and(|at| at.elapsed() < RESCAN_EMPTY_AFTER) {
            return false;
        }
        let total = self.scan();
        self.count.store(total, Ordering::Relaxed);
        self.counted.store(true, Ordering::Relaxed);
        *last = (total == 0).then(Instant::now);
        total > 0
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn file_with(path: &Path, bytes: &[u8]) {
        File::create(path).unwrap().write_all(bytes).unwrap();
    }

    #[test]
    fn released_files_are_emptied_and_taken_by_any_session() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("recycled");
        let mine = Recycled::new(pool.clone(), "a");
        let other = Recycled::new(pool.clone(), "b");

        let released = dir.path().join("released");
        file_with(&released, b"old data");
        assert!(mine.put(&released));
        assert!(!released.exists(), "the file moved");
        let kept: Vec<_> = std::fs::read_dir(&pool).unwrap().flatten().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].metadata().unwrap().len(),
            0,
            "cut before it was kept"
        );

        // Another session finds it by reading the directory.
        let to = dir.path().join("taken");
        let taken = other.take(&to).expect("the recycled file");
        assert_eq!(taken.metadata().unwrap().len(), 0);
        assert!(to.exists());
        // The first session's list still names it: the name is gone, so nothing is taken.
        assert!(mine.take(&dir.path().join("again")).is_none());
        assert!(other.take(&dir.path().join("again")).is_none());
        assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_file_is_not_recycled() {
        let dir = tempfile::tempdir().unwrap();
        let recycled = Recycled::new(dir.path().join("recycled"), "a");
        assert!(!recycled.put(&dir.path().join("missing")));
        assert!(recycled.take(&dir.path().join("to")).is_none());
    }
}
