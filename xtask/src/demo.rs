//! `cargo xtask demo`: the main job of rbdx on a fresh embedded store, end to end, printing
//! every command and what it did.
//!
//! 1. `qemu-img` makes a 64 MiB qcow2 disk with an internal snapshot.
//! 2. An import-only migration brings it in as `rbd/golden`: prepare (usable at once), execute
//!    with progress, commit.
//! 3. A live migration moves `rbd/golden` to the pool `fast` while another process reads the
//!    whole image through it; `migration verify` compares source and destination, then commit.
//! 4. The result, head and snapshot, is checked against `qemu-img convert` of the original.
//! 5. `rbdx nbd serve` serves the result, and `qemu-img compare` reads it over NBD, as a VM or
//!    any NBD client would.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::rbdx::{NbdServer, Rbdx};
use crate::{build_rbdx, run_step, show, target_dir};

fn rbdx(binary: &Path, data: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(binary);
    cmd.args(args).env("RBDX_DATA_DIR", data);
    println!("$ rbdx {}", args.join(" "));
    let out = cmd
        .output()
        .with_context(|| format!("running {}", show(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Progress lines end in carriage returns on a terminal; show the last state of each.
    for line in stderr.lines() {
        if let Some(last) = line.rsplit('\r').find(|s| !s.is_empty()) {
            eprintln!("{last}");
        }
    }
    anyhow::ensure!(
        out.status.success(),
        "`rbdx {}` failed with {}",
        args.join(" "),
        out.status
    );
    Ok(stdout)
}

/// Runs a tool the demo needs, echoing it.
fn tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("$ {program} {}", args.join(" "));
    run_step(Command::new(program).args(args).stdout(Stdio::null()))
        .with_context(|| format!("{program} is needed for the demo (apt-get install qemu-utils)"))
}

/// Checks that file `got` holds the same bytes as file `want`.
fn same(got: &Path, want: &Path, what: &str) -> anyhow::Result<()> {
    let (a, b) = (std::fs::read(got)?, std::fs::read(want)?);
    anyhow::ensure!(
        a == b,
        "{what}: {} differs from {}",
        got.display(),
        want.display()
    );
    println!("ok: {what} ({} MiB) equals the original", a.len() >> 20);
    Ok(())
}

/// Builds `rbdx` and runs the demo in `demo/` under the target directory.
pub fn run() -> anyhow::Result<()> {
    let binary = build_rbdx()?;
    let work = target_dir()?.join("demo");
    let data = work.join("store");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    println!("demo store: {}", data.display());
    let at = |name: &str| work.join(name).to_string_lossy().into_owned();
    let run = |args: &[&str]| rbdx(&binary, &data, args);

    // 1. A qcow2 disk: data at both ends, a snapshot, then more writes and a zeroed range.
    let qcow = at("vm.qcow2");
    tool("qemu-img", &["create", "-q", "-f", "qcow2", &qcow, "64M"])?;
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 4M",
            "-c",
            "write -P 0x22 60M 4M",
            &qcow,
        ],
    )?;
    tool("qemu-img", &["snapshot", "-c", "installed", &qcow])?;
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x33 2M 8M",
            "-c",
            "write -z 61M 1M",
            &qcow,
        ],
    )?;
    tool(
        "qemu-img",
        &["convert", "-O", "raw", &qcow, &at("head.raw")],
    )?;
    tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            "-l",
            "snapshot.name=installed",
            &qcow,
            &at("installed.raw"),
        ],
    )?;

    // 2. Import-only migration: usable right after prepare, filled by execute.
    let spec = format!(r#"{{"type":"qcow","stream":{{"type":"file","file_path":"{qcow}"}}}}"#);
    run(&["pool", "create", "fast"])?;
    run(&[
        "migration",
        "prepare",
        "--import-only",
        "--dry-run",
        "--source-spec",
        &spec,
        "rbd/golden",
    ])?;
    run(&[
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "rbd/golden",
    ])?;
    run(&["status", "rbd/golden"])?;
    run(&["migration", "execute", "rbd/golden"])?;
    run(&["migration", "commit", "rbd/golden"])?;
    run(&["info", "rbd/golden"])?;
    run(&["snap", "ls", "rbd/golden"])?;
    run(&["du", "rbd/golden"])?;

    // 3. Live migration to another pool while a second process reads the whole image.
    run(&["migration", "prepare", "rbd/golden", "fast/golden"])?;
    run(&["status", "fast/golden"])?;
    let reading = at("read-during-migration.raw");
    println!("$ rbdx export --no-progress fast/golden {reading} &   # a reader, during execute");
    let mut reader = Command::new(&binary)
        .args(["export", "--no-progress", "fast/golden", &reading])
        .env("RBDX_DATA_DIR", &data)
        .spawn()
        .context("starting the reader")?;
    run(&["migration", "execute", "fast/golden"])?;
    let read = reader.wait()?;
    anyhow::ensure!(read.success(), "the reader failed with {read}");
    run(&["migration", "verify", "fast/golden"])?;
    run(&["migration", "commit", "fast/golden"])?;
    run(&["ls", "-l", "fast"])?;

    // 4. What the reader saw and what the image holds now, against the original disk.
    same(
        Path::new(&reading),
        Path::new(&at("head.raw")),
        "read during the migration",
    )?;
    run(&["export", "--no-progress", "fast/golden", &at("golden.raw")])?;
    run(&[
        "export",
        "--no-progress",
        "fast/golden@installed",
        &at("golden-installed.raw"),
    ])?;
    same(
        Path::new(&at("golden.raw")),
        Path::new(&at("head.raw")),
        "fast/golden",
    )?;
    same(
        Path::new(&at("golden-installed.raw")),
        Path::new(&at("installed.raw")),
        "fast/golden@installed",
    )?;

    // 5. Served over NBD to a real client.
    serve_and_compare(&binary, &data, "fast/golden", &at("head.raw"))?;
    println!(
        "demo finished: vm.qcow2 (with its snapshot 'installed') was imported into rbd/golden \
         by an import-only migration, then migrated live to fast/golden while it was read, and \
         served over NBD; the store is in {}",
        data.display()
    );
    Ok(())
}

/// Serves `image` with `rbdx nbd serve` and has `qemu-img compare` read it against `want`.
fn serve_and_compare(binary: &Path, data: &Path, image: &str, want: &str) -> anyhow::Result<()> {
    println!("$ rbdx nbd serve --bind 127.0.0.1:0 --format json {image} &");
    let rbdx = Rbdx {
        binary: binary.to_owned(),
        store: data.to_owned(),
    };
    let NbdServer {
        child: mut server,
        line,
        uri,
    } = rbdx.nbd_serve(image)?;
    print!("{line}");
    let compared = tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", want, &uri],
    );
    // SAFETY: kill only sends SIGTERM to the server this function started.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = server.wait()?;
    compared?;
    anyhow::ensure!(stopped.success(), "rbdx nbd serve stopped with {stopped}");
    println!("ok: {image} read over NBD by qemu-img equals the original");
    Ok(())
}
