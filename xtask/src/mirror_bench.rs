//! `cargo xtask bench mirror`: two sites on this machine (each its own store and gateway on
//! 127.0.0.1), `rbdx mirror daemon` at site B, one table:
//!
//! - initial copy of a 1 GiB image holding 404 MiB of scattered writes, journal and snapshot
//!   mode: from `mirror image enable` at A until B reports `up+replaying`;
//! - snapshot-mode incremental copies of 64 and 256 MiB changed: from `mirror image snapshot`
//!   at A until B holds the matching complete snapshot;
//! - journal replay of a backlog (the daemon frozen with SIGSTOP while A writes, then let go):
//!   4 KiB writes (entries/s) and 4 MiB writes (MiB/s);
//! - replay lag under a 4 KiB, 16-in-flight write load at A for 60 s, sampled every 5 s;
//! - `mirror image verify` at B of the snapshot-mode copy: time, and the bytes A's gateway
//!   sent (its `wchar`), against the data;
//! - an orderly demote at A and promote at B;
//! - the daemon's peak memory.
//!
//! The reference column quotes Ceph 16.2.15 rbd-mirror as measured on this kind of machine
//! (`../shared/docs/REFERENCE.md`); it is not run here.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::migration_bench::{make_scattered, settle};
use crate::rbdx::{Rbdx, high_water};

/// One site: its store and its gateway.
struct Site {
    rbdx: Rbdx,
    gateway: Child,
    /// Where the gateway listens.
    address: String,
    /// Its log.
    log: PathBuf,
}

impl Site {
    /// Stops the gateway: the site is cut off.
    fn cut_off(&mut self) {
        stop(&mut self.gateway);
    }

    /// Starts the gateway again where it listened.
    fn reconnect(&mut self) -> anyhow::Result<()> {
        self.gateway = start(
            &self.rbdx,
            &[
                "gateway",
                "serve",
                "--bind",
                &self.address,
                "--format",
                "json",
            ],
            &self.log,
        )?;
        Ok(())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        stop(&mut self.gateway);
    }
}

fn stop(child: &mut Child) {
    // SAFETY: kill only sends SIGTERM to a process this run started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill only sends a signal to a process this run started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Starts a server that prints one line when it is ready; its standard error goes to `log`.
fn start(rbdx: &Rbdx, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    Ok(start_line(rbdx, args, log)?.0)
}

/// Starts a server as [`start`] does; returns it with its first line as JSON.
fn start_line(
    rbdx: &Rbdx,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<(Child, serde_json::Value)> {
    let mut child = rbdx
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting rbdx {}", args.join(" ")))?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("no stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(!line.trim().is_empty(), "rbdx {} did not start", args[0]);
    let started = serde_json::from_str(line.trim()).unwrap_or(serde_json::Value::Null);
    Ok((child, started))
}

fn site(binary: &Path, dir: &Path, name: &str) -> anyhow::Result<Site> {
    let rbdx = Rbdx {
        binary: binary.to_owned(),
        store: dir.join(name),
    };
    rbdx.run(&[
        "mirror",
        "pool",
        "enable",
        "--site-name",
        name,
        "rbd",
        "image",
    ])?;
    let log = dir.join(format!("{name}-gateway.log"));
    let (gateway, started) = start_line(
        &rbdx,
        &[
            "gateway",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--format",
            "json",
        ],
        &log,
    )?;
    let address = started["address"]
        .as_str()
        .context("the gateway did not say where it listens")?
        .to_owned();
    Ok(Site {
        rbdx,
        gateway,
        address,
        log,
    })
}

fn json(rbdx: &Rbdx, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--format", "json"]);
    Ok(serde_json::from_str(&rbdx.run(&all)?)?)
}

/// Polls `done` every 20 ms until it holds; returns the seconds since `start`.
fn until(
    start: Instant,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<f64> {
    loop {
        if done()? {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(b: &Rbdx, spec: &str) -> String {
    json(b, &["mirror", "image", "status", spec])
        .ok()
        .and_then(|s| s["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The newest complete non-primary snapshot's primary snapshot id at site `b`.
fn synced_snap(b: &Rbdx, spec: &str) -> Option<u64> {
    let snaps = json(b, &["snap", "ls", "--all", spec]).ok()?;
    snaps
        .as_array()?
        .iter()
        .rev()
        .find(|s| s["namespace"]["state"] == "non-primary" && s["namespace"]["complete"] == true)
        .and_then(|s| s["namespace"]["primary_snap_id"].as_u64())
}

/// The commit entry id of journal client `client` of `spec` at site `a`.
fn committed(a: &Rbdx, spec: &str, client: &str) -> anyhow::Result<u64> {
    let status = json(a, &["journal", "status", spec])?;
    Ok(status["registered_clients"]
        .as_array()
        .context("no clients")?
        .iter()
        .find(|c| c["id"] == client)
        .and_then(|c| {
            c["commit_position"]["object_positions"]
                .as_array()?
                .iter()
                .filter_map(|p| p["entry_tid"].as_u64())
                .max()
        })
        .unwrap_or(0))
}

fn bench(rbdx: &Rbdx, spec: &str, size: &str, pattern: &str, total: &str) -> anyhow::Result<()> {
    rbdx.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        size,
        "--io-threads",
        "16",
        "--io-pattern",
        pattern,
        "--io-total",
        total,
        spec,
    ])?;
    Ok(())
}

/// Bytes process `pid` has written (to files and sockets), from `/proc/PID/io`.
fn bytes_written(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no wchar in /proc/PID/io")
}

/// The `bytes_since_resync` figure of `spec`'s status at site `a`.
fn resync_bytes(a: &Rbdx, spec: &str) -> Option<u64> {
    let status = json(a, &["mirror", "image", "status", spec]).ok()?;
    let description = status["description"].as_str()?;
    let figures: serde_json::Value =
        serde_json::from_str(description.strip_prefix("replaying, ")?).ok()?;
    figures["bytes_since_resync"].as_u64()
}

/// A journal-mode copy of the scattered image, A cut off, B force-promoted and written
/// (64 MiB), A written meanwhile (16 MiB), then A demoted and resynced with a delta: the
/// time from `resync` until A replays B with equal contents, and the bytes read from B.
fn delta_resync(
    a: &mut Site,
    b: &Site,
    raw_path: &str,
    dir: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let spec = "rbd/r";
    let long = Duration::from_secs(600);
    a.rbdx.run(&[
        "import",
        "--no-progress",
        "--image-feature",
        "layering,exclusive-lock,journaling",
        raw_path,
        spec,
    ])?;
    a.rbdx
        .run(&["mirror", "image", "enable", spec, "journal"])?;
    let mut daemon_a = start(
        &a.rbdx,
        &[
            "mirror",
            "daemon",
            "--format",
            "json",
            "--daemon-id",
            "bench-a",
        ],
        &dir.join("daemon-a.log"),
    )?;
    let result = (|| {
        until(Instant::now(), long, "the copy to replay", || {
            Ok(state(&b.rbdx, spec) == "up+replaying")
        })?;
        a.cut_off();
        b.rbdx
            .run(&["mirror", "image", "promote", "--force", spec])?;
        bench(&b.rbdx, spec, "64K", "rand", "64M")?;
        bench(&a.rbdx, spec, "64K", "rand", "16M")?;
        a.reconnect()?;
        until(Instant::now(), long, "split-brain at A", || {
            Ok(
                json(&a.rbdx, &["mirror", "image", "status", spec])?["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("split-brain")),
            )
        })?;
        a.rbdx.run(&["mirror", "image", "demote", spec])?;
        settle();
        let t0 = Instant::now();
        let said = a.rbdx.run(&["mirror", "image", "resync", spec])?;
        anyhow::ensure!(said.contains("Delta resync"), "not a delta resync: {said}");
        // Caught up: A's commit position at B has reached B's last entry.
        let owner = json(&a.rbdx, &["mirror", "pool", "info", "rbd"])?["peers"][0]["client_name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("client.")
            .to_owned();
        let end = committed(&b.rbdx, spec, "")?;
        let secs = until(t0, long, "A to replay B after the resync", || {
            Ok(committed(&b.rbdx, spec, &owner)? >= end)
        })?;
        until(Instant::now(), long, "the resync figure", || {
            Ok(resync_bytes(&a.rbdx, spec).is_some())
        })?;
        let verified = json(&a.rbdx, &["mirror", "image", "verify", spec])?;
        anyhow::ensure!(
            verified["mismatches"] == serde_json::json!([]),
            "A differs from B after the resync: {verified}"
        );
        let bytes = resync_bytes(&a.rbdx, spec).unwrap_or(0);
        let changed = 80u64 << 20;
        rows.push(Row {
            case: "delta resync after forced failover (1 GiB, 404 MiB data; 64 MiB at B, 16 MiB at A)",
            ours: format!("{secs:.2} s"),
            ceph: "33-36 s (full)",
            target: "<= 2 s",
            met: secs <= 2.0,
        });
        let ratio = bytes as f64 / changed as f64;
        rows.push(Row {
            case: "delta resync: bytes read from B / bytes changed",
            ours: format!("{} MiB / 80 MiB = {ratio:.2}x", bytes >> 20),
            ceph: "1 GiB image",
            target: "<= 1.1x",
            met: ratio <= 1.1,
        });
        Ok(())
    })();
    stop(&mut daemon_a);
    result
}

struct Row {
    case: &'static str,
    ours: String,
    ceph: &'static str,
    target: &'static str,
    met: bool,
}

/// Runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let (rbdx, dir) = Rbdx::fresh("bench-mirror")?;
    let binary: PathBuf = rbdx.binary.clone();
    let raw = dir.join("scattered.raw");
    let allocated = make_scattered(&raw)?;
    let mut a = site(&binary, &dir, "site-a")?;
    let b = site(&binary, &dir, "site-b")?;
    let token = a
        .rbdx
        .run(&["mirror", "pool", "peer", "bootstrap", "create", "rbd"])?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, token)?;
    b.rbdx.run(&[
        "mirror",
        "pool",
        "peer",
        "bootstrap",
        "import",
        "rbd",
        token_file.to_str().unwrap_or_default(),
    ])?;
    let raw_path = raw.to_str().unwrap_or_default();
    a.rbdx.run(&[
        "import",
        "--no-progress",
        "--image-feature",
        "layering,exclusive-lock,journaling",
        raw_path,
        "rbd/j",
    ])?;
    a.rbdx
        .run(&["import", "--no-progress", raw_path, "rbd/s"])?;
    settle();
    let mut daemon = start(
        &b.rbdx,
        &[
            "mirror",
            "daemon",
            "--format",
            "json",
            "--daemon-id",
            "bench",
        ],
        &dir.join("daemon.log"),
    )?;
    let long = Duration::from_secs(600);
    let mut rows = Vec::new();

    eprintln!("+ initial copies");
    for (spec, mode, case, ceph) in [
        (
            "rbd/j",
            "journal",
            "initial copy, journal mode (1 GiB, 404 MiB data)",
            "5.2 s",
        ),
        (
            "rbd/s",
            "snapshot",
            "initial copy, snapshot mode (1 GiB, 404 MiB data)",
            "4.9 s",
        ),
    ] {
        let t0 = Instant::now();
        a.rbdx.run(&["mirror", "image", "enable", spec, mode])?;
        let secs = until(t0, long, "the initial copy", || {
            Ok(state(&b.rbdx, spec) == "up+replaying")
        })?;
        rows.push(Row {
            case,
            ours: format!("{secs:.2} s"),
            ceph,
            target: "<= 1 s",
            met: secs <= 1.0,
        });
    }

    eprintln!("+ verify of the snapshot-mode copy");
    let sent_before = bytes_written(a.gateway.id())?;
    let t0 = Instant::now();
    let verified = json(&b.rbdx, &["mirror", "image", "verify", "rbd/s"])?;
    let secs = t0.elapsed().as_secs_f64();
    let sent = bytes_written(a.gateway.id())?.saturating_sub(sent_before);
    anyhow::ensure!(
        verified["mismatches"] == serde_json::json!([]),
        "the copies differ: {verified}"
    );
    let share = sent as f64 * 100.0 / allocated as f64;
    rows.push(Row {
        case: "verify at B (1 GiB, 404 MiB data): time",
        ours: format!("{secs:.2} s"),
        ceph: "- (no such command)",
        target: "<= 1 s",
        met: secs <= 1.0,
    });
    rows.push(Row {
        case: "verify at B: bytes A's gateway sent, share of the data",
        ours: format!("{} KiB ({share:.3}%)", sent >> 10),
        ceph: "-",
        target: "<= 1%",
        met: share <= 1.0,
    });

    eprintln!("+ snapshot-mode incremental copies");
    for (total, case, ceph, limit) in [
        ("64M", "incremental copy, 64 MiB changed", "1.8 s", 0.3),
        ("256M", "incremental copy, 256 MiB changed", "2.8 s", 0.8),
    ] {
        bench(&a.rbdx, "rbd/s", "64K", "rand", total)?;
        settle();
        let t0 = Instant::now();
        let out = a.rbdx.run(&["mirror", "image", "snapshot", "rbd/s"])?;
        let id: u64 = out
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .context("no snapshot id")?;
        let secs = until(t0, long, "the incremental copy", || {
            Ok(synced_snap(&b.rbdx, "rbd/s") == Some(id))
        })?;
        rows.push(Row {
            case,
            ours: format!("{secs:.2} s"),
            ceph,
            target: if limit < 0.5 { "<= 0.3 s" } else { "<= 0.8 s" },
            met: secs <= limit,
        });
    }

    eprintln!("+ journal replay of a backlog");
    let owner = json(&b.rbdx, &["mirror", "pool", "info", "rbd"])?["peers"][0]["client_name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("client.")
        .to_owned();
    until(Instant::now(), long, "the journal copy to replay", || {
        Ok(state(&b.rbdx, "rbd/j") == "up+replaying")
    })?;
    for (size, pattern, total, case, ceph) in [
        (
            "4K",
            "rand",
            "64M",
            "journal replay, 4 KiB writes",
            "600-900 entries/s (2.7 MiB/s)",
        ),
        (
            "4M",
            "seq",
            "1G",
            "journal replay, 4 MiB writes",
            "~9.5 MiB/s",
        ),
    ] {
        let start_tid = committed(&a.rbdx, "rbd/j", &owner)?;
        signal(&daemon, libc::SIGSTOP);
        let written = bench(&a.rbdx, "rbd/j", size, pattern, total);
        signal(&daemon, libc::SIGCONT);
        written?;
        let end_tid = committed(&a.rbdx, "rbd/j", "")?;
        let t0 = Instant::now();
        let secs = until(t0, long, "the replay to catch up", || {
            Ok(committed(&a.rbdx, "rbd/j", &owner)? >= end_tid)
        })?;
        let entries = end_tid.saturating_sub(start_tid) as f64;
        if size == "4K" {
            let rate = entries / secs;
            rows.push(Row {
                case,
                ours: format!(
                    "{rate:.0} entries/s ({:.1} MiB/s)",
                    rate * 4096.0 / 1048576.0
                ),
                ceph,
                target: ">= 20000 entries/s",
                met: rate >= 20_000.0,
            });
        } else {
            let mib = 1024.0 / secs;
            rows.push(Row {
                case,
                ours: format!("{mib:.0} MiB/s"),
                ceph,
                target: ">= 500 MiB/s",
                met: mib >= 500.0,
            });
        }
    }

    eprintln!("+ replay lag under a 4 KiB 16-in-flight load for 60 s");
    let mut lags = Vec::new();
    let t0 = Instant::now();
    let mut next_sample = 5.0;
    while t0.elapsed() < Duration::from_secs(60) {
        bench(&a.rbdx, "rbd/j", "4K", "rand", "8M")?;
        if t0.elapsed().as_secs_f64() >= next_sample {
            let head = committed(&a.rbdx, "rbd/j", "")?;
            let done = committed(&a.rbdx, "rbd/j", &owner)?;
            lags.push(head.saturating_sub(done));
            next_sample += 5.0;
        }
    }
    let third = (lags.len() / 3).max(1);
    let first = lags.iter().take(third).copied().max().unwrap_or(0);
    let last = lags.iter().rev().take(third).copied().max().unwrap_or(0);
    rows.push(Row {
        case: "replay lag (entries) under 4 KiB QD16 load, 60 s",
        ours: format!("{lags:?}"),
        ceph: "-",
        target: "does not grow",
        met: last <= first.max(1000) * 2,
    });

    eprintln!("+ orderly demote and promote");
    until(Instant::now(), long, "the copy to catch up", || {
        Ok(committed(&a.rbdx, "rbd/j", &owner)? >= committed(&a.rbdx, "rbd/j", "")?)
    })?;
    let t0 = Instant::now();
    a.rbdx.run(&["mirror", "image", "demote", "rbd/j"])?;
    b.rbdx.run(&["mirror", "image", "promote", "rbd/j"])?;
    let secs = t0.elapsed().as_secs_f64();
    rows.push(Row {
        case: "orderly demote at A + promote at B",
        ours: format!("{secs:.2} s"),
        ceph: "3-6 s",
        target: "<= 1 s",
        met: secs <= 1.0,
    });

    eprintln!("+ delta resync after a forced failover");
    delta_resync(&mut a, &b, raw_path, &dir, &mut rows)?;

    let peak = high_water(daemon.id());
    stop(&mut daemon);
    rows.push(Row {
        case: "mirror daemon peak memory",
        ours: format!("{:.0} MiB", peak as f64 / 1048576.0),
        ceph: "-",
        target: "<= 256 MiB",
        met: peak <= 256 << 20,
    });

    println!();
    println!("## mirroring (cargo xtask bench mirror)");
    println!();
    println!("| case | rbdx | Ceph 16.2.15 rbd-mirror (quoted) | target |");
    println!("|---|---:|---:|---|");
    for r in &rows {
        let verdict = if r.met { "met" } else { "NOT met" };
        println!(
            "| {} | {} | {} | {}: {verdict} |",
            r.case, r.ours, r.ceph, r.target
        );
    }
    println!();
    println!(
        "both sites on this machine, each an embedded store behind its gateway on 127.0.0.1 \
         (TLS); the image holds {} MiB of scattered 4-64 KiB writes; one run each",
        allocated >> 20
    );
    Ok(())
}
