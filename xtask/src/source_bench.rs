//! `cargo xtask bench source`: sequential reads of import sources through `rbdx source export`
//! (to standard output, discarded) next to the reference tool reading the same data, in one
//! run: a 1 GiB file vs `cat`, the same file over HTTP from a local nginx vs `curl`, and a
//! 4 GiB qcow2 with half its clusters allocated vs `qemu-img convert` to a null target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::{build_rbdx, run_step, show, target_dir};

/// Runs `cmd` with its output discarded; returns the median of three wall times.
fn time(mut make: impl FnMut() -> Command) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let mut cmd = make();
        cmd.stdout(Stdio::null());
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running {}", show(&cmd)))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

fn export(binary: &Path, store: &Path, spec: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args([
        "source",
        "export",
        "--no-progress",
        "--source-spec",
        spec,
        "-",
    ])
    .env("RBDX_DATA_DIR", store);
    cmd
}

struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, root: &Path) -> anyhow::Result<(Nginx, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\nhttp {{ access_log off; sendfile on;\n\
             client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
             uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             server {{ listen 127.0.0.1:{port}; root {r}; }} }}\n",
            d = dir.display(),
            r = root.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (apt-get install nginx-light)")?;
    let guard = Nginx(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((guard, port));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    anyhow::bail!("nginx did not start")
}

/// Builds the inputs, runs every case and prints the table.
pub fn run() -> anyhow::Result<()> {
    let binary = build_rbdx()?;
    let dir = target_dir()?.join("bench-source");
    let _ = std::fs::remove_dir_all(&dir);
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let store = dir.join("store");

    eprintln!("+ making a 1 GiB file and a 4 GiB qcow2 with half its clusters allocated");
    let file: PathBuf = www.join("disk.raw");
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for _ in 0..1024 {
            f.write_all(&block)?;
        }
    }
    let qcow = dir.join("half.qcow2");
    run_step(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&qcow)
            .arg("4G"),
    )?;
    let writes: Vec<String> = (0..32)
        .map(|i| format!("write -P {} {}M 64M", i + 1, i * 128))
        .collect();
    let mut io = Command::new("qemu-io");
    io.args(["-f", "qcow2"]);
    for w in &writes {
        io.args(["-c", w]);
    }
    io.arg(&qcow).stdout(Stdio::null());
    run_step(&mut io)?;

    let (_nginx, port) = nginx(&dir, &www)?;
    let url = format!("http://127.0.0.1:{port}/disk.raw");
    let file_spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        file.display()
    );
    let http_spec = format!(r#"{{"type":"raw","stream":{{"type":"http","url":"{url}"}}}}"#);
    let qcow_spec = format!(
        r#"{{"type":"qcow","stream":{{"type":"file","file_path":"{}"}}}}"#,
        qcow.display()
    );
    // Warm the page cache for everyone.
    run_step(
        Command::new("cat")
            .arg(&file)
            .arg(&qcow)
            .stdout(Stdio::null()),
    )?;

    let mut rows = Vec::new();
    eprintln!("+ file");
    let ours = time(|| export(&binary, &store, &file_spec))?;
    let theirs = time(|| {
        let mut c = Command::new("cat");
        c.arg(&file);
        c
    })?;
    rows.push((
        "file, 1 GiB: `rbdx source export` vs `cat`",
        1u64 << 30,
        ours,
        theirs,
        0.9,
    ));
    eprintln!("+ http");
    let ours = time(|| export(&binary, &store, &http_spec))?;
    let theirs = time(|| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", &url]);
        c
    })?;
    rows.push((
        "http, 1 GiB from local nginx: rbdx vs `curl`",
        1 << 30,
        ours,
        theirs,
        0.9,
    ));
    eprintln!("+ qcow2");
    let ours = time(|| export(&binary, &store, &qcow_spec))?;
    let theirs = time(|| {
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-f", "qcow2", "-n"])
            .arg(&qcow)
            .args(["--target-image-opts", "driver=null-co,size=4294967296"]);
        c
    })?;
    rows.push((
        "qcow2, 4 GiB, half allocated: rbdx vs `qemu-img convert` to null-co",
        4 << 30,
        ours,
        theirs,
        1.0,
    ));

    println!();
    println!("## source (cargo xtask bench source)");
    println!();
    println!("| case | rbdx | reference | ratio (speed) | target |");
    println!("|---|---:|---:|---:|---|");
    for (label, bytes, ours, theirs, target) in rows {
        let ratio = theirs / ours;
        let mbps = |secs: f64| bytes as f64 / secs / 1e6;
        println!(
            "| {label} | {:.2} s ({:.0} MB/s) | {:.2} s ({:.0} MB/s) | {ratio:.2}x | >= {target}x: {} |",
            ours,
            mbps(ours),
            theirs,
            mbps(theirs),
            if ratio >= target { "met" } else { "NOT met" }
        );
    }
    println!();
    println!(
        "medians of 3, page cache warm; rbdx writes every byte (zeros included) to standard \
         output, discarded; the references read the same data (cat, curl to /dev/null, qemu-img \
         convert to a null target, which skips unallocated clusters)"
    );
    Ok(())
}
