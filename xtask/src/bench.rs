//! `cargo xtask bench`: runs criterion benchmarks and prints each group next to its
//! reference, from the estimates criterion saved in `target/criterion`.

use std::path::Path;

use anyhow::Context;

use crate::{cargo, root, run_step};

/// One row of a comparison table: a criterion group and how to show it.
struct Row {
    group: &'static str,
    label: &'static str,
    /// Minimum rbdx/reference ratio, if the issue sets a target.
    target: Option<f64>,
}

/// A benchmark suite: the bench target that runs it and the rows it reports.
struct Suite {
    name: &'static str,
    bench: &'static str,
    subject: &'static str,
    reference: &'static str,
    rows: &'static [Row],
    notes: &'static str,
}

const SUITES: &[Suite] = &[Suite {
    name: "objstore",
    bench: "objstore",
    subject: "dir",
    reference: "plain",
    rows: &[
        Row {
            group: "write-4m",
            label: "4 MiB object writes, 4 in flight",
            target: Some(0.8),
        },
        Row {
            group: "read-4m",
            label: "4 MiB object reads, 4 in flight",
            target: Some(0.8),
        },
        Row {
            group: "randwrite-4k-qd1",
            label: "4 KiB random writes, 1 in flight",
            target: Some(0.5),
        },
        Row {
            group: "randwrite-4k-qd16",
            label: "4 KiB random writes, 16 in flight",
            target: Some(0.5),
        },
        Row {
            group: "omap-batch",
            label: "operate: 2 omap keys + 1 xattr, 16 in flight",
            target: None,
        },
    ],
    notes: "reference: pwrite/pread on one 256 MiB file in the same directory, filled once with \
            4 MiB writes, same offsets and concurrency (threads)",
}];

/// Runs the selected suites (all when `args` is empty) and prints their tables.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let selected: Vec<&Suite> = if args.is_empty() {
        SUITES.iter().collect()
    } else {
        args.iter()
            .map(|a| {
                SUITES.iter().find(|s| s.name == a).with_context(|| {
                    let known: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
                    format!(
                        "unknown benchmark group '{a}' (known: {})",
                        known.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    for suite in &selected {
        run_step(cargo().args(["bench", "-p", "rbdx-benches", "--bench", suite.bench]))?;
    }
    println!();
    println!("machine: {}", machine());
    for suite in selected {
        print_table(suite)?;
    }
    Ok(())
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("Linux {}, {cpus} CPUs", kernel.trim())
}

/// Throughput per second of one measured function, and its unit.
fn throughput(dir: &Path) -> anyhow::Result<(f64, &'static str)> {
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let estimates = read("new/estimates.json")?;
    let benchmark = read("new/benchmark.json")?;
    let nanos = estimates["mean"]["point_estimate"]
        .as_f64()
        .context("no mean estimate")?;
    let per_iter = &benchmark["throughput"];
    if let Some(bytes) = per_iter["Bytes"].as_f64() {
        Ok((bytes / nanos * 1e9 / 1e6, "MB/s"))
    } else if let Some(n) = per_iter["Elements"].as_f64() {
        Ok((n / nanos * 1e9, "ops/s"))
    } else {
        anyhow::bail!("no throughput in {}", dir.display())
    }
}

fn print_table(suite: &Suite) -> anyhow::Result<()> {
    let base = root().join("target/criterion");
    println!();
    println!("## {} (cargo xtask bench {})", suite.name, suite.name);
    println!();
    println!(
        "| case | rbdx {} | {} | ratio | target |",
        suite.subject, suite.reference
    );
    println!("|---|---:|---:|---:|---|");
    for row in suite.rows {
        let (ours, unit) = throughput(&base.join(row.group).join(suite.subject))?;
        let theirs = throughput(&base.join(row.group).join(suite.reference)).ok();
        let (reference, ratio, verdict) = match theirs {
            Some((value, _)) => {
                let ratio = ours / value;
                let verdict = match row.target {
                    Some(t) if ratio >= t => format!(">= {t}x: met"),
                    Some(t) => format!(">= {t}x: NOT met"),
                    None => "-".to_owned(),
                };
                (
                    format!("{value:.0} {unit}"),
                    format!("{ratio:.2}x"),
                    verdict,
                )
            }
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {ours:.0} {unit} | {reference} | {ratio} | {verdict} |",
            row.label
        );
    }
    println!();
    println!("{}", suite.notes);
    Ok(())
}
