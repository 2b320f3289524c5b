//! Client sessions: registration, liveness, and file-id reservations.
//!
//! A session is a row in `clients` plus a session file `clients/<token>.lock` that the owning
//! process keeps locked (`flock`) for its lifetime. The kernel drops that lock when the process
//! dies, however it dies, so any process can tell a live session from a dead one by trying to
//! take the lock. Dead sessions are reaped: their redo intents replayed, their uncommitted
//! files deleted, their watches dropped (their lock holds stay, reported dead, to be broken).
//!
//! The session file is created and locked before the row is inserted, so a session is never
//! seen without its lock.

use std::fs::File;
use std::io::{self, Read};
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::db;
use crate::files::Layout;

/// Number of file ids a session reserves at once.
const RESERVATION: u64 = 256;

/// This process's session: its id, address and the locked session file.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) addr: String,
    token: String,
    _lock: File,
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Returns `host/pid N (program)` for this process.
pub(crate) fn local_addr() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}/pid {} ({program})", std::process::id())
}

fn session_file(layout: &Layout, token: &str) -> std::path::PathBuf {
    layout.clients().join(format!("{token}.lock"))
}

impl Session {
    /// Registers a new session.
    pub(crate) fn register(
        conn: &Connection,
        layout: &Layout,
    ) -> io::Result<Result<Session, rusqlite::Error>> {
        std::fs::create_dir_all(layout.clients())?;
        let token = random_token()?;
        let lock = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(session_file(layout, &token))?;
        lock.lock()?;
        let addr = local_addr();
        let inserted = conn.execute(
            "INSERT INTO clients (addr, started, token) VALUES (?1, ?2, ?3)",
            params![addr, db::to_nanos(SystemTime::now()), token],
        );
        Ok(inserted.map(|_| Session {
            id: conn.last_insert_rowid() as u64,
            addr,
            token,
            _lock: lock,
        }))
    }

    /// Returns the token naming the session's files.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Removes the session's rows and file on a clean close.
    pub(crate) fn close(&self, conn: &Connection, layout: &Layout) -> rusqlite::Result<()> {
        conn.execute("DELETE FROM watchers WHERE client = ?1", [self.id as i64])?;
        conn.execute(
            "DELETE FROM file_ranges WHERE client = ?1",
            [self.id as i64],
        )?;
        conn.execute("DELETE FROM clients WHERE id = ?1", [self.id as i64])?;
        let _ = std::fs::remove_file(session_file(layout, &self.token));
        Ok(())
    }
}

/// Tells whether the session with `token` is alive, by trying to lock its session file.
pub(crate) fn token_alive(layout: &Layout, token: &str) -> bool {
    let path = session_file(layout, token);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(_) => return false,
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Tells whether session `client` is alive.
pub(crate) fn alive(conn: &Connection, layout: &Layout, client: u64) -> rusqlite::Result<bool> {
    let token: Option<String> = conn
        .prepare_cached("SELECT token FROM clients WHERE id = ?1")?
        .query_row([client as i64], |r| r.get(0))
        .optional()?;
    Ok(token.is_some_and(|t| token_alive(layout, &t)))
}

/// Lists sessions whose process is gone.
pub(crate) fn dead_sessions(
    conn: &Connection,
    layout: &Layout,
) -> rusqlite::Result<Vec<(u64, String)>> {
    let mut stmt = conn.prepare("SELECT id, token FROM clients")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
    })?;
    let mut dead = Vec::new();
    for row in rows {
        let (id, token) = row?;
        if !token_alive(layout, &token) {
            dead.push((id, token));
        }
    }
    Ok(dead)
}

/// Deletes a dead session's file.
pub(crate) fn remove_session_file(layout: &Layout, token: &str) {
    let _ = std::fs::remove_file(session_file(layout, token));
}

/// File ids handed out to this session, per pool.
///
/// A range's row in `file_ranges` lets a reaper find files a dead session created but never
/// committed. A row is deleted only after the batch that used the last id of its range has
/// finished (committed, or cleaned up after a failure), see [`FileIds::batch_done`].
#[derive(Debug, Default)]
pub(crate) struct FileIds {
    /// Pool -> (range start, next id, range end).
    ranges: std::collections::HashMap<u64, (u64, u64, u64)>,
    /// Ranges used up during the current batch.
    exhausted: Vec<(u64, u64)>,
    /// Ranges used up before the current batch; their rows can go.
    retirable: Vec<(u64, u64)>,
}

impl FileIds {
    /// Returns a fresh file id for `pool`, reserving a new range in the database when needed.
    pub(crate) fn next(
        &mut self,
        conn: &Connection,
        client: u64,
        pool: u64,
    ) -> rusqlite::Result<u64> {
        if let Some((_, next, hi)) = self.ranges.get_mut(&pool)
            && *next < *hi
        {
            *next += 1;
            return Ok(*next - 1);
        }
        if let Some((lo, _, _)) = self.ranges.remove(&pool) {
            self.exhausted.push((pool, lo));
        }
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let lo: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'next_file'", [], |r| {
                r.get::<_, String>(0)
            })
            .map(|v| v.parse().unwrap_or(1))?;
        let hi = lo + RESERVATION as i64;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'next_file'",
            [hi.to_string()],
        )?;
        for (old_pool, old_lo) in &self.retirable {
            tx.execute(
                "DELETE FROM file_ranges WHERE client = ?1 AND pool = ?2 AND lo = ?3",
                params![client as i64, *old_pool as i64, *old_lo as i64],
            )?;
        }
        tx.execute(
            "INSERT INTO file_ranges (client, pool, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            params![client as i64, pool as i64, lo, hi],
        )?;
        tx.commit()?;
        self.retirable.clear();
        self.ranges
            .insert(pool, (lo as u64, lo as u64 + 1, hi as u64));
        Ok(lo as u64)
    }

    /// Marks the end of a batch: no id handed out so far is still uncommitted.
    pub(crate) fn batch_done(&mut self) {
        self.retirable.append(&mut self.exhausted);
    }

    /// Forgets the ranges of a removed pool.
    pub(crate) fn forget_pool(&mut self, pool: u64) {
        self.ranges.remove(&pool);
    }
}
