//! `cargo xtask bench image`: `rbdx bench` on the embedded store next to plain
//! `pwrite`/`pread` on one file in the same directory (same sizes, patterns and threads), and
//! the import of a 4 GiB file that is 90% zeros next to reading that file.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;

use crate::rbdx::Rbdx;
use crate::{build_rbdx, run_step, target_dir};

const IMAGE_SIZE: u64 = 1 << 30;
const THREADS: u64 = 16;

/// One pattern of the comparison.
struct Case {
    label: &'static str,
    io_type: &'static str,
    io_size: u64,
    pattern: &'static str,
    total: u64,
    target: Option<f64>,
}

const CASES: &[Case] = &[
    Case {
        label: "4 MiB sequential writes, 16 threads",
        io_type: "write",
        io_size: 4 << 20,
        pattern: "seq",
        total: IMAGE_SIZE,
        target: Some(0.7),
    },
    Case {
        label: "4 MiB sequential reads, 16 threads",
        io_type: "read",
        io_size: 4 << 20,
        pattern: "seq",
        total: 8 * IMAGE_SIZE,
        target: Some(0.7),
    },
    Case {
        label: "4 KiB random writes, 16 threads",
        io_type: "write",
        io_size: 4096,
        pattern: "rand",
        total: 128 << 20,
        target: Some(0.4),
    },
    Case {
        label: "4 KiB random reads, 16 threads",
        io_type: "read",
        io_size: 4096,
        pattern: "rand",
        total: 512 << 20,
        target: Some(0.3),
    },
];

/// Runs the plain-file version of a case; returns bytes per second.
fn plain(file: &Path, case: &Case) -> anyhow::Result<f64> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)?;
    f.set_len(IMAGE_SIZE)?;
    let slots = IMAGE_SIZE / case.io_size;
    let ops = case.total / case.io_size;
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let (f, next) = (&f, &next);
            workers.push(scope.spawn(move || -> std::io::Result<()> {
                let mut buf = vec![0xa5u8; case.io_size as usize];
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        return Ok(());
                    }
                    let slot = if case.pattern == "seq" {
                        i % slots
                    } else {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng % slots
                    };
                    let offset = slot * case.io_size;
                    if case.io_type == "write" {
                        f.write_all_at(&buf, offset)?;
                    } else {
                        f.read_exact_at(&mut buf, offset)?;
                    }
                }
            }));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    if case.io_type == "write" {
        f.sync_data()?;
    }
    Ok(case.total as f64 / start.elapsed().as_secs_f64())
}

fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += allocated(&entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Writes a sparse 4 GiB file whose every 10 MiB starts with 1 MiB of data.
fn make_sparse_input(path: &PathBuf) -> anyhow::Result<u64> {
    let f = File::create(path)?;
    let size = 4u64 << 30;
    f.set_len(size)?;
    let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 | 1).collect();
    let mut data = 0;
    let mut at = 0;
    while at < size {
        f.write_all_at(&block, at)?;
        data += block.len() as u64;
        at += 10 << 20;
    }
    f.sync_all()?;
    Ok(data)
}

/// Drops a file's pages from the page cache.
fn evict(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = File::open(path)?;
    f.sync_all()?;
    // SAFETY: the descriptor belongs to `f`, which outlives the call; the advice only affects
    // the cache of this file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    anyhow::ensure!(rc == 0, "posix_fadvise failed: {rc}");
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runs the image benchmark and prints its table.
pub fn run() -> anyhow::Result<()> {
    let binary = build_rbdx()?;
    let dir = target_dir()?.join("bench-image");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rbdx = Rbdx {
        binary,
        store: dir.join("store"),
    };
    let file = dir.join("plain.img");
    rbdx.run(&["create", "bench", "--size", "1G"])?;
    let mut rows = Vec::new();
    for case in CASES {
        eprintln!("+ {}", case.label);
        let io_size = case.io_size.to_string();
        let total = case.total.to_string();
        let out = rbdx.run(&[
            "bench",
            "bench",
            "--io-type",
            case.io_type,
            "--io-size",
            &io_size,
            "--io-threads",
            "16",
            "--io-total",
            &total,
            "--io-pattern",
            case.pattern,
            "--format",
            "json",
        ])?;
        let report: serde_json::Value = serde_json::from_str(&out)?;
        let ours = report["bytes_per_sec"]
            .as_f64()
            .context("no bytes_per_sec")?;
        let theirs = plain(&file, case)?;
        rows.push((case, ours, theirs));
    }

    eprintln!("+ import of a 4 GiB file, 90% zeros");
    let input = dir.join("sparse-input.img");
    let data = make_sparse_input(&input)?;
    // Medians of three runs, each with the input evicted from the page cache (reading holes
    // fills the cache with zero pages, which then slows down every SEEK_DATA) and after a
    // `sync`, so that no timing pays for write-back of what came before.
    let mut read_times = Vec::new();
    let mut import_times = Vec::new();
    let mut written = 0;
    for run in 0..3 {
        evict(&input)?;
        run_step(&mut Command::new("sync"))?;
        read_times.push(read_file(&input)?);
        evict(&input)?;
        run_step(&mut Command::new("sync"))?;
        let before = allocated(&rbdx.store);
        let name = format!("imported{run}");
        let start = Instant::now();
        rbdx.run(&["import", "--no-progress", &input.to_string_lossy(), &name])?;
        import_times.push(start.elapsed().as_secs_f64());
        if run == 0 {
            written = allocated(&rbdx.store).saturating_sub(before);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let read_secs = median(&mut read_times);
    let import_secs = median(&mut import_times);
    let _ = std::fs::remove_file(&input);

    println!();
    println!("## image (cargo xtask bench image)");
    println!();
    println!("| case | rbdx bench | plain file | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    for (case, ours, theirs) in rows {
        let ratio = ours / theirs;
        let (ours, theirs, unit) = if case.io_size >= 1 << 20 {
            (ours / 1e6, theirs / 1e6, "MB/s")
        } else {
            (
                ours / case.io_size as f64,
                theirs / case.io_size as f64,
                "ops/s",
            )
        };
        let verdict = match case.target {
            Some(t) if ratio >= t => format!(">= {t}x: met"),
            Some(t) => format!(">= {t}x: NOT met"),
            None => "-".to_owned(),
        };
        println!(
            "| {} | {ours:.0} {unit} | {theirs:.0} {unit} | {ratio:.2}x | {verdict} |",
            case.label
        );
    }
    let time_ratio = import_secs / read_secs;
    println!(
        "| import of a 4 GiB file, 90% zeros (time) | {import_secs:.2} s | {read_secs:.2} s (reading it) | {time_ratio:.2}x | < 2x: {} |",
        if time_ratio < 2.0 { "met" } else { "NOT met" }
    );
    println!(
        "| import: bytes written to the store | {:.0} MiB | {:.0} MiB of data | {:.2}x | only the data: {} |",
        written as f64 / (1 << 20) as f64,
        data as f64 / (1 << 20) as f64,
        written as f64 / data as f64,
        if (written as f64) < data as f64 * 1.2 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!();
    println!(
        "reference: pwrite/pread with 16 threads on one 1 GiB file in the same directory, same \
         sizes and offsets, fdatasync after writes (`rbdx bench` flushes too); the import is \
         timed against reading the file, both with the file evicted from the page cache first, \
         medians of 3, each after a `sync`; bytes written are \
         the growth of the store's allocated blocks"
    );
    Ok(())
}
