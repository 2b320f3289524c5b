//! Live migration of a disk between two sites on 127.0.0.1 (real processes: each site its
//! own store, site A's behind its gateway): the destination is served with `rbdx nbd serve`
//! at site B and written by `qemu-io` while `execute` copies through the gateway; a SIGKILLed
//! execute and a dropped gateway connection resume exactly; commit removes the source at A;
//! abort gives A back its image with every write made at B.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{Gateway, key};
use common::nbd::{Server, client, compare_raw, half_sparse_file, have};
use common::{Lcg, Rbdx, Run};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 48 * MIB;

/// Site A (the source, behind its gateway) and site B, whose tools reach A as `site-a`.
struct Sites {
    a: Rbdx,
    gateway: Option<Gateway>,
    address: String,
    b: Rbdx,
    home: tempfile::TempDir,
}

impl Sites {
    fn new() -> Sites {
        let a = Rbdx::new();
        let gateway = Gateway::start(&a, None, &[]);
        let address = gateway.address();
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("rbdx");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = key(&a, "site-b", &["--profile", "rw"], &dir);
        std::fs::rename(&conf, dir.join("site-a.conf")).unwrap();
        Sites {
            a,
            gateway: Some(gateway),
            address,
            b: Rbdx::new(),
            home,
        }
    }

    /// `rbdx` at site B.
    fn b_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Rbdx::binary());
        cmd.args(args)
            .env("RBDX_DATA_DIR", self.b.path())
            .env("XDG_CONFIG_HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    fn at_b(&self, args: &[&str]) -> Run {
        let out = self.b_command(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Restarts A's gateway on the same address: every connection to it drops.
    fn drop_connections(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.kill9();
        }
        self.gateway = Some(Gateway::start(&self.a, Some(&self.address), &[]));
    }

    fn serve(&self) -> Server {
        Server::start_env(
            &self.b,
            &["rbd/vm"],
            &[("XDG_CONFIG_HOME", self.home.path())],
        )
    }
}

/// Makes `rbd/vm` at `site`: a half-sparse disk with snapshot `base`, then more writes.
/// Returns (the head, the snapshot).
fn source_image(site: &Rbdx, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let raw = dir.join("src.raw");
    let base = half_sparse_file(&raw, SIZE, 640 << 10, 7);
    site.run(&["import", "--no-progress", raw.to_str().unwrap(), "rbd/vm"])
        .ok();
    site.run(&["snap", "create", "--no-progress", "rbd/vm@base"])
        .ok();
    site.run(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "16K",
        "--io-total",
        "2M",
        "--io-pattern",
        "rand",
        "rbd/vm",
    ])
    .ok();
    (export(site, "rbd/vm", dir), base)
}

/// The 4 KiB blocks where `got` differs from `want`, as ranges, for a failure message.
fn differences(got: &[u8], want: &[u8]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (i, (a, b)) in got.chunks(4096).zip(want.chunks(4096)).enumerate() {
        if a != b {
            match ranges.last_mut() {
                Some(last) if last.1 == i * 4096 => last.1 += 4096,
                _ => ranges.push((i * 4096, (i + 1) * 4096)),
            }
        }
    }
    let shown: Vec<String> = ranges
        .iter()
        .map(|(lo, hi)| format!("{lo}..{hi}"))
        .collect();
    format!("{} ranges differ: {}", ranges.len(), shown.join(", "))
}

fn export(site: &Rbdx, spec: &str, dir: &Path) -> Vec<u8> {
    let path = dir.join(format!("export-{}", spec.replace(['/', '@'], "_")));
    let _ = std::fs::remove_file(&path);
    site.run(&["export", "--no-progress", spec, path.to_str().unwrap()])
        .ok();
    std::fs::read(path).unwrap()
}

/// Writes ten random ranges through NBD with `qemu-io`, and into `model`.
fn qemu_writes(uri: &str, model: &mut [u8], rng: &mut Lcg, round: u64) {
    let mut commands = Vec::new();
    for i in 0..10u64 {
        let len = (rng.next(16) + 1) * 4096;
        let offset = rng.next((SIZE - len) / 512) * 512;
        let byte = 0x80 | ((round * 10 + i) % 127) as u8;
        commands.push(format!("write -P {byte} {offset} {len}"));
        model[offset as usize..(offset + len) as usize].fill(byte);
    }
    let mut args = vec!["-f", "raw"];
    for c in &commands {
        args.extend(["-c", c.as_str()]);
    }
    args.push(uri);
    client("qemu-io", &args);
}

fn execute(sites: &Sites, limit: Option<&str>) -> Child {
    let mut args = vec!["migration", "execute", "--no-progress", "rbd/vm"];
    if let Some(l) = limit {
        args.extend(["--bandwidth-limit", l]);
    }
    sites
        .b_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn state(sites: &Sites) -> String {
    let out = sites.at_b(&["status", "rbd/vm"]);
    out.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("state: "))
        .unwrap_or_default()
        .to_owned()
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn a_running_disk_moves_to_another_site_while_qemu_writes_through_nbd() {
    if !have("qemu-io", "qemu-utils") || !have("qemu-img", "qemu-utils") {
        return;
    }
    let mut sites = Sites::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut model, base) = source_image(&sites.a, dir.path());

    sites
        .at_b(&[
            "migration",
            "prepare",
            "--source-cluster",
            "site-a",
            "rbd/vm",
            "rbd/vm",
        ])
        .ok();
    // The source is read-only (out of sight) at A from now on.
    sites.a.run(&["info", "rbd/vm"]).fails(2, "");
    let server = sites.serve();
    let uri = server.uri("rbd/vm");
    let mut rng = Lcg(7);
    qemu_writes(&uri, &mut model, &mut rng, 0);

    // An execute killed with SIGKILL mid-copy...
    let mut first = execute(&sites, Some("4M"));
    std::thread::sleep(Duration::from_millis(2500));
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(state(&sites).starts_with("executing"), "{}", state(&sites));
    qemu_writes(&uri, &mut model, &mut rng, 1);

    // ... then one whose connection to A drops mid-copy: it rides it out, or a re-run goes
    // on from the checkpoint.
    let second = execute(&sites, Some("4M"));
    std::thread::sleep(Duration::from_millis(1500));
    sites.drop_connections();
    qemu_writes(&uri, &mut model, &mut rng, 2);
    let out = second.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!(
            "execute ended with the dropped connection: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started = Instant::now();
        loop {
            let run = sites.at_b(&["migration", "execute", "--no-progress", "rbd/vm"]);
            if run.code == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}",
                run.stderr
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(state(&sites).starts_with("executed"), "{}", state(&sites));
    qemu_writes(&uri, &mut model, &mut rng, 3);
    sites
        .at_b(&["migration", "commit", "--no-progress", "rbd/vm"])
        .ok();

    // The source is gone at A; B holds the source overlaid with every write.
    let listed = sites.a.run(&["ls", "--format", "json"]).ok().json();
    assert_eq!(listed, serde_json::json!([]));
    let trash = sites
        .a
        .run(&["trash", "ls", "--format", "json"])
        .ok()
        .json();
    assert_eq!(trash, serde_json::json!([]));
    let expected = write_file(dir.path(), "expected.raw", &model);
    compare_raw(&expected, &uri);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    assert!(export(&sites.b, "rbd/vm", dir.path()) == model);
    assert!(export(&sites.b, "rbd/vm@base", dir.path()) == base);
}

#[test]
fn aborting_a_migration_between_sites_gives_the_source_back_with_the_destinations_writes() {
    if !have("qemu-io", "qemu-utils") {
        return;
    }
    // Prepared at A with --dest-cluster: B's gateway and a key for A.
    let a = Rbdx::new();
    let b = Rbdx::new();
    let gateway_b = Gateway::start(&b, None, &[]);
    let home = tempfile::tempdir().unwrap();
    let conf_dir = home.path().join("rbdx");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = key(&b, "site-a", &["--profile", "rw"], &conf_dir);
    std::fs::rename(&conf, conf_dir.join("site-b.conf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut model, base) = source_image(&a, dir.path());
    let out = Command::new(Rbdx::binary())
        .args([
            "migration",
            "prepare",
            "--dest-cluster",
            "site-b",
            "rbd/vm",
            "rbd/vm",
        ])
        .env("RBDX_DATA_DIR", a.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.run(&["info", "rbd/vm"]).fails(2, "");

    // At B: served, written, partly copied.
    let server = Server::start(&b, &["rbd/vm"]);
    let uri = server.uri("rbd/vm");
    let mut rng = Lcg(11);
    qemu_writes(&uri, &mut model, &mut rng, 0);
    let mut copy = Command::new(Rbdx::binary())
        .args([
            "migration",
            "execute",
            "--no-progress",
            "--bandwidth-limit",
            "4M",
            "rbd/vm",
        ])
        .env("RBDX_DATA_DIR", b.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    copy.kill().unwrap();
    copy.wait().unwrap();
    qemu_writes(&uri, &mut model, &mut rng, 1);
    let (code, log) = server.stop();
    assert_eq!(code, 0, "{log}");
    b.run(&["migration", "abort", "--no-progress", "rbd/vm"])
        .ok();
    drop(gateway_b);

    assert_eq!(
        b.run(&["ls", "--format", "json"]).ok().json(),
        serde_json::json!([])
    );
    let back = export(&a, "rbd/vm", dir.path());
    assert!(
        back == model,
        "A lacks B's writes: {}",
        differences(&back, &model)
    );
    assert!(export(&a, "rbd/vm@base", dir.path()) == base);
    // Writable again at A.
    a.run(&["bench", "--io-type", "write", "--io-total", "4K", "rbd/vm"])
        .ok();
}
