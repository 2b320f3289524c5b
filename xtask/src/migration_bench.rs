//! `cargo xtask bench migration`: migrations on the embedded store next to the tools people
//! use for the same copy today, measured in one run on the same data, with the peak memory
//! (maximum resident set) of every command:
//!
//! - import-only `execute` of a 1 GiB raw file with 40% of it allocated, vs `qemu-img convert
//!   -O raw` and `cp --sparse=always` of that file;
//! - import-only `execute` of a qcow2 with the same content, vs `qemu-img convert -O raw`;
//! - a live migration between pools of a 1 GiB image with one snapshot (prepare, execute,
//!   commit), next to `cp --sparse=always` of the same data as a floor;
//! - a live migration of a 1 GiB image holding 404 MiB of scattered writes (4 to 64 KiB, holes
//!   inside objects) with one snapshot and 64 MiB of scattered writes after it, next to the
//!   same image without the snapshot (the copy of a snapshot should cost what changed since);
//! - import-only `execute` of a 16 GiB qcow2 holding 1 MiB of data, vs `qemu-img convert`.
//!
//! Each figure is the median of five runs with the page cache warm and dirty pages written
//! back before each run; outputs go to the same file system as the store.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::rbdx::Rbdx;
use crate::run_step;

const RUNS: usize = 5;

/// One measured command: wall time and peak resident memory.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    rss_bytes: u64,
}

/// Runs `cmd` to completion, returning its wall time and maximum resident set size.
fn measure(cmd: &mut Command) -> anyhow::Result<Sample> {
    let (_, secs, rss_bytes) = crate::rbdx::run_with_peak(cmd, false)?;
    Ok(Sample { secs, rss_bytes })
}

/// Writes back every dirty page, so that no run pays for the writeback of an earlier one.
pub(crate) fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Returns the median time and the largest peak memory of `RUNS` runs; `setup` runs (not
/// measured) before each, `make` builds the measured command.
fn median(
    mut setup: impl FnMut() -> anyhow::Result<()>,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<Sample> {
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        setup()?;
        settle();
        samples.push(measure(&mut make())?);
    }
    Ok(summary(samples))
}

/// Returns the median time and the largest peak memory of `samples`.
fn summary(mut samples: Vec<Sample>) -> Sample {
    let rss_bytes = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    samples.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    Sample {
        secs: samples.get(samples.len() / 2).map_or(0.0, |s| s.secs),
        rss_bytes,
    }
}

impl Rbdx {
    /// Removes `image` if it exists.
    fn remove(&self, image: &str) -> anyhow::Result<()> {
        let _ = self.cmd(&["rm", "--no-progress", image]).output()?;
        Ok(())
    }

    /// Prepares an import-only migration of `spec` into a fresh `image`.
    fn prepare_import(&self, spec: &str, image: &str) -> anyhow::Result<()> {
        self.remove(image)?;
        self.run(&[
            "migration",
            "prepare",
            "--import-only",
            "--source-spec",
            spec,
            image,
        ])
        .map(|_| ())
    }
}

/// Writes a 1 GiB sparse file with 40% of its 1 MiB blocks holding incompressible data.
fn make_raw(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(path)?;
    file.set_len(1 << 30)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut allocated = 0;
    for n in 0..1024u64 {
        if n * 7 % 10 >= 4 {
            continue;
        }
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all_at(&block, n << 20)?;
        allocated += 1 << 20;
    }
    Ok(allocated)
}

fn qemu_img(args: &[&str]) -> Command {
    let mut cmd = Command::new("qemu-img");
    cmd.args(args);
    cmd
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Writes a 1 GiB sparse file holding 404 MiB of scattered writes of 4 to 64 KiB at 4 KiB
/// aligned places (overlaps counted once), so that most objects hold data with holes inside.
pub(crate) fn make_scattered(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(path)?;
    file.set_len(1 << 30)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut written = vec![false; (1 << 30) / 4096];
    let mut data = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while data < 404 << 20 {
        let blocks = 1 + next() % 16;
        let first = next() % (written.len() as u64 - blocks);
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let len = (blocks * 4096) as usize;
        file.write_all_at(&buf[..len], first * 4096)?;
        for b in first..first + blocks {
            if !std::mem::replace(&mut written[b as usize], true) {
                data += 4096;
            }
        }
    }
    Ok(data)
}

/// One row of the table.
struct Row {
    label: String,
    ours: Sample,
    reference: Option<(String, Sample)>,
    /// The minimum speed ratio (reference time / rbdx time) the issue sets, if any.
    target: Option<f64>,
}

/// Builds the inputs, runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let (rbdx, dir) = Rbdx::fresh("bench-migration")?;
    let raw = dir.join("disk.raw");
    let qcow = dir.join("disk.qcow2");
    let sparse = dir.join("sparse.qcow2");
    let out = dir.join("out.raw");
    eprintln!(
        "+ making a 1 GiB raw file (40% allocated), a qcow2 of it, a 16 GiB qcow2 with 1 MiB"
    );
    let allocated = make_raw(&raw)?;
    run_step(&mut qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&raw),
        path(&qcow),
    ]))?;
    run_step(&mut qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        path(&sparse),
        "16G",
    ]))?;
    run_step(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 7 8G 1M", path(&sparse)])
            .stdout(Stdio::null()),
    )?;
    run_step(
        Command::new("cat")
            .arg(&raw)
            .arg(&qcow)
            .stdout(Stdio::null()),
    )?;
    rbdx.run(&["pool", "create", "fast"])?;

    let spec = |format: &str, file: &Path| {
        format!(
            r#"{{"type":"{format}","stream":{{"type":"file","file_path":"{}"}}}}"#,
            file.display()
        )
    };
    let fresh_out = || -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&out);
        Ok(())
    };
    let mut rows = Vec::new();

    eprintln!("+ raw import");
    let raw_spec = spec("raw", &raw);
    let ours = median(
        || rbdx.prepare_import(&raw_spec, "raw-import"),
        || rbdx.cmd(&["migration", "execute", "--no-progress", "raw-import"]),
    )?;
    let convert = median(fresh_out, || {
        qemu_img(&["convert", "-f", "raw", "-O", "raw", path(&raw), path(&out)])
    })?;
    let cp = median(fresh_out, || {
        let mut c = Command::new("cp");
        c.arg("--sparse=always").arg(&raw).arg(&out);
        c
    })?;
    rows.push(Row {
        label: "raw 1 GiB (40% allocated): import-only execute".into(),
        ours,
        reference: Some(("qemu-img convert -O raw".into(), convert)),
        target: Some(1.0),
    });
    rows.push(Row {
        label: "raw 1 GiB (40% allocated): import-only execute".into(),
        ours,
        reference: Some(("cp --sparse=always".into(), cp)),
        target: Some(0.9),
    });

    eprintln!("+ qcow2 import");
    let qcow_spec = spec("qcow", &qcow);
    let ours = median(
        || rbdx.prepare_import(&qcow_spec, "qcow-import"),
        || rbdx.cmd(&["migration", "execute", "--no-progress", "qcow-import"]),
    )?;
    let convert = median(fresh_out, || {
        qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            path(&qcow),
            path(&out),
        ])
    })?;
    rows.push(Row {
        label: "qcow2 of the same content: import-only execute".into(),
        ours,
        reference: Some(("qemu-img convert -O raw".into(), convert)),
        target: Some(1.0),
    });

    eprintln!("+ live migration between pools");
    rows.extend(live(&rbdx, &raw, cp)?);

    eprintln!("+ live migration of scattered data, with and without a snapshot");
    let scattered = dir.join("scattered.raw");
    make_scattered(&scattered)?;
    rows.extend(live_scattered(&rbdx, &scattered)?);
    eprintln!("+ import-only from another site through its gateway");
    rows.push(cross_site(&rbdx, &scattered, &dir)?);
    let _ = std::fs::remove_file(&scattered);

    eprintln!("+ 16 GiB sparse qcow2");
    let sparse_spec = spec("qcow", &sparse);
    let sparse_ours = median(
        || rbdx.prepare_import(&sparse_spec, "sparse-import"),
        || rbdx.cmd(&["migration", "execute", "--no-progress", "sparse-import"]),
    )?;
    let convert = median(fresh_out, || {
        qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            path(&sparse),
            path(&out),
        ])
    })?;
    rows.push(Row {
        label: "qcow2 16 GiB holding 1 MiB: import-only execute (target: under 1 s)".into(),
        ours: sparse_ours,
        reference: Some(("qemu-img convert -O raw".into(), convert)),
        target: None,
    });
    let _ = std::fs::remove_file(&out);

    print_table(&rows, allocated, sparse_ours.secs);
    Ok(())
}

/// Migrates a 1 GiB image with one snapshot between two pools, back and forth; returns a row
/// for each step.
fn live(rbdx: &Rbdx, raw: &Path, cp: Sample) -> anyhow::Result<Vec<Row>> {
    rbdx.run(&["import", "--no-progress", path(raw), "rbd/live"])?;
    rbdx.run(&["snap", "create", "--no-progress", "rbd/live@one"])?;
    rbdx.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "64M",
        "--io-pattern",
        "rand",
        "rbd/live",
    ])?;
    let pools = ["rbd", "fast"];
    let mut steps: [Vec<Sample>; 3] = Default::default();
    for round in 0..RUNS {
        let (from, to) = (pools[round % 2], pools[(round + 1) % 2]);
        let (src, dst) = (format!("{from}/live"), format!("{to}/live"));
        let prepare = ["migration", "prepare", src.as_str(), dst.as_str()];
        let execute = ["migration", "execute", "--no-progress", dst.as_str()];
        let commit = ["migration", "commit", "--no-progress", dst.as_str()];
        for (n, args) in [&prepare[..], &execute[..], &commit[..]].iter().enumerate() {
            settle();
            steps[n].push(measure(&mut rbdx.cmd(args))?);
        }
    }
    let names = ["prepare", "execute", "commit"];
    Ok(steps
        .into_iter()
        .zip(names)
        .map(|(samples, name)| Row {
            label: format!("live, 1 GiB with 1 snapshot, pool to pool: {name}"),
            ours: summary(samples),
            reference: (name == "execute").then(|| ("cp --sparse=always (floor)".into(), cp)),
            target: None,
        })
        .collect())
}

/// Returns the median `execute` time of live migrations of `image` back and forth between
/// the pools `rbd` and `fast` (prepare and commit not timed).
fn execute_rounds(rbdx: &Rbdx, image: &str) -> anyhow::Result<Sample> {
    let pools = ["rbd", "fast"];
    let mut samples = Vec::new();
    for round in 0..RUNS {
        let (from, to) = (pools[round % 2], pools[(round + 1) % 2]);
        let (src, dst) = (format!("{from}/{image}"), format!("{to}/{image}"));
        rbdx.run(&["migration", "prepare", &src, &dst])?;
        settle();
        samples.push(measure(&mut rbdx.cmd(&[
            "migration",
            "execute",
            "--no-progress",
            &dst,
        ]))?);
        rbdx.run(&["migration", "commit", "--no-progress", &dst])?;
    }
    Ok(summary(samples))
}

/// Live migrations of the scattered image: without a snapshot, and with one snapshot and
/// 64 MiB of scattered 16 KiB writes after it (the same writes in both).
fn live_scattered(rbdx: &Rbdx, raw: &Path) -> anyhow::Result<Vec<Row>> {
    let writes = [
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "16K",
        "--io-total",
        "64M",
        "--io-pattern",
        "rand",
    ];
    rbdx.run(&["import", "--no-progress", path(raw), "rbd/flat"])?;
    let mut args = writes.to_vec();
    args.push("rbd/flat");
    rbdx.run(&args)?;
    let flat = execute_rounds(rbdx, "flat")?;
    rbdx.run(&["import", "--no-progress", path(raw), "rbd/snapped"])?;
    rbdx.run(&["snap", "create", "--no-progress", "rbd/snapped@before"])?;
    let mut args = writes.to_vec();
    args.push("rbd/snapped");
    rbdx.run(&args)?;
    let snapped = execute_rounds(rbdx, "snapped")?;
    for image in ["flat", "snapped"] {
        let pool = if RUNS % 2 == 1 { "fast" } else { "rbd" };
        let _ = rbdx.run(&["snap", "purge", "--no-progress", &format!("{pool}/{image}")]);
        rbdx.remove(&format!("{pool}/{image}"))?;
    }
    Ok(vec![
        Row {
            label: "live, 1 GiB of 404 MiB scattered + 64 MiB written, no snapshot: execute".into(),
            ours: flat,
            reference: None,
            target: None,
        },
        Row {
            label: "the same with a snapshot before the 64 MiB: execute (target: at most 1.5x \
                    the time without it)"
                .into(),
            ours: snapped,
            reference: Some(("the same without the snapshot".into(), flat)),
            target: Some(0.67),
        },
    ])
}

/// Import-only execute of the scattered image (at a snapshot) from site A into site B through
/// A's gateway (TLS on 127.0.0.1), against the same import between two local pools of A.
fn cross_site(a: &Rbdx, raw: &Path, dir: &Path) -> anyhow::Result<Row> {
    use std::io::BufRead as _;
    a.run(&["import", "--no-progress", path(raw), "rbd/xsrc"])?;
    a.run(&["snap", "create", "--no-progress", "rbd/xsrc@base"])?;
    let local_spec =
        r#"{"type":"native","pool_name":"rbd","image_name":"xsrc","snap_name":"base"}"#;
    let abort = |c: &mut Command| {
        let _ = c.output();
    };
    let local = median(
        || {
            abort(&mut a.cmd(&["migration", "abort", "--no-progress", "fast/xlocal"]));
            a.prepare_import(local_spec, "fast/xlocal")
        },
        || a.cmd(&["migration", "execute", "--no-progress", "fast/xlocal"]),
    )?;
    abort(&mut a.cmd(&["migration", "abort", "--no-progress", "fast/xlocal"]));

    let mut gateway = a
        .cmd(&[
            "gateway",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("gateway.log"))?)
        .spawn()?;
    let result = (|| {
        let mut line = String::new();
        let stdout = gateway.stdout.take().context("no stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(!line.trim().is_empty(), "the gateway did not start");
        let home = dir.join("site-b-home");
        std::fs::create_dir_all(home.join("rbdx"))?;
        let conf = a.run(&["gateway", "key", "create", "site-b", "--profile", "ro"])?;
        std::fs::write(home.join("rbdx/site-a.conf"), conf)?;
        let b = Rbdx {
            binary: a.binary.clone(),
            store: dir.join("site-b"),
        };
        let with_home = |args: &[&str]| {
            let mut c = b.cmd(args);
            c.env("XDG_CONFIG_HOME", &home);
            c
        };
        let remote_spec = r#"{"type":"native","cluster_name":"site-a","pool_name":"rbd","image_name":"xsrc","snap_name":"base"}"#;
        let cross = median(
            || {
                abort(&mut with_home(&[
                    "migration",
                    "abort",
                    "--no-progress",
                    "rbd/xremote",
                ]));
                let out = with_home(&[
                    "migration",
                    "prepare",
                    "--import-only",
                    "--source-spec",
                    remote_spec,
                    "rbd/xremote",
                ])
                .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "prepare at B: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            },
            || with_home(&["migration", "execute", "--no-progress", "rbd/xremote"]),
        )?;
        Ok(cross)
    })();
    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = a.run(&["snap", "purge", "--no-progress", "rbd/xsrc"]);
    a.remove("rbd/xsrc")?;
    Ok(Row {
        label: "import-only from another site through its gateway, 1 GiB of 404 MiB scattered: \
                execute (target: at most 2x the local import)"
            .into(),
        ours: result?,
        reference: Some(("the same import between two local pools".into(), local)),
        target: Some(0.5),
    })
}

fn print_table(rows: &[Row], allocated: u64, sparse_secs: f64) {
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!();
    println!("## migration (cargo xtask bench migration)");
    println!();
    println!(
        "| case | rbdx | rbdx peak RSS | reference | reference time | ref. peak RSS | ratio (speed) | target |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---|");
    let mut peak = 0;
    for row in rows {
        peak = peak.max(row.ours.rss_bytes);
        let (name, time, rss, ratio, verdict) = match &row.reference {
            Some((name, r)) => {
                let ratio = r.secs / row.ours.secs;
                let verdict = match row.target {
                    Some(t) if ratio >= t => format!(">= {t}x: met"),
                    Some(t) => format!(">= {t}x: NOT met"),
                    None => "-".to_owned(),
                };
                (
                    name.as_str(),
                    format!("{:.2} s", r.secs),
                    format!("{:.0} MiB", mib(r.rss_bytes)),
                    format!("{ratio:.2}x"),
                    verdict,
                )
            }
            None => ("-", "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {:.2} s | {:.0} MiB | {name} | {time} | {rss} | {ratio} | {verdict} |",
            row.label,
            row.ours.secs,
            mib(row.ours.rss_bytes)
        );
    }
    println!();
    println!(
        "16 GiB sparse qcow2 under 1 s: {:.2} s, {}; peak memory of every rbdx command under \
         256 MiB: {:.0} MiB, {}",
        sparse_secs,
        if sparse_secs < 1.0 { "met" } else { "NOT met" },
        mib(peak),
        if peak < 256 << 20 { "met" } else { "NOT met" }
    );
    println!(
        "{:.0} MiB of data in the 1 GiB images; medians of {RUNS} runs, page cache warm; rbdx \
         times are `rbdx migration execute` (prepare, not timed, before each run), the references \
         write a raw file on the same file system",
        mib(allocated)
    );
}
