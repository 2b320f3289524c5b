//! Child processes for the multi-process cases: how a backend's test binary re-executes itself
//! to play a role against the same store, and how the parent talks to it.
//!
//! A backend's `tests/conformance.rs` defines one extra test that calls [`child_main`]; when
//! the environment variable [`ROLE_ENV`] is unset (a normal test run) it returns at once.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::batches::{BatchGenerator, crash_object};
use crate::{
    ErrorKind, IoCtx, LockKind, LockOptions, ObjectStore, PoolId, ReadOp, SnapContext, SnapId,
    WatchEvent, WriteOp,
};

/// The environment variable that tells a test binary to play a child role.
pub const ROLE_ENV: &str = "RBDX_TESTKIT_ROLE";

/// Starts child processes that open the store under test.
pub trait Spawner: Send + Sync + std::fmt::Debug {
    /// Returns the command that runs this backend's child entry; the testkit adds the role.
    fn command(&self) -> Command;
}

/// A [`Spawner`] that re-executes the current test binary, running only `test_name` (the test
/// that calls [`child_main`]), with extra environment variables (e.g. the store location).
#[derive(Debug, Clone)]
pub struct SelfExec {
    test_name: String,
    env: Vec<(String, String)>,
}

impl SelfExec {
    /// Re-executes the current binary's test `test_name` with `env` set.
    pub fn new(test_name: impl Into<String>, env: Vec<(String, String)>) -> Self {
        SelfExec {
            test_name: test_name.into(),
            env,
        }
    }
}

impl Spawner for SelfExec {
    fn command(&self) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let mut cmd = Command::new(exe);
        cmd.args([
            self.test_name.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }
}

/// What a child process does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Increments omap key `n` of `oid` `count` times with assert-version retries.
    Counter {
        /// Pool.
        pool: PoolId,
        /// Counter object.
        oid: String,
        /// Increments.
        count: u64,
    },
    /// Applies the crash case's batches for `seed` with snapshot context `snaps`, printing
    /// `acked <i>` after each, until killed.
    CrashWriter {
        /// Pool.
        pool: PoolId,
        /// Batch sequence seed.
        seed: u64,
        /// Live snapshots, any order.
        snaps: Vec<SnapId>,
    },
    /// Watches `oid` and answers every notify with `pong:<payload>`.
    Watcher {
        /// Pool.
        pool: PoolId,
        /// Watched object.
        oid: String,
    },
    /// Takes exclusive lock `name` with `cookie` on `oid`, watches it, and waits to be killed.
    LockHolder {
        /// Pool.
        pool: PoolId,
        /// Locked object.
        oid: String,
        /// Lock name.
        name: String,
        /// Cookie.
        cookie: String,
    },
}

impl Role {
    /// Encodes the role for [`ROLE_ENV`] (names contain no spaces).
    pub fn encode(&self) -> String {
        match self {
            Role::Counter { pool, oid, count } => format!("counter {pool} {oid} {count}"),
            Role::CrashWriter { pool, seed, snaps } => {
                let snaps: Vec<String> = snaps.iter().map(|s| s.0.to_string()).collect();
                format!("crash {pool} {seed} {}", snaps.join(","))
            }
            Role::Watcher { pool, oid } => format!("watcher {pool} {oid}"),
            Role::LockHolder {
                pool,
                oid,
                name,
                cookie,
            } => {
                format!("lockholder {pool} {oid} {name} {cookie}")
            }
        }
    }

    /// Decodes [`Role::encode`]'s output.
    pub fn decode(text: &str) -> Option<Role> {
        let words: Vec<&str> = text.split(' ').collect();
        let pool = PoolId(words.get(1)?.parse().ok()?);
        match *words.first()? {
            "counter" => Some(Role::Counter {
                pool,
                oid: words.get(2)?.to_string(),
                count: words.get(3)?.parse().ok()?,
            }),
            "crash" => Some(Role::CrashWriter {
                pool,
                seed: words.get(2)?.parse().ok()?,
                snaps: words
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map(SnapId))
                    .collect::<Result<_, _>>()
                    .ok()?,
            }),
            "watcher" => Some(Role::Watcher {
                pool,
                oid: words.get(2)?.to_string(),
            }),
            "lockholder" => Some(Role::LockHolder {
                pool,
                oid: words.get(2)?.to_string(),
                name: words.get(3)?.to_string(),
                cookie: words.get(4)?.to_string(),
            }),
            _ => None,
        }
    }
}

/// Plays the role named by [`ROLE_ENV`], if set, with a store opened by `open`, then exits the
/// process. Returns at once when the variable is unset.
pub fn child_main<F>(open: F)
where
    F: AsyncFnOnce() -> Arc<dyn ObjectStore>,
{
    let Ok(text) = std::env::var(ROLE_ENV) else {
        return;
    };
    let Some(role) = Role::decode(&text) else {
        eprintln!("testkit child: cannot decode role '{text}'");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let code = runtime.block_on(async move {
        let store = open().await;
        let emit = |line: String| println!("testkit:{line}");
        match play(&*store, role, &emit).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("testkit child: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

/// Increments omap key `n` of `oid` with assert-version retries; returns retries needed.
pub async fn increment(store: &dyn ObjectStore, io: &IoCtx, oid: &str) -> crate::Result<u64> {
    let mut retries = 0;
    loop {
        let mut read = store
            .read_op(io, oid, &ReadOp::new().omap_get_by_keys(["n"]), None)
            .await?;
        let map = read.take_map(0).unwrap_or_default();
        let n: u64 = map
            .get("n")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let op = WriteOp::new()
            .assert_version(read.version)
            .omap_set([("n", Bytes::from((n + 1).to_string()))]);
        match store.operate(io, oid, &op, &SnapContext::empty()).await {
            Ok(_) => return Ok(retries),
            Err(e) if e.kind() == ErrorKind::VersionMismatch => retries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Plays `role` against `store`, reporting progress lines through `emit`.
async fn play(
    store: &dyn ObjectStore,
    role: Role,
    emit: &(dyn Fn(String) + Sync),
) -> crate::Result<()> {
    match role {
        Role::Counter { pool, oid, count } => {
            let io = IoCtx::new(pool);
            for _ in 0..count {
                increment(store, &io, &oid).await?;
            }
            emit("done".to_owned());
            Ok(())
        }
        Role::CrashWriter { pool, seed, snaps } => {
            let io = IoCtx::new(pool);
            let snapc = SnapContext::from_snaps(snaps);
            let mut generator = BatchGenerator::new(seed);
            for index in 0u64.. {
                let (object, op) = generator.next_batch();
                // Failing assertions are part of the sequence; only other errors stop it.
                if let Err(e) = store.operate(&io, &crash_object(object), &op, &snapc).await
                    && !matches!(
                        e.kind(),
                        ErrorKind::VersionMismatch
                            | ErrorKind::NotFound
                            | ErrorKind::AlreadyExists
                            | ErrorKind::ComparisonFailed
                    )
                {
                    return Err(e);
                }
                emit(format!("acked {index}"));
                // Let a cancelling parent run even when the backend never suspends.
                tokio::task::yield_now().await;
            }
            Ok(())
        }
        Role::Watcher { pool, oid } => {
            let io = IoCtx::new(pool);
            let mut watch = store.watch(&io, &oid).await?;
            emit(format!("ready {} {}", store.client().id.0, watch.cookie()));
            while let Some(event) = watch.next().await {
                if let WatchEvent::Notify(note) = event {
                    let mut reply = b"pong:".to_vec();
                    reply.extend_from_slice(&note.payload);
                    note.ack(reply);
                    emit("notified".to_owned());
                }
            }
            Ok(())
        }
        Role::LockHolder {
            pool,
            oid,
            name,
            cookie,
        } => {
            let io = IoCtx::new(pool);
            let opts = LockOptions::new(name, LockKind::Exclusive, cookie)
                .with_description("testkit lock holder");
            store.lock_opts(&io, &oid, &opts).await?;
            let _watch = store.watch(&io, &oid).await?;
            emit(format!("ready {}", store.client().id.0));
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    }
}

/// How a peer runs: a child process, or a task with its own session in this process.
#[derive(Debug)]
enum PeerKind {
    Process(Child),
    Task(tokio::task::JoinHandle<crate::Result<()>>),
}

/// Another client playing a [`Role`] against the store under test: a child process when the
/// harness has a [`Spawner`], else a task with its own session. Killing it is SIGKILL for a
/// process and cancellation (dropping the session) for a task.
#[derive(Debug)]
pub struct Peer {
    kind: Option<PeerKind>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Peer {
    /// Starts a peer playing `role`.
    pub async fn start(harness: &dyn super::Harness, role: Role) -> Peer {
        match harness.spawner() {
            Some(spawner) => Peer::spawn(spawner, &role),
            None => {
                let store = harness.connect().await;
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(async move {
                    let emit = move |line: String| {
                        let _ = tx.send(line);
                    };
                    play(&*store, role, &emit).await
                });
                Peer {
                    kind: Some(PeerKind::Task(task)),
                    lines: rx,
                }
            }
        }
    }

    fn spawn(spawner: &dyn Spawner, role: &Role) -> Peer {
        let mut cmd = spawner.command();
        cmd.env(ROLE_ENV, role.encode())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning child: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("child stdout is piped"));
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("testkit:")
                    && tx.send(rest.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Peer {
            kind: Some(PeerKind::Process(child)),
            lines: rx,
        }
    }

    /// Waits up to `timeout` for the next line starting with `prefix`; returns the rest.
    pub async fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Ok(None) => panic!("peer stopped before reporting '{prefix}'"),
                Err(_) => panic!("peer reported no '{prefix}' within {timeout:?}"),
            }
        }
    }

    /// Waits for the next line; `None` once the peer's output is closed.
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// Kills the peer (SIGKILL, or cancellation of the task and its session) and waits for it
    /// to be gone.
    pub async fn kill(&mut self) {
        match &mut self.kind {
            Some(PeerKind::Process(child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Some(PeerKind::Task(task)) => {
                task.abort();
                let _ = task.await;
            }
            None => {}
        }
    }

    /// Waits for the peer to finish and checks it succeeded.
    pub async fn wait_success(mut self) {
        match self.kind.take() {
            Some(PeerKind::Process(mut child)) => {
                let status = tokio::task::spawn_blocking(move || child.wait())
                    .await
                    .unwrap_or_else(|e| panic!("waiting for child: {e}"));
                match status {
                    Ok(s) if s.success() => {}
                    other => panic!("child failed: {other:?}"),
                }
            }
            Some(PeerKind::Task(task)) => match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("peer failed: {e}"),
                Err(e) => panic!("peer task failed: {e}"),
            },
            None => {}
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        match &mut self.kind {
            Some(PeerKind::Process(child)) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Some(PeerKind::Task(task)) => task.abort(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_encoding() {
        let roles = [
            Role::Counter {
                pool: PoolId(4),
                oid: "c".into(),
                count: 10,
            },
            Role::CrashWriter {
                pool: PoolId(1),
                seed: 7,
                snaps: vec![SnapId(3), SnapId(1)],
            },
            Role::CrashWriter {
                pool: PoolId(1),
                seed: 7,
                snaps: vec![],
            },
            Role::Watcher {
                pool: PoolId(2),
                oid: "w".into(),
            },
            Role::LockHolder {
                pool: PoolId(2),
                oid: "o".into(),
                name: "n".into(),
                cookie: "k".into(),
            },
        ];
        for role in roles {
            assert_eq!(Role::decode(&role.encode()), Some(role));
        }
    }
}
