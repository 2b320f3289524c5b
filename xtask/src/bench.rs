//! `cargo xtask bench`: runs criterion benchmarks and prints each group next to its
//! reference, from the estimates criterion saved in `target/criterion`.

use std::path::Path;

use anyhow::Context;

use std::collections::HashMap;

use crate::{cargo, ceph, rados_bench, run_step, target_dir};

/// One row of a comparison table: a criterion group and how to show it.
struct Row {
    group: &'static str,
    label: &'static str,
    /// Minimum rbdx/reference ratio, if the issue sets a target.
    target: Option<f64>,
}

/// Where a suite's reference figures come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reference {
    /// A second function in each criterion group.
    Criterion,
    /// Ceph's `rados bench`, run by this task against the same cluster.
    RadosBench,
}

/// A benchmark suite: the bench target that runs it and the rows it reports.
struct Suite {
    name: &'static str,
    backend: &'static str,
    bench: &'static str,
    features: &'static [&'static str],
    subject: &'static str,
    reference: &'static str,
    source: Reference,
    rows: &'static [Row],
    notes: &'static str,
}

const OBJSTORE_ROWS: &[Row] = &[
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
        target: Some(0.8),
    },
    Row {
        group: "omap-batch",
        label: "operate: 2 omap keys + 1 xattr, 16 in flight",
        target: None,
    },
];

const RADOS_ROWS: &[Row] = &[
    Row {
        group: "write-4m",
        label: "4 MiB object writes, 4 in flight",
        target: Some(0.9),
    },
    Row {
        group: "read-4m",
        label: "4 MiB object reads, 4 in flight",
        target: Some(0.9),
    },
    Row {
        group: "randwrite-4k-qd1",
        label: "4 KiB writes, 1 in flight",
        target: None,
    },
    Row {
        group: "randwrite-4k-qd16",
        label: "4 KiB writes, 16 in flight",
        target: None,
    },
    Row {
        group: "omap-batch",
        label: "operate: 2 omap keys + 1 xattr, 16 in flight",
        target: None,
    },
];

const SUITES: &[Suite] = &[
    Suite {
        name: "objstore",
        backend: "dir",
        bench: "objstore",
        features: &[],
        subject: "dir",
        reference: "plain",
        source: Reference::Criterion,
        rows: OBJSTORE_ROWS,
        notes: "reference: pwrite/pread on one 256 MiB file in the same directory, filled once \
                with 4 MiB writes, same offsets and concurrency (threads)",
    },
    Suite {
        name: "objstore",
        backend: "rados",
        bench: "objstore_rados",
        features: &["--features", "rados"],
        subject: "rados",
        reference: "rados bench",
        source: Reference::RadosBench,
        rows: RADOS_ROWS,
        notes: "reference: `rados bench` on the same cluster in the same run, same object size \
                and concurrency (`-b 4M -t 4` write, then seq reads of those objects; `-b 4K -t \
                1` and `-t 16` writes). rbdx overwrites 64 existing 4 MiB objects and writes \
                4 KiB at random offsets inside them; rados bench writes new objects",
    },
];

/// Runs the selected suites (default: every `dir` suite) and prints their tables. Arguments:
/// suite names and `--backend dir|rados`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut backend = "dir";
    let mut names = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--backend" => {
                backend = rest
                    .next()
                    .map(String::as_str)
                    .context("--backend needs dir or rados")?
            }
            other => names.push(other),
        }
    }
    let wants_image = backend == "dir" && (names.is_empty() || names.contains(&"image"));
    if backend == "dir" && names == ["image"] {
        return crate::image_bench::run();
    }
    if backend == "dir" && names == ["source"] {
        return crate::source_bench::run();
    }
    if backend == "dir" && names == ["migration"] {
        return crate::migration_bench::run();
    }
    if backend == "dir" && names == ["nbd"] {
        return crate::nbd_bench::run();
    }
    if backend == "dir" && names == ["journal"] {
        return crate::journal_bench::run();
    }
    if backend == "dir" && names == ["peer"] {
        return crate::peer_bench::run();
    }
    if backend == "dir" && names == ["mirror"] {
        return crate::mirror_bench::run();
    }
    let wants_source = backend == "dir" && (names.is_empty() || names.contains(&"source"));
    let wants_migration = backend == "dir" && (names.is_empty() || names.contains(&"migration"));
    let wants_nbd = backend == "dir" && (names.is_empty() || names.contains(&"nbd"));
    let wants_journal = backend == "dir" && (names.is_empty() || names.contains(&"journal"));
    let wants_peer = backend == "dir" && (names.is_empty() || names.contains(&"peer"));
    let wants_mirror = backend == "dir" && (names.is_empty() || names.contains(&"mirror"));
    names.retain(|n| {
        ![
            "image",
            "source",
            "migration",
            "nbd",
            "journal",
            "peer",
            "mirror",
        ]
        .contains(n)
    });
    let selected: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| s.backend == backend && (names.is_empty() || names.contains(&s.name)))
        .collect();
    for name in &names {
        anyhow::ensure!(
            selected.iter().any(|s| s.name == *name),
            "no benchmark '{name}' for backend '{backend}' (known: {})",
            SUITES
                .iter()
                .map(|s| format!("{} --backend {}", s.name, s.backend))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    anyhow::ensure!(
        !selected.is_empty(),
        "no benchmarks for backend '{backend}'"
    );
    let needs_cluster = selected.iter().any(|s| s.source == Reference::RadosBench);
    let (_cluster, conf) = if needs_cluster {
        let (cluster, conf) = ceph::cluster_for("ceph-bench")?;
        let conf = conf.context(
            "the rados benchmark needs a Ceph cluster: set RBDX_TEST_CEPH_CONF or install \
             ceph-mon ceph-osd ceph-mgr ceph-common (a micro-cluster is then started)",
        )?;
        (cluster, Some(conf))
    } else {
        (None, None)
    };
    let mut references = HashMap::new();
    for suite in &selected {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", "rbdx-benches", "--bench", suite.bench])
            .args(suite.features);
        if let Some(conf) = &conf {
            cmd.env("RBDX_BENCH_CEPH_CONF", conf);
        }
        run_step(&mut cmd)?;
        if let (Reference::RadosBench, Some(conf)) = (suite.source, &conf) {
            references = rados_bench::run(conf)?;
        }
    }
    println!();
    println!("machine: {}", machine());
    for suite in selected {
        print_table(suite, &references)?;
    }
    if wants_image {
        crate::image_bench::run()?;
    }
    if wants_source {
        crate::source_bench::run()?;
    }
    if wants_migration {
        crate::migration_bench::run()?;
    }
    if wants_nbd {
        crate::nbd_bench::run()?;
    }
    if wants_journal {
        crate::journal_bench::run()?;
    }
    if wants_peer {
        crate::peer_bench::run()?;
    }
    if wants_mirror {
        crate::mirror_bench::run()?;
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

fn print_table(suite: &Suite, references: &HashMap<&str, (f64, &str)>) -> anyhow::Result<()> {
    let base = target_dir()?.join("criterion");
    println!();
    println!(
        "## {} (cargo xtask bench {} --backend {})",
        suite.name, suite.name, suite.backend
    );
    println!();
    println!(
        "| case | rbdx {} | {} | ratio | target |",
        suite.subject, suite.reference
    );
    println!("|---|---:|---:|---:|---|");
    for row in suite.rows {
        let (ours, unit) = throughput(&base.join(row.group).join(suite.subject))?;
        let theirs = match suite.source {
            Reference::Criterion => throughput(&base.join(row.group).join(suite.reference)).ok(),
            Reference::RadosBench => references.get(row.group).copied(),
        };
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
