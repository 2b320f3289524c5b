//! The http stream against real servers on 127.0.0.1: nginx (started here, plain and TLS with a
//! self-signed certificate, and one with range requests switched off), and a small server that
//! drops its first connection in the middle of a body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use rbdx_source::testkit::{Subject, after_change, conformance};
use rbdx_source::{ErrorKind, Stream};
use rbdx_stream_http::HttpStream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// nginx serving `root` on three ports: plain, TLS, and plain without range support.
struct Nginx {
    child: Child,
    http: u16,
    https: u16,
    no_ranges: u16,
    ca: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(dir: &Path, root: &Path) -> Option<Nginx> {
    let Some(binary) = nginx_binary() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is required under CI=true (apt-get install nginx-light)"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
        return None;
    };
    // A throwaway CA and a server certificate for 127.0.0.1 signed by it.
    let ca = dir.join("ca.pem");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rbdx test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "leaf.ext",
    ]);
    let (http, https, no_ranges) = (free_port(), free_port(), free_port());
    let conf = dir.join("nginx.conf");
    let root = root.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{http}; root {root}; }}\n\
               server {{ listen 127.0.0.1:{https} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; root {root}; }}\n\
               server {{ listen 127.0.0.1:{no_ranges}; max_ranges 0; root {root}; }}\n}}\n",
            d = dir.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // From here on the guard owns the process and stops it, whatever happens.
    let nginx = Nginx {
        child,
        http,
        https,
        no_ranges,
        ca,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", no_ranges)).is_ok() {
            return Some(nginx);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_tls_errors_and_changes_against_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let data = content(3 << 20);
    std::fs::write(root.join("disk.raw"), &data).unwrap();
    let Some(nginx) = start_nginx(dir.path(), &root) else {
        return;
    };

    let url = format!("http://127.0.0.1:{}/disk.raw", nginx.http);
    let s = HttpStream::open(&url, None).await.unwrap();
    assert_eq!(s.size().await.unwrap(), 3 << 20);
    let reads = (0..24u64).map(|i| s.read(i * 131_072 + 7, 100_000));
    for (i, r) in futures::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        let at = i * 131_072 + 7;
        assert_eq!(r.unwrap().as_ref(), &data[at..at + 100_000]);
    }
    assert_eq!(
        s.read((3 << 20) - 1, 2).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
    // The conformance kit every driver runs.
    let shared: Arc<dyn Stream> = Arc::new(s);
    conformance(&Subject::Stream(shared), &data).await;

    let tls = format!("https://127.0.0.1:{}/disk.raw", nginx.https);
    let e = HttpStream::open(&tls, None).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let s = HttpStream::open(&tls, Some(nginx.ca.display().to_string()))
        .await
        .unwrap();
    assert_eq!(s.read(1000, 10).await.unwrap().as_ref(), &data[1000..1010]);

    let missing = format!("http://127.0.0.1:{}/nope.raw", nginx.http);
    assert_eq!(
        HttpStream::open(&missing, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let no_ranges = format!("http://127.0.0.1:{}/disk.raw", nginx.no_ranges);
    let e = HttpStream::open(&no_ranges, None).await.unwrap_err();
    assert!(
        e.to_string().contains("does not support range requests"),
        "{e}"
    );

    // The file is replaced after the stream pinned its version: reads stop.
    let s: Arc<dyn Stream> = Arc::new(HttpStream::open(&url, None).await.unwrap());
    let new: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
    after_change(
        &Subject::Stream(s.clone()),
        || {
            // nginx's ETag holds the modification time in seconds.
            std::thread::sleep(Duration::from_millis(1100));
            std::fs::write(root.join("disk.raw"), &new).unwrap();
        },
        &data,
        &new,
    )
    .await;
    let e = s.read(0, 4096).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    assert!(
        e.to_string().contains("changed while it was being read"),
        "{e}"
    );
}

/// Serves `data` with ranges; the first ranged GET gets half its body, then the connection
/// is dropped.
async fn flaky_server(data: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut dropped = false;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let range = req.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(str::to_owned)
            });
            let (start, end) = match &range {
                Some(r) => {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())
                }
                None => (0, data.len() - 1),
            };
            let body = &data[start..=end];
            let head = format!(
                "HTTP/1.1 {}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                if range.is_some() {
                    "206 Partial Content"
                } else {
                    "200 OK"
                },
                body.len(),
                data.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            if req.starts_with("HEAD") {
                continue;
            }
            if range.is_some() && body.len() > 1 && !dropped {
                dropped = true;
                let _ = sock.write_all(&body[..body.len() / 2]).await;
                continue;
            }
            let _ = sock.write_all(body).await;
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_body_is_retried() {
    let data = content(1 << 20);
    let port = flaky_server(data.clone()).await;
    let s = HttpStream::open(&format!("http://127.0.0.1:{port}/x"), None)
        .await
        .unwrap();
    assert_eq!(
        s.read(4096, 500_000).await.unwrap().as_ref(),
        &data[4096..504_096]
    );
}
