//! `cargo xtask bench peer`: the same `rbdx bench` runs on the embedded store directly and
//! through `rbdx gateway serve` on 127.0.0.1 (TLS, a `remote` client config), in one run:
//! 4 MiB sequential writes and reads (16 in flight) and 4 KiB random writes (16 in flight);
//! with the peak memory of the gateway and of the client.

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context;

use crate::migration_bench::settle;
use crate::rbdx::{Rbdx, high_water, median, run_with_peak};

const RUNS: usize = 3;

/// The figures of one side: throughputs in bytes per second, IOPS, peak client memory.
#[derive(Default)]
struct Side {
    write_4m: f64,
    read_4m: f64,
    write_4k: f64,
    peak: u64,
}

/// Runs the three benchmarks `RUNS` times with `prefix` (the options selecting the store).
fn side(rbdx: &Rbdx, prefix: &[&str], tag: &str) -> anyhow::Result<Side> {
    let (mut w4m, mut r4m, mut w4k, mut peak) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    let bench = |image: &str, args: &[&str]| -> anyhow::Result<(serde_json::Value, u64)> {
        let mut all: Vec<&str> = prefix.to_vec();
        all.extend_from_slice(&["bench", "--format", "json"]);
        all.extend_from_slice(args);
        all.push(image);
        let (out, _, rss) = run_with_peak(&mut rbdx.cmd(&all), true)?;
        Ok((serde_json::from_str(&out)?, rss))
    };
    for run in 0..RUNS {
        let image = format!("{tag}{run}");
        let mut create: Vec<&str> = prefix.to_vec();
        create.extend_from_slice(&["create", "--size", "4G", &image]);
        rbdx.run(&create)?;
        settle();
        let seq = |io: &'static str| {
            [
                "--io-type",
                io,
                "--io-size",
                "4M",
                "--io-threads",
                "16",
                "--io-pattern",
                "seq",
                "--io-total",
                "2G",
            ]
        };
        let (w, rss) = bench(&image, &seq("write"))?;
        w4m.push(w["bytes_per_sec"].as_f64().unwrap_or(0.0));
        peak = peak.max(rss);
        settle();
        let (r, rss) = bench(&image, &seq("read"))?;
        r4m.push(r["bytes_per_sec"].as_f64().unwrap_or(0.0));
        peak = peak.max(rss);
        let (s, rss) = bench(
            &image,
            &[
                "--io-type",
                "write",
                "--io-size",
                "4K",
                "--io-threads",
                "16",
                "--io-pattern",
                "rand",
                "--io-total",
                "64M",
            ],
        )?;
        w4k.push(s["ops_per_sec"].as_f64().unwrap_or(0.0));
        peak = peak.max(rss);
        let mut rm: Vec<&str> = prefix.to_vec();
        rm.extend_from_slice(&["rm", "--no-progress", &image]);
        rbdx.run(&rm)?;
    }
    Ok(Side {
        write_4m: median(w4m),
        read_4m: median(r4m),
        write_4k: median(w4k),
        peak,
    })
}

fn start_gateway(rbdx: &Rbdx, dir: &Path) -> anyhow::Result<(std::process::Child, String)> {
    let mut child = rbdx
        .cmd(&[
            "gateway",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting rbdx gateway serve")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("no stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    anyhow::ensure!(!line.trim().is_empty(), "rbdx gateway serve did not start");
    let conf = rbdx.run(&["gateway", "key", "create", "bench", "--profile", "rw"])?;
    let path = dir.join("remote.conf");
    std::fs::write(&path, conf)?;
    Ok((child, path.to_string_lossy().into_owned()))
}

/// Runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let (rbdx, dir) = Rbdx::fresh("bench-peer")?;
    rbdx.run(&["pool", "ls"])?;
    let (mut gateway, conf) = start_gateway(&rbdx, &dir)?;
    eprintln!("+ rbdx bench on the embedded store");
    let local = side(&rbdx, &[], "local")?;
    eprintln!("+ the same through the gateway on 127.0.0.1 (TLS)");
    let remote = side(&rbdx, &["-c", &conf], "remote");
    let gateway_peak = high_water(gateway.id());
    // SAFETY: kill only sends SIGTERM to the gateway this run started.
    unsafe {
        libc::kill(gateway.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = gateway.wait();
    let remote = remote?;

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("## peer gateway (cargo xtask bench peer)");
    println!();
    println!("| case | local (dir) | through the gateway | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    let rows = [
        (
            "4 MiB sequential writes, 16 in flight",
            local.write_4m / 1e6,
            remote.write_4m / 1e6,
            "MB/s",
            0.7,
        ),
        (
            "4 MiB sequential reads, 16 in flight",
            local.read_4m / 1e6,
            remote.read_4m / 1e6,
            "MB/s",
            0.7,
        ),
        (
            "4 KiB random writes, 16 in flight",
            local.write_4k,
            remote.write_4k,
            "IOPS",
            0.5,
        ),
    ];
    for (case, ours, theirs, unit, target) in rows {
        let ratio = theirs / ours;
        println!(
            "| {case} | {ours:.0} {unit} | {theirs:.0} {unit} | {ratio:.2}x | >= {target}x: {} |",
            verdict(ratio >= target)
        );
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "| peak memory: gateway / client (rbdx bench) | - | {:.0} MiB / {:.0} MiB | - | < 256 MiB: {} |",
        mib(gateway_peak),
        mib(remote.peak),
        verdict(gateway_peak < 256 << 20 && remote.peak < 256 << 20)
    );
    println!();
    println!(
        "medians of {RUNS} runs of `rbdx bench` (2 GiB sequential, 64 MiB of 4 KiB writes) on a \
         4 GiB image; local: the client opens the store itself (peak {:.0} MiB)",
        mib(local.peak)
    );
    Ok(())
}
