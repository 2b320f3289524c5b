//! `rbdx bench`: I/O against an image with `rbd bench`'s options and report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_image::{Cluster, Image, OpenOptions};
use serde::Serialize;

use crate::args::{BenchArgs, IoPattern, IoType};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::size::{format_size, parse_size};
use crate::spec::SnapRule;

#[derive(Serialize)]
struct BenchOut {
    io_type: &'static str,
    io_size: u64,
    io_threads: usize,
    io_total: u64,
    io_pattern: &'static str,
    elapsed_sec: f64,
    ops: u64,
    ops_per_sec: f64,
    bytes_per_sec: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_max_us: u64,
}

/// Returns the `q` quantile (0..=1) of sorted `values`.
fn quantile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    u64::from(sorted[at.min(sorted.len() - 1)])
}

/// A small xorshift generator: bench offsets need speed, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish() | 1
}

/// What every worker of one run does.
#[derive(Clone, Copy)]
struct Plan {
    io_size: u64,
    slots: u64,
    total_ops: u64,
    pattern: IoPattern,
    io_type: IoType,
    rw_mix_read: u8,
}

impl Plan {
    /// Takes operations from `next` until `total_ops` are taken; returns their latencies in
    /// microseconds.
    async fn work(
        self,
        id: u64,
        next: &AtomicU64,
        done: &AtomicU64,
        data: &Bytes,
        image: &Image,
    ) -> Result<Vec<u32>, CliError> {
        let mut rng = Rng(seed() ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut latencies: Vec<u32> = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= self.total_ops {
                return Ok(latencies);
            }
            let began = Instant::now();
            let slot = match self.pattern {
                IoPattern::Seq => i % self.slots,
                IoPattern::Rand => rng.next() % self.slots,
            };
            let offset = slot * self.io_size;
            let read = match self.io_type {
                IoType::Read => true,
                IoType::Write => false,
                IoType::Readwrite | IoType::Rw => rng.next() % 100 < u64::from(self.rw_mix_read),
            };
            if read {
                image.read(offset, self.io_size).await?;
            } else {
                image.write(offset, data.clone()).await?;
            }
            let micros = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            latencies.push(micros);
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `bench`.
pub async fn run(cluster: &Cluster, args: BenchArgs, printer: Printer) -> CliResult {
    let io_size = parse_size(&args.io_size, 1)?;
    let io_total = parse_size(&args.io_total, 1)?;
    if io_size == 0 || args.io_threads == 0 {
        return Err(CliError::invalid(
            "--io-size and --io-threads must be positive",
        ));
    }
    let (spec, images) = resolve(cluster, &args.image, SnapRule::None).await?;
    let read_only = args.io_type == IoType::Read;
    let image = images
        .open(
            &spec.image,
            OpenOptions::default().with_read_only(read_only),
        )
        .await?;
    let size = image.size();
    if io_size > size {
        image.close().await?;
        return Err(CliError::invalid(format!(
            "--io-size {io_size} is larger than the image ({size} bytes)"
        )));
    }
    let slots = size / io_size;
    let total_ops = io_total / io_size;
    let io_type = match args.io_type {
        IoType::Read => "read",
        IoType::Write => "write",
        IoType::Readwrite | IoType::Rw => "readwrite",
    };
    let pattern = match args.io_pattern {
        IoPattern::Seq => "sequential",
        IoPattern::Rand => "random",
    };
    if printer.is_plain() {
        println!(
            "bench  type {io_type} io_size {io_size} io_threads {} bytes {io_total} pattern {pattern}",
            args.io_threads
        );
    }
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let data = Bytes::from(vec![0xa5u8; io_size as usize]);
    let start = Instant::now();
    let ticker = printer.is_plain().then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            println!("  SEC       OPS   OPS/SEC   BYTES/SEC");
            let mut last = 0u64;
            for sec in 1u64.. {
                tokio::time::sleep_until((start + Duration::from_secs(sec)).into()).await;
                let now = done.load(Ordering::Relaxed);
                let ops = now - last;
                last = now;
                println!(
                    "{sec:>5} {now:>9} {ops:>9.2} {:>11}/s",
                    format_size(ops * io_size)
                );
            }
        })
    });
    let plan = Plan {
        io_size,
        slots,
        total_ops,
        pattern: args.io_pattern,
        io_type: args.io_type,
        rw_mix_read: args.rw_mix_read,
    };
    // Each worker is a task of its own, so the runtime spreads them over its threads: an
    // operation served from memory completes without waiting, and workers polled together in
    // one task would take turns on one thread, the first to start keeping it.
    let worker = |id: u64| {
        let (next, done, data, image) = (next.clone(), done.clone(), data.clone(), image.clone());
        async move { plan.work(id, &next, &done, &data, &image).await }
    };
    let mut latencies: Vec<u32> = Vec::new();
    let mut result: CliResult = Ok(());
    if args.io_threads == 1 {
        // One worker runs on this task: a spawned one would only add a hand-off.
        match worker(0).await {
            Ok(mine) => latencies = mine,
            Err(e) => result = Err(e),
        }
    } else {
        let workers: Vec<_> = (0..args.io_threads as u64)
            .map(|id| tokio::spawn(worker(id)))
            .collect();
        for worker in workers {
            match worker.await {
                Ok(Ok(mine)) => latencies.extend(mine),
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(e) => {
                    result = result.and(Err(CliError::with_code(
                        format!("bench worker failed: {e}"),
                        1,
                    )));
                }
            }
        }
    }
    let result = match result {
        Ok(()) if !read_only => image.flush().await.map_err(CliError::from),
        other => other,
    };
    latencies.sort_unstable();
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    let closed = image.close().await;
    result?;
    closed?;
    let ops = done.load(Ordering::Relaxed);
    let out = BenchOut {
        io_type,
        io_size,
        io_threads: args.io_threads,
        io_total,
        io_pattern: pattern,
        elapsed_sec: elapsed,
        ops,
        ops_per_sec: ops as f64 / elapsed.max(1e-9),
        bytes_per_sec: (ops * io_size) as f64 / elapsed.max(1e-9),
        latency_p50_us: quantile(&latencies, 0.5),
        latency_p99_us: quantile(&latencies, 0.99),
        latency_max_us: latencies.last().map_or(0, |&l| u64::from(l)),
    };
    printer.print("bench", &out, |o| {
        println!(
            "elapsed: {:.0}   ops: {}   ops/sec: {:.2}   bytes/sec: {}/s",
            o.elapsed_sec,
            o.ops,
            o.ops_per_sec,
            format_size(o.bytes_per_sec as u64)
        );
        println!(
            "latency: p50 {} us   p99 {} us   max {} us",
            o.latency_p50_us, o.latency_p99_us, o.latency_max_us
        );
    });
    Ok(())
}
