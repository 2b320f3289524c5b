//! nginx on 127.0.0.1 serving a directory, with range requests (as the http stream needs).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nginx; stopped when dropped.
pub struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Serves `root` (its state goes in `dir`), or returns `None` after saying why the test is
    /// skipped when nginx is not installed (under `CI=true` it fails instead).
    pub fn serve(dir: &Path, root: &Path) -> Option<Nginx> {
        let Some(binary) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "nginx is required under CI=true (apt-get install nginx-light)"
            );
            eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
            return None;
        };
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p;\n\
                 fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
                 server {{ listen 127.0.0.1:{port}; root {r}; }} }}\n",
                d = dir.display(),
                r = root.display()
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
        let nginx = Nginx { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(nginx);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    /// Returns the URL of `name` under the served directory.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Returns a port of 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
