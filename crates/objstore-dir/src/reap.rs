//! Cleaning up after sessions whose process died, and the flush that makes changes durable
//! and lets replaced files go.
//!
//! Replaced or trimmed data files are not deleted when their rows stop referring to them:
//! they are recorded in `garbage` and deleted only after a WAL sync has made the change that
//! released them durable, so a power loss can never leave metadata that points at a deleted
//! file.

use rbdx_objstore::{Result, Subject};
use rusqlite::params;

use crate::db::db_error;
use crate::rows;
use crate::session;
use crate::writer::Writer;

/// Garbage rows deleted per transaction.
const GARBAGE_CHUNK: i64 = 512;
/// Garbage rows that make an idle writer flush on its own.
pub(crate) const GARBAGE_HIGH_WATER: i64 = 4096;

fn io(e: std::io::Error) -> rbdx_objstore::Error {
    rbdx_objstore::Error::io(Subject::Store, e)
}

/// Reaps every session whose process is gone.
pub(crate) fn reap_dead_sessions(w: &mut Writer) -> Result<()> {
    let layout = w.shared.files.layout().clone();
    let dead = session::dead_sessions(&w.conn, &layout).map_err(db_error)?;
    for (client, token) in dead {
        if client == w.shared.client {
            continue;
        }
        reap_session(w, client)?;
        session::remove_session_file(&layout, &token);
    }
    Ok(())
}

fn reap_session(w: &mut Writer, client: u64) -> Result<()> {
    let objects: Vec<i64> = w
        .conn
        .prepare("SELECT DISTINCT obj FROM intents WHERE client = ?1")
        .and_then(|mut s| s.query_map([client as i64], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    for obj in objects {
        let key = rows::load_key(&w.conn, obj).map_err(db_error)?;
        let Some(key) = key else {
            w.conn
                .execute("DELETE FROM intents WHERE obj = ?1", [obj])
                .map_err(db_error)?;
            continue;
        };
        w.lock_stripe(&key, true)?;
        let result = (|| {
            let ids = w.replay_intents(key.pool, obj)?;
            let tx = w.begin()?;
            for id in &ids {
                tx.execute("DELETE FROM intents WHERE id = ?1", [id])
                    .map_err(db_error)?;
            }
            if let Some(max) = ids.iter().max() {
                tx.execute(
                    "UPDATE objects SET pending = 0 WHERE id = ?1 AND pending <= ?2",
                    [obj, *max],
                )
                .map_err(db_error)?;
            }
            tx.commit().map_err(db_error)
        })();
        w.unlock_stripe(&key);
        result?;
    }
    let ranges: Vec<(u64, u64, u64)> = w
        .conn
        .prepare("SELECT pool, lo, hi FROM file_ranges WHERE client = ?1")
        .and_then(|mut s| {
            s.query_map([client as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect()
        })
        .map_err(db_error)?;
    let files = &w.shared.files;
    for (pool, lo, hi) in ranges {
        for file in lo..hi {
            if !files.layout().data_file(pool, file).exists() {
                continue;
            }
            let used = w
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM objects WHERE file = ?1) OR EXISTS (SELECT 1 FROM garbage WHERE file = ?1)")
                .and_then(|mut s| s.query_row([file as i64], |r| r.get::<_, bool>(0)))
                .map_err(db_error)?;
            if !used {
                files.unlink(pool, file).map_err(io)?;
            }
        }
    }
    let tx = w.begin()?;
    for sql in [
        "DELETE FROM watchers WHERE client = ?1",
        "DELETE FROM file_ranges WHERE client = ?1",
        "DELETE FROM clients WHERE id = ?1",
    ] {
        tx.execute(sql, [client as i64]).map_err(db_error)?;
    }
    tx.commit().map_err(db_error)?;
    tracing::info!("reaped dead session client.{client}");
    Ok(())
}

/// Removes data directories of pools that no longer exist (left by a crash during removal).
pub(crate) fn remove_orphan_pool_dirs(w: &mut Writer) -> Result<()> {
    let pools_dir = w.shared.files.layout().pools();
    let entries = match std::fs::read_dir(&pools_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io)?;
        let Some(pool) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let exists = w
            .conn
            .prepare_cached("SELECT 1 FROM pools WHERE id = ?1")
            .and_then(|mut s| s.exists([pool]))
            .map_err(db_error)?;
        if !exists {
            std::fs::remove_dir_all(entry.path()).map_err(io)?;
        }
    }
    Ok(())
}

/// Makes everything this handle changed durable, then deletes garbage released by durable
/// changes.
pub(crate) fn flush(w: &mut Writer) -> Result<()> {
    w.shared.files.sync_dirty().map_err(io)?;
    let upto: Option<i64> = w
        .conn
        .query_row("SELECT max(id) FROM garbage", [], |r| r.get(0))
        .map_err(db_error)?;
    sync_wal(w)?;
    if let Some(upto) = upto {
        collect_garbage(w, upto)?;
    }
    Ok(())
}

/// Forces a WAL sync: a commit with `synchronous = FULL` syncs the log up to and including
/// every earlier commit, whichever process made it.
fn sync_wal(w: &mut Writer) -> Result<()> {
    w.conn
        .pragma_update(None, "synchronous", "FULL")
        .map_err(db_error)?;
    let result = (|| {
        let tx = w.begin()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('flushes', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            [],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    })();
    w.conn
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_error)?;
    result
}

fn collect_garbage(w: &mut Writer, upto: i64) -> Result<()> {
    loop {
        let batch: Vec<(i64, u64, u64)> = w
            .conn
            .prepare_cached(
                "SELECT id, pool, file FROM garbage WHERE id <= ?1 ORDER BY id LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![upto, GARBAGE_CHUNK], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?
                .collect()
            })
            .map_err(db_error)?;
        let Some(last) = batch.last().map(|b| b.0) else {
            return Ok(());
        };
        for (_, pool, file) in &batch {
            w.shared.files.unlink(*pool, *file).map_err(io)?;
        }
        w.conn
            .execute("DELETE FROM garbage WHERE id <= ?1", [last])
            .map_err(db_error)?;
        if batch.len() < GARBAGE_CHUNK as usize {
            return Ok(());
        }
    }
}

/// Flushes when enough garbage has piled up, so disk space comes back without explicit
/// flushes.
pub(crate) fn flush_if_much_garbage(w: &mut Writer) -> Result<()> {
    let count: i64 = w
        .conn
        .query_row("SELECT count(*) FROM garbage", [], |r| r.get(0))
        .map_err(db_error)?;
    if count >= GARBAGE_HIGH_WATER {
        flush(w)
    } else {
        Ok(())
    }
}
