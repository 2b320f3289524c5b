//! `cargo xtask bench journal`: the cost of journaling and the speed of diffs, on the
//! embedded store, in one run:
//!
//! - 4 KiB random writes at queue depth 1 (`rbdx bench`, median and p99 latency) and 4 MiB
//!   sequential writes (16 in flight, throughput) on an image without and with journaling;
//! - `rbdx diff --from-snap` of a 64 GiB image with 1% of it written since the snapshot
//!   (exact ranges, and whole objects);
//! - `rbdx export-diff` of a fully written 1 GiB image next to `rbdx export` of it.
//!
//! Each figure is the median of three runs.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;

use crate::migration_bench::settle;
use crate::rbdx::{Rbdx, median};
use crate::show;

const RUNS: usize = 3;

impl Rbdx {
    /// Runs a command with its output discarded; returns its wall time.
    fn time(&self, args: &[&str]) -> anyhow::Result<f64> {
        let mut cmd = self.cmd(args);
        cmd.stdout(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().with_context(|| show(&cmd))?;
        anyhow::ensure!(status.success(), "{} failed", show(&cmd));
        Ok(start.elapsed().as_secs_f64())
    }

    /// Runs `rbdx bench --format json` with `args`; returns the parsed result.
    fn bench(&self, image: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["bench", "--format", "json", "--io-type", "write"];
        all.extend_from_slice(args);
        all.push(image);
        Ok(serde_json::from_str(&self.run(&all)?)?)
    }
}

fn image_features(journaling: bool) -> &'static str {
    if journaling {
        "layering,exclusive-lock,object-map,fast-diff,journaling"
    } else {
        "layering,exclusive-lock,object-map,fast-diff"
    }
}

/// (p50 µs, p99 µs, bytes/s) of 4 KiB QD1 random writes and 4 MiB sequential writes.
struct WriteFigures {
    p50: f64,
    p99: f64,
    seq: f64,
}

fn writes(rbdx: &Rbdx, journaling: bool) -> anyhow::Result<WriteFigures> {
    let name = if journaling { "journaled" } else { "plain" };
    let (mut p50, mut p99, mut seq) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        let image = format!("{name}{run}");
        rbdx.run(&[
            "create",
            "--size",
            "4G",
            "--image-feature",
            image_features(journaling),
            &image,
        ])?;
        settle();
        let small = rbdx.bench(
            &image,
            &[
                "--io-size",
                "4K",
                "--io-threads",
                "1",
                "--io-pattern",
                "rand",
                "--io-total",
                "40M",
            ],
        )?;
        p50.push(small["latency_p50_us"].as_f64().unwrap_or(0.0));
        p99.push(small["latency_p99_us"].as_f64().unwrap_or(0.0));
        settle();
        let big = rbdx.bench(
            &image,
            &[
                "--io-size",
                "4M",
                "--io-threads",
                "16",
                "--io-pattern",
                "seq",
                "--io-total",
                "3G",
            ],
        )?;
        seq.push(big["bytes_per_sec"].as_f64().unwrap_or(0.0));
        rbdx.run(&["rm", "--no-progress", &image])?;
    }
    Ok(WriteFigures {
        p50: median(p50),
        p99: median(p99),
        seq: median(seq),
    })
}

/// Builds the 64 GiB image with 1% written since snapshot `s1`; times the diffs.
fn big_diff(rbdx: &Rbdx) -> anyhow::Result<(f64, f64, usize)> {
    rbdx.run(&["create", "--size", "64G", "big"])?;
    let fill = |total: &str| {
        rbdx.bench(
            "big",
            &[
                "--io-size",
                "64K",
                "--io-threads",
                "16",
                "--io-pattern",
                "rand",
                "--io-total",
                total,
            ],
        )
    };
    fill("655M")?;
    rbdx.run(&["snap", "create", "--no-progress", "big@s1"])?;
    fill("655M")?;
    let exact = median(
        (0..RUNS)
            .map(|_| rbdx.time(&["diff", "--from-snap", "s1", "--format", "json", "big"]))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let whole = median(
        (0..RUNS)
            .map(|_| {
                rbdx.time(&[
                    "diff",
                    "--from-snap",
                    "s1",
                    "--whole-object",
                    "--format",
                    "json",
                    "big",
                ])
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let extents: serde_json::Value = serde_json::from_str(&rbdx.run(&[
        "diff",
        "--from-snap",
        "s1",
        "--format",
        "json",
        "big",
    ])?)?;
    Ok((exact, whole, extents.as_array().map_or(0, Vec::len)))
}

/// Times export and export-diff of a fully written 1 GiB image into files.
fn exports(rbdx: &Rbdx, dir: &Path) -> anyhow::Result<(f64, f64)> {
    rbdx.run(&["create", "--size", "1G", "full"])?;
    rbdx.bench(
        "full",
        &[
            "--io-size",
            "4M",
            "--io-threads",
            "8",
            "--io-pattern",
            "seq",
            "--io-total",
            "1G",
        ],
    )?;
    let out = dir.join("out.bin");
    let out_s = out.to_str().unwrap_or_default().to_owned();
    let mut export = Vec::new();
    let mut export_diff = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(&out);
        settle();
        export.push(rbdx.time(&["export", "--no-progress", "full", &out_s])?);
        let _ = std::fs::remove_file(&out);
        settle();
        export_diff.push(rbdx.time(&["export-diff", "--no-progress", "full", &out_s])?);
    }
    let _ = std::fs::remove_file(&out);
    Ok((median(export), median(export_diff)))
}

/// Runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let (rbdx, dir) = Rbdx::fresh("bench-journal")?;
    eprintln!("+ 4 KiB QD1 and 4 MiB sequential writes, without and with journaling");
    let plain = writes(&rbdx, false)?;
    let journaled = writes(&rbdx, true)?;
    eprintln!("+ a 64 GiB image with 1% written since a snapshot: diff");
    let (exact, whole, extents) = big_diff(&rbdx)?;
    eprintln!("+ a fully written 1 GiB image: export and export-diff");
    let (export, export_diff) = exports(&rbdx, &dir)?;

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("## journal and diffs (cargo xtask bench journal)");
    println!();
    println!("| case | without journaling | with journaling | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    let r50 = journaled.p50 / plain.p50;
    let r99 = journaled.p99 / plain.p99;
    println!(
        "| 4 KiB random write latency, QD1, median | {:.0} us | {:.0} us | {r50:.2}x | <= 1.2x: {} |",
        plain.p50,
        journaled.p50,
        verdict(r50 <= 1.2)
    );
    println!(
        "| 4 KiB random write latency, QD1, p99 | {:.0} us | {:.0} us | {r99:.2}x | <= 1.2x: {} |",
        plain.p99,
        journaled.p99,
        verdict(r99 <= 1.2)
    );
    let rs = journaled.seq / plain.seq;
    println!(
        "| 4 MiB sequential writes, 16 in flight | {:.0} MB/s | {:.0} MB/s | {rs:.2}x | >= 0.8x: {} |",
        plain.seq / 1e6,
        journaled.seq / 1e6,
        verdict(rs >= 0.8)
    );
    println!();
    println!("| case | time | target |");
    println!("|---|---:|---|");
    println!(
        "| diff --from-snap of a 64 GiB image, 1% written since ({extents} extents) | {exact:.2} s | < 1 s: {} |",
        verdict(exact < 1.0)
    );
    println!(
        "| the same with --whole-object | {whole:.2} s | < 1 s: {} |",
        verdict(whole < 1.0)
    );
    println!(
        "| export of a fully written 1 GiB image to a file | {export:.2} s ({:.0} MB/s) | - |",
        1073.741824 / export
    );
    println!(
        "| export-diff of the same image (from creation) | {export_diff:.2} s ({:.0} MB/s, {:.2}x export) | - |",
        1073.741824 / export_diff,
        export / export_diff
    );
    println!();
    println!("medians of {RUNS} runs on the embedded store; writes with `rbdx bench`");
    Ok(())
}
