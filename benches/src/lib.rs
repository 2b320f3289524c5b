//! Helpers shared by the benchmarks: where they put data, the plain-file reference the `dir`
//! store is compared with, and the cases every store runs ([`cases`]).

#![warn(missing_docs)]

pub mod cases;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Returns a fresh directory for benchmark data, under `RBDX_BENCH_DIR` or
/// `target/bench-data`, on the same file system as the build.
pub fn bench_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("RBDX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// One preallocated file standing in for a store: the reference access pattern.
#[derive(Debug, Clone)]
pub struct PlainFile {
    file: Arc<File>,
}

impl PlainFile {
    /// Creates a file of `size` bytes in `dir`, written once so it is fully allocated.
    pub fn create(dir: &std::path::Path, size: u64) -> PlainFile {
        let path = dir.join("plain.img");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let chunk = vec![0x5au8; 4 << 20];
        let mut offset = 0;
        while offset < size {
            file.write_all_at(&chunk, offset)
                .unwrap_or_else(|e| panic!("filling: {e}"));
            offset += chunk.len() as u64;
        }
        PlainFile {
            file: Arc::new(file),
        }
    }

    /// Writes `data` at `offset`.
    pub fn pwrite(&self, data: &[u8], offset: u64) {
        self.file
            .write_all_at(data, offset)
            .unwrap_or_else(|e| panic!("pwrite: {e}"));
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn pread(&self, buf: &mut [u8], offset: u64) {
        self.file
            .read_exact_at(buf, offset)
            .unwrap_or_else(|e| panic!("pread: {e}"));
    }
}

/// A small deterministic generator for offsets.
#[derive(Debug, Clone)]
pub struct Offsets(u64);

impl Offsets {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Offsets(seed | 1)
    }

    /// Returns a number in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
