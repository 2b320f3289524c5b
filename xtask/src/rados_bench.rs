//! The reference figures of the rados benchmark: Ceph's own `rados bench`, run against the
//! same cluster in the same `cargo xtask bench` run, with the same object sizes and
//! concurrency as rbdx's cases, in a pool of its own.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::show;

/// Seconds each `rados bench` phase runs.
const SECONDS: &str = "10";
/// The pool `rados bench` writes to.
const POOL: &str = "rbdx-bench-reference";

/// One `rados bench` phase and the case it is the reference for.
struct Phase {
    group: &'static str,
    args: &'static [&'static str],
    /// `rados bench --run-name`: the read phase reads what the 4 MiB write phase wrote.
    run_name: &'static str,
    /// Read "Bandwidth (MB/sec)" (converted to MB/s) rather than "Average IOPS".
    bandwidth: bool,
}

const PHASES: &[Phase] = &[
    Phase {
        group: "write-4m",
        args: &["write", "-b", "4194304", "-t", "4", "--no-cleanup"],
        run_name: "write-4m",
        bandwidth: true,
    },
    Phase {
        group: "read-4m",
        args: &["seq", "-t", "4"],
        run_name: "write-4m",
        bandwidth: true,
    },
    Phase {
        group: "randwrite-4k-qd1",
        args: &["write", "-b", "4096", "-t", "1", "--no-cleanup"],
        run_name: "write-4k-qd1",
        bandwidth: false,
    },
    Phase {
        group: "randwrite-4k-qd16",
        args: &["write", "-b", "4096", "-t", "16", "--no-cleanup"],
        run_name: "write-4k-qd16",
        bandwidth: false,
    },
];

fn ceph(conf: &Path, tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(tool);
    cmd.arg("-c").arg(conf).args(args);
    eprintln!("+ {}", show(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("running {tool} (is ceph-common installed?)"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed: {}",
        show(&cmd),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `label` on its line of `rados bench` output.
fn figure(output: &str, label: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.trim().parse().ok())
        .with_context(|| format!("no '{label}' in rados bench output:\n{output}"))
}

/// Runs every phase and returns, per case group, the figure and its unit.
pub fn run(conf: &Path) -> anyhow::Result<HashMap<&'static str, (f64, &'static str)>> {
    ceph(conf, "ceph", &["osd", "pool", "create", POOL, "8"])?;
    let result = (|| {
        let mut figures = HashMap::new();
        for phase in PHASES {
            let mut args = vec!["-p", POOL, "bench", SECONDS];
            args.extend_from_slice(phase.args);
            args.extend_from_slice(&["--run-name", phase.run_name]);
            let output = ceph(conf, "rados", &args)?;
            let value = if phase.bandwidth {
                // rados bench counts MB as 2^20 bytes; the table uses 10^6.
                (figure(&output, "Bandwidth (MB/sec):")? * 1.048_576, "MB/s")
            } else {
                (figure(&output, "Average IOPS:")?, "ops/s")
            };
            figures.insert(phase.group, value);
        }
        Ok(figures)
    })();
    ceph(
        conf,
        "ceph",
        &[
            "osd",
            "pool",
            "rm",
            POOL,
            POOL,
            "--yes-i-really-really-mean-it",
        ],
    )?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_from_rados_bench_output() {
        let out = "Total time run:         10.01\nBandwidth (MB/sec):     812.5\n\
                   Average IOPS:           203\n";
        assert_eq!(figure(out, "Bandwidth (MB/sec):").ok(), Some(812.5));
        assert_eq!(figure(out, "Average IOPS:").ok(), Some(203.0));
        assert!(figure(out, "Stddev IOPS:").is_err());
    }
}
