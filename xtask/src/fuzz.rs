//! `cargo xtask fuzz --smoke [SECONDS]`: builds the fuzz targets with coverage
//! instrumentation (stable toolchain: `sancov-module`, no sanitizer) and runs each for a few
//! seconds from a small seed corpus, so CI catches crashes and hangs the targets find quickly.
//! A longer campaign is the same binaries run for longer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{root, run_step, show};

/// The targets and their seed corpora.
const TARGETS: &[&str] = &[
    "intent",
    "journal_entry",
    "nbd_message",
    "notify_frame",
    "peer_frame",
    "qcow",
    "source_spec",
];

/// A fixed seed makes a smoke run the same walk everywhere, so a run of N seconds here covers
/// what a shorter CI run tries. Longer campaigns run the binaries directly, with other seeds.
const SMOKE_SEED: u32 = 1;

const SANCOV: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
    -Coverflow-checks";

fn seed_qcow(dir: &Path) -> anyhow::Result<()> {
    let tmp = dir.join("tmp.qcow2");
    let variants: &[&[&str]] = &[
        &["-o", "compat=1.1"],
        &["-o", "compat=0.10"],
        &["-o", "extended_l2=on,cluster_size=64k"],
        &["-o", "cluster_size=4k"],
    ];
    for (i, opts) in variants.iter().enumerate() {
        let _ = std::fs::remove_file(&tmp);
        let mut create = Command::new("qemu-img");
        create
            .args(["create", "-q", "-f", "qcow2"])
            .args(*opts)
            .arg(&tmp)
            .arg("1M");
        if !create.status().is_ok_and(|s| s.success()) {
            eprintln!("xtask fuzz: qemu-img not available, qcow starts from an empty corpus");
            return Ok(());
        }
        let _ = Command::new("qemu-io")
            .args([
                "-f",
                "qcow2",
                "-c",
                "write -P 0x5a 0 8k",
                "-c",
                "write -z 64k 4k",
            ])
            .arg(&tmp)
            .output();
        std::fs::copy(&tmp, dir.join(format!("seed-{i}.qcow2")))?;
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Seeds the journal target with one framed write event.
fn seed_journal(dir: &Path) -> anyhow::Result<()> {
    let mut event = 1u32.to_le_bytes().to_vec();
    event.extend_from_slice(&4096u64.to_le_bytes());
    event.extend_from_slice(&4u32.to_le_bytes());
    event.extend_from_slice(b"data");
    event.extend_from_slice(&[0u8; 12]);
    let mut frame = b"RBDXJRN1".to_vec();
    frame.extend_from_slice(&0u64.to_le_bytes());
    frame.extend_from_slice(&7u64.to_le_bytes());
    frame.extend_from_slice(&(event.len() as u32).to_le_bytes());
    frame.extend_from_slice(&event);
    frame.extend_from_slice(&[0u8; 4]);
    std::fs::write(dir.join("seed-write"), frame)?;
    Ok(())
}

/// Seeds the NBD target with a GO option and a read request.
fn seed_nbd(dir: &Path) -> anyhow::Result<()> {
    let mut go = 7u32.to_be_bytes().to_vec();
    go.extend_from_slice(&7u32.to_be_bytes());
    go.extend_from_slice(b"rbd/vm1");
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&3u16.to_be_bytes());
    std::fs::write(dir.join("seed-go"), go)?;
    let mut read = 0u32.to_be_bytes().to_vec();
    read.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    read.extend_from_slice(&[0, 0, 0, 0]);
    read.extend_from_slice(&42u64.to_be_bytes());
    read.extend_from_slice(&4096u64.to_be_bytes());
    read.extend_from_slice(&512u32.to_be_bytes());
    std::fs::write(dir.join("seed-read"), read)?;
    Ok(())
}

/// Seeds the peer target with each of its inputs: frames and bare messages.
fn seed_peer(dir: &Path) -> anyhow::Result<()> {
    for (i, seed) in rbdx_peer_seeds().into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    Ok(())
}

/// A request frame (selector 0), a bare request (1) and a bare error answer (2), built by
/// hand so that xtask needs no dependency on the protocol crate.
fn rbdx_peer_seeds() -> Vec<Vec<u8>> {
    let mut request = vec![16u8];
    request.extend_from_slice(&1u64.to_le_bytes());
    request.extend_from_slice(&0u32.to_le_bytes());
    request.extend_from_slice(&3u32.to_le_bytes());
    request.extend_from_slice(b"obj");
    request.extend_from_slice(&1u32.to_le_bytes());
    request.push(6);
    request.extend_from_slice(&0u64.to_le_bytes());
    request.extend_from_slice(&2u32.to_le_bytes());
    request.extend_from_slice(b"hi");
    request.extend_from_slice(&0u64.to_le_bytes());
    request.extend_from_slice(&0u32.to_le_bytes());
    let mut frame = b"RBXP".to_vec();
    frame.extend_from_slice(&[1, 5, 0, 0]);
    frame.extend_from_slice(&9u64.to_le_bytes());
    frame.extend_from_slice(&(request.len() as u32).to_le_bytes());
    let crc = crc32c_of(&frame, &request);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(&request);
    let mut error = vec![1u8, 5, 11];
    error.extend_from_slice(&1u32.to_le_bytes());
    error.push(b'k');
    error.push(0);
    vec![
        [vec![0], frame].concat(),
        [vec![1], request].concat(),
        [vec![2], error].concat(),
    ]
}

/// CRC-32C (Castagnoli) of `a` then `b`, bit by bit: only for seeds.
fn crc32c_of(a: &[u8], b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in a.iter().chain(b) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn seed_specs(dir: &Path) -> anyhow::Result<()> {
    let seeds = [
        r#"{"type":"raw","stream":{"type":"file","file_path":"/x"}}"#,
        r#"{"type":"native","pool_id":"3","image_name":"a","snap_id":7}"#,
        r#"{"type":"qcow","stream":{"type":"http","url":"http://u:p@h/x"},"rbdx_allow_backing":["/a"]}"#,
        r#"{"type":"raw","stream":{"type":"s3","url":"http://h/b/k","access_key":"config://k","secret_key":"s"},"snapshots":[{"type":"raw","name":"a","stream":{}}]}"#,
    ];
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}.json")), s)?;
    }
    Ok(())
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")
}

/// Builds and runs every target for `seconds`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.first().map(String::as_str) == Some("--smoke"),
        "usage: cargo xtask fuzz --smoke [SECONDS]"
    );
    let seconds: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let root = root();
    let target_dir = root.join("fuzz/target-smoke");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // An explicit --target keeps the instrumentation flags away from build scripts.
    let triple = host_triple()?;
    build
        .args([
            "build",
            "--release",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--bins",
        ])
        .args(["--target", &triple, "--target-dir"])
        .arg(&target_dir)
        .current_dir(&root)
        .env("RUSTFLAGS", SANCOV);
    run_step(&mut build)?;
    let corpus_root = crate::target_dir()?.join("fuzz-corpus");
    for target in TARGETS {
        let corpus: PathBuf = corpus_root.join(target);
        let _ = std::fs::remove_dir_all(&corpus);
        std::fs::create_dir_all(&corpus)?;
        match *target {
            "qcow" => seed_qcow(&corpus)?,
            "source_spec" => seed_specs(&corpus)?,
            "nbd_message" => seed_nbd(&corpus)?,
            "journal_entry" => seed_journal(&corpus)?,
            "peer_frame" => seed_peer(&corpus)?,
            _ => {}
        }
        let binary = target_dir.join(&triple).join("release").join(target);
        let mut cmd = Command::new(&binary);
        cmd.arg(&corpus)
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-seed={SMOKE_SEED}"))
            .arg("-rss_limit_mb=2048")
            .arg("-timeout=10")
            .arg("-print_final_stats=1");
        let out = cmd
            .output()
            .with_context(|| format!("running {}", show(&cmd)))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let runs = stderr
            .lines()
            .find(|l| l.starts_with("stat::number_of_executed_units"))
            .unwrap_or("stat::number_of_executed_units: ?");
        let panic = stderr
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        anyhow::ensure!(
            out.status.success(),
            "fuzz target {target} failed:\n{panic}\n...\n{}",
            stderr
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        eprintln!(
            "xtask fuzz: {target}: ok ({})",
            runs.trim_start_matches("stat::")
        );
    }
    Ok(())
}
