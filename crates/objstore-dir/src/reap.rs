//! Cleaning up after sessions whose process died, and the flush that makes changes durable
//! and lets replaced files go.
//!
//! Replaced or trimmed data files are not deleted when their rows stop referring to them:
//! they are recorded in `garbage` and deleted only after a WAL sync has made the change that
//! released them durable, so a power loss can never leave metadata that points at a deleted
//! file. A writer collects garbage after a flush and whenever it has released
//! [`GARBAGE_BATCH`] files since the last collection; deleting replaced files early also drops
//! their dirty pages before the kernel spends disk bandwidth writing them back.

use std::collections::HashSet;

use rbdx_objstore::{Result, Subject};
use rusqlite::params;

use crate::db::db_error;
use crate::rows;
use crate::session;
use crate::writer::Writer;

/// Garbage rows deleted per transaction.
const GARBAGE_CHUNK: i64 = 512;
/// Files a writer releases before it syncs the WAL and deletes garbage on its own.
pub(crate) const GARBAGE_BATCH: u64 = 64;

fn io(e: std::io::Error) -> rbdx_objstore::Error {
    rbdx_objstore::Error::io(Subject::Store, e)
}

/// Reaps every session whose process is gone: applies every recorded intent (some may be
/// theirs), then deletes their uncommitted files and their rows.
pub(crate) fn reap_dead_sessions(w: &mut Writer) -> Result<()> {
    let layout = w.shared.files.layout().clone();
    let dead: Vec<_> = session::dead_sessions(&w.conn, &layout)
        .map_err(db_error)?
        .into_iter()
        .filter(|(client, _)| *client != w.shared.client)
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    settle_intents(w)?;
    for (client, token) in dead {
        reap_session(w, client)?;
        let _ = std::fs::remove_dir_all(layout.spares(&token));
        session::remove_session_file(&layout, &token);
    }
    Ok(())
}

/// Applies and clears every recorded intent, each under its object's stripe lock (so no live
/// writer is applying it at the same time).
fn settle_intents(w: &mut Writer) -> Result<()> {
    let rows: Vec<i64> = w
        .conn
        .prepare("SELECT id FROM objects WHERE intent IS NOT NULL")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    for row in rows {
        let Some(key) = rows::load_key(&w.conn, row).map_err(db_error)? else {
            continue;
        };
        w.lock_stripe(key.stripe(), true)?;
        let result = (|| {
            let Some(head) = rows::load_head(&w.conn, &key).map_err(db_error)? else {
                return Ok(());
            };
            if head.intent.is_none() {
                return Ok(());
            }
            w.replay_intent(key.pool, &head)?;
            let tx = w.begin_quiet()?;
            tx.execute(
                "UPDATE objects SET intent = NULL WHERE id = ?1 AND version = ?2",
                params![head.id, head.version as i64],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)
        })();
        w.unlock_stripe(key.stripe());
        result?;
    }
    Ok(())
}

fn reap_session(w: &mut Writer, client: u64) -> Result<()> {
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
///
/// Files already recorded as garbage are not synced: the changes that released them are
/// committed, and the WAL sync that follows makes those changes durable, so nothing can refer
/// to such a file again (a trimmed journal's objects, for one, need not reach the disk).
pub(crate) fn flush(w: &mut Writer) -> Result<()> {
    let (released, upto) = garbage(w)?;
    let synced = w.shared.files.sync_dirty(&released).map_err(io)?;
    tracing::debug!(
        "flush: {synced} files synced, {} released ones left out",
        released.len()
    );
    sync_wal_and_collect_upto(w, upto)
}

/// Files by (pool, file id).
type FileSet = HashSet<(u64, u64)>;

/// The files recorded as garbage, and the newest garbage row.
fn garbage(w: &Writer) -> Result<(FileSet, Option<i64>)> {
    let rows: Vec<(i64, u64, u64)> = w
        .conn
        .prepare_cached("SELECT id, pool, file FROM garbage")
        .and_then(|mut s| s.query_map([], garbage_row)?.collect())
        .map_err(db_error)?;
    let upto = rows.iter().map(|(id, _, _)| *id).max();
    Ok((rows.into_iter().map(|(_, p, f)| (p, f)).collect(), upto))
}

/// A garbage row: (id, pool, file).
fn garbage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, u64, u64)> {
    Ok((
        r.get(0)?,
        r.get::<_, i64>(1)? as u64,
        r.get::<_, i64>(2)? as u64,
    ))
}

/// Syncs the WAL, which makes every commit so far durable, then deletes the files those
/// commits released.
pub(crate) fn sync_wal_and_collect(w: &mut Writer) -> Result<()> {
    let upto: Option<i64> = w
        .conn
        .query_row("SELECT max(id) FROM garbage", [], |r| r.get(0))
        .map_err(db_error)?;
    sync_wal_and_collect_upto(w, upto)
}

/// Syncs the WAL, then deletes the garbage recorded up to row `upto` (read before the sync).
fn sync_wal_and_collect_upto(w: &mut Writer, upto: Option<i64>) -> Result<()> {
    sync_wal(w)?;
    if let Some(upto) = upto {
        collect_garbage(w, upto)?;
    }
    w.released = 0;
    Ok(())
}

/// Forces a WAL sync: a commit with `synchronous = FULL` syncs the log up to and including
/// every earlier commit, whichever process made it.
fn sync_wal(w: &mut Writer) -> Result<()> {
    w.conn
        .pragma_update(None, "synchronous", "FULL")
        .map_err(db_error)?;
    let result = (|| {
        let tx = w.begin_quiet()?;
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
                s.query_map(params![upto, GARBAGE_CHUNK], garbage_row)?
                    .collect()
            })
            .map_err(db_error)?;
        let Some(last) = batch.last().map(|b| b.0) else {
            return Ok(());
        };
        for (_, pool, file) in &batch {
            w.shared.files.release(*pool, *file).map_err(io)?;
        }
        w.conn
            .execute("DELETE FROM garbage WHERE id <= ?1", [last])
            .map_err(db_error)?;
        if batch.len() < GARBAGE_CHUNK as usize {
            return Ok(());
        }
    }
}

/// True once this writer has released enough files to collect garbage.
pub(crate) fn collection_due(w: &Writer) -> bool {
    w.released >= GARBAGE_BATCH
}

/// [`collect_if_due`], with a failure logged: for callers that have nobody to tell.
pub(crate) fn collect_if_due_logged(w: &mut Writer) {
    if let Err(e) = collect_if_due(w) {
        tracing::warn!("collecting garbage: {e}");
    }
}

/// Collects garbage once this writer has released enough files.
fn collect_if_due(w: &mut Writer) -> Result<()> {
    if collection_due(w) {
        sync_wal_and_collect(w)
    } else {
        Ok(())
    }
}
