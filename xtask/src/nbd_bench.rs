//! `cargo xtask bench nbd`: `rbdx nbd serve` next to `qemu-nbd` serving the same bytes as a
//! raw file, measured in one run with the same clients:
//!
//! - reading the whole 1 GiB export with `qemu-img convert` into a raw file;
//! - writing 1 GiB into the export with `qemu-img convert -n` (which flushes at the end);
//! - 4 KiB reads and writes with `qemu-img bench`, 64 requests queued: strided across the
//!   image (each request in another 4 MiB object, as random I/O lands; `qemu-img bench` has
//!   no random mode) and sequential;
//! - reading a 1 GiB image holding 404 MiB of scattered 4 to 64 KiB writes (holes inside
//!   objects) with `qemu-img convert`, which asks for block status and reads only the data.
//!
//! Both servers run on 127.0.0.1 with their defaults (`qemu-nbd` with a writeback cache, as
//! `rbdx` keeps writes in the page cache until a flush). Each figure is the median of three
//! runs with the page cache warm. `RBDX_BENCH_NBD_CASES=scattered,writes` runs only the
//! cases whose label contains one of the comma-separated words (for working on one row).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::migration_bench::{make_scattered, settle};
use crate::rbdx::Rbdx;
use crate::{build_rbdx, show, target_dir};

const RUNS: usize = 3;
const GIB: u64 = 1 << 30;
/// The stride of the "random" rows: 37 objects and 13 blocks, so consecutive requests land
/// in different objects and wrap around the image in a scattered order.
const STRIDE: u64 = 37 * (4 << 20) + 13 * 4096;

/// A server process, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill only sends SIGTERM to a child this task started.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `qemu-nbd` on `file`; returns the process and the export URI.
fn qemu_nbd(file: &Path) -> anyhow::Result<(Served, String)> {
    let port = free_port()?;
    let child = Command::new("qemu-nbd")
        .args([
            "-f",
            "raw",
            "-x",
            "ref",
            "-b",
            "127.0.0.1",
            "-t",
            "--shared=8",
        ])
        .arg(format!("--port={port}"))
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-nbd (apt-get install qemu-utils)")?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((Served(child), format!("nbd://127.0.0.1:{port}/ref")));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("qemu-nbd did not start")
}

/// Runs `cmd` and returns its wall time.
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().with_context(|| show(cmd))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        show(cmd),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

/// Returns the median wall time of `RUNS` runs of `make()`, with `setup` before each.
fn median(
    mut setup: impl FnMut() -> anyhow::Result<()>,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        setup()?;
        settle();
        times.push(timed(&mut make())?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[RUNS / 2])
}

/// One case measured against both servers.
struct Case {
    label: String,
    /// Bytes (for throughput rows) or requests (for IOPS rows) per run.
    amount: u64,
    iops: bool,
    make: Box<dyn Fn(&str) -> Command>,
    /// Runs (not timed) before every measured run.
    setup: Box<dyn Fn() -> anyhow::Result<()>>,
    /// The minimum ratio (speed of rbdx / speed of qemu-nbd) the case must reach.
    target: f64,
    /// Served from the scattered image instead of the fully written one.
    scattered: bool,
}

/// Writes a 1 GiB file of incompressible data.
fn make_raw(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..GIB >> 20 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

fn qemu_img(args: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-img");
    cmd.args(args);
    cmd
}

fn bench_cmd(uri: &str, write: bool, count: u64, step: u64) -> Command {
    let mut cmd = qemu_img(&["bench", "-f", "raw", "-d", "64", "-s", "4096"]);
    cmd.arg("-c").arg(count.to_string());
    cmd.arg("-S").arg(step.to_string());
    if write {
        cmd.args(["-w", "--pattern", "165"]);
    }
    cmd.arg(uri);
    cmd
}

fn cases(dir: &Path, src: &Path) -> Vec<Case> {
    let out: PathBuf = dir.join("out.raw");
    let src = src.to_owned();
    let remove_out = |out: PathBuf| {
        move || {
            let _ = std::fs::remove_file(&out);
            Ok(())
        }
    };
    let convert_to = |out: PathBuf| {
        move |uri: &str| {
            let mut c = qemu_img(&["convert", "-f", "raw", "-O", "raw", uri]);
            c.arg(&out);
            c
        }
    };
    let no_setup = || Ok(());
    let mut cases = vec![
        Case {
            label: "read 1 GiB: qemu-img convert from the export".into(),
            amount: GIB,
            iops: false,
            make: Box::new(convert_to(out.clone())),
            setup: Box::new(remove_out(out.clone())),
            target: 0.8,
            scattered: false,
        },
        Case {
            label: "read 1 GiB holding 404 MiB scattered (holes inside objects): qemu-img \
                    convert from the export"
                .into(),
            amount: GIB,
            iops: false,
            make: Box::new(convert_to(out.clone())),
            setup: Box::new(remove_out(out.clone())),
            target: 1.0,
            scattered: true,
        },
        Case {
            label: "write 1 GiB: qemu-img convert -n into the export".into(),
            amount: GIB,
            iops: false,
            make: Box::new(move |uri| {
                let mut c = qemu_img(&["convert", "-n", "-f", "raw", "-O", "raw"]);
                c.arg(&src).arg(uri);
                c
            }),
            setup: Box::new(no_setup),
            target: 0.8,
            scattered: false,
        },
    ];
    for (write, count) in [(false, 200_000u64), (true, 100_000)] {
        for (pattern, step) in [("strided", STRIDE), ("sequential", 4096)] {
            let what = if write { "write" } else { "read" };
            cases.push(Case {
                label: format!("4 KiB {what}s, {pattern}, 64 queued: qemu-img bench"),
                amount: count,
                iops: true,
                make: Box::new(move |uri| bench_cmd(uri, write, count, step)),
                setup: Box::new(no_setup),
                target: if write { 0.9 } else { 0.8 },
                scattered: false,
            });
        }
    }
    cases
}

/// Builds the data, serves it from both servers, runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let binary = build_rbdx()?;
    let dir = target_dir()?.join("bench-nbd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("store");
    let src = dir.join("src.raw");
    let reference = dir.join("ref.raw");
    eprintln!("+ making a 1 GiB file of incompressible data, a copy for qemu-nbd, an rbdx image");
    make_raw(&src)?;
    std::fs::copy(&src, &reference)?;
    let import = |file: &Path, name: &str| -> anyhow::Result<()> {
        let status = Command::new(&binary)
            .args(["import", "--no-progress"])
            .arg(file)
            .arg(name)
            .env("RBDX_DATA_DIR", &store)
            .status()?;
        anyhow::ensure!(status.success(), "rbdx import of {name} failed");
        Ok(())
    };
    import(&src, "disk")?;
    eprintln!("+ making a 1 GiB file holding 404 MiB of scattered writes, and its rbdx image");
    let scattered = dir.join("scattered.raw");
    make_scattered(&scattered)?;
    import(&scattered, "scattered")?;

    let rbdx = Rbdx {
        binary: binary.clone(),
        store: store.clone(),
    };
    let full = rbdx.nbd_serve("rbd/disk")?;
    let sparse = rbdx.nbd_serve("rbd/scattered")?;
    let (full_uri, sparse_uri) = (full.uri, sparse.uri);
    let _served = (Served(full.child), Served(sparse.child));
    let (_theirs, ref_uri) = qemu_nbd(&reference)?;
    let (_theirs_sparse, ref_sparse_uri) = qemu_nbd(&scattered)?;
    let mut rows = Vec::new();
    let only = std::env::var("RBDX_BENCH_NBD_CASES").unwrap_or_default();
    let wanted = |label: &str| {
        only.is_empty() || only.split(',').any(|w| !w.is_empty() && label.contains(w))
    };
    for case in cases(&dir, &src).into_iter().filter(|c| wanted(&c.label)) {
        eprintln!("+ {}", case.label);
        let (our_uri, ref_uri) = if case.scattered {
            (&sparse_uri, &ref_sparse_uri)
        } else {
            (&full_uri, &ref_uri)
        };
        let ours = median(&case.setup, || (case.make)(our_uri))?;
        let theirs = median(&case.setup, || (case.make)(ref_uri))?;
        rows.push((
            case.label,
            case.amount,
            case.iops,
            ours,
            theirs,
            case.target,
        ));
    }
    let _ = std::fs::remove_file(dir.join("out.raw"));

    println!();
    println!("## nbd (cargo xtask bench nbd)");
    println!();
    println!("| case | rbdx nbd serve | qemu-nbd | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    for (label, amount, iops, ours, theirs, target) in rows {
        let show = |secs: f64| {
            if iops {
                format!("{:.0} ops/s", amount as f64 / secs)
            } else {
                format!("{:.2} s ({:.0} MB/s)", secs, amount as f64 / secs / 1e6)
            }
        };
        let ratio = theirs / ours;
        let verdict = if ratio >= target {
            format!(">= {target}x: met")
        } else {
            format!(">= {target}x: NOT met")
        };
        println!(
            "| {label} | {} | {} | {ratio:.2}x | {verdict} |",
            show(ours),
            show(theirs)
        );
    }
    println!();
    println!(
        "1 GiB of incompressible data (and 1 GiB holding 404 MiB of it scattered); both servers on 127.0.0.1 with their defaults; medians of \
         {RUNS} runs, page cache warm; ratio = speed of rbdx / speed of qemu-nbd"
    );
    Ok(())
}
