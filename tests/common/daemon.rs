//! A long-running `rbdx` command started by a test (a server): its JSON start line, and
//! SIGTERM when it is dropped.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A started `rbdx` server; stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// The JSON line it printed on start.
    pub started: serde_json::Value,
    _stdout: BufReader<ChildStdout>,
}

impl Daemon {
    /// Starts `cmd` (which prints one JSON line when it is ready) and waits for that line.
    pub fn start(cmd: Command, what: &str) -> Daemon {
        Daemon::start_with_stderr(cmd, what, Stdio::piped())
    }

    /// Starts `cmd` with its standard error appended to file `log` (for a server that logs
    /// more than a pipe holds).
    pub fn start_logging(cmd: Command, what: &str, log: &std::path::Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Daemon::start_with_stderr(cmd, what, Stdio::from(file))
    }

    fn start_with_stderr(mut cmd: Command, what: &str, stderr: Stdio) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Daemon {
            child: Some(child),
            started: serde_json::from_str(&line).unwrap(),
            _stdout: stdout,
        }
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and returns its exit status and standard error.
    pub fn stop(mut self) -> (i32, String) {
        let child = self.child.take().unwrap();
        terminate(&child);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}
