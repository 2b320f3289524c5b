//! Pools, namespaces, config keys and self-managed snapshots: the writer side (run on the
//! writer thread) and the reader side (run on any connection).

use bytes::Bytes;
use rbdx_objstore::snapset;
use rbdx_objstore::{Error, ErrorKind, IoCtx, PoolId, PoolInfo, Result, SnapId, Subject};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{self, db_error};
use crate::rows::{self, ObjKey};
use crate::writer::{Writer, check_pool_ns, delete_attachments, note_removed};

/// Creates a pool.
pub(crate) fn pool_create(w: &mut Writer, name: &str) -> Result<PoolId> {
    let tx = w.begin()?;
    let taken = tx
        .prepare_cached("SELECT 1 FROM pools WHERE name = ?1")
        .and_then(|mut s| s.exists([name]))
        .map_err(db_error)?;
    if taken {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            Subject::Pool(name.to_owned()),
        ));
    }
    tx.execute("INSERT INTO pools (name) VALUES (?1)", [name])
        .map_err(db_error)?;
    let id = tx.last_insert_rowid() as u64;
    tx.commit().map_err(db_error)?;
    Ok(PoolId(id))
}

/// Removes a pool, its rows, then its data directory.
pub(crate) fn pool_remove(w: &mut Writer, name: &str) -> Result<()> {
    let tx = w.begin()?;
    let id: Option<i64> = tx
        .query_row("SELECT id FROM pools WHERE name = ?1", [name], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    let id = id.ok_or_else(|| Error::not_found(Subject::Pool(name.to_owned())))?;
    for table in ["omap", "xattrs", "locks", "lock_holds", "watchers"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE obj IN (SELECT id FROM objects WHERE pool = ?1)"),
            [id],
        )
        .map_err(db_error)?;
    }
    for sql in [
        "DELETE FROM objects WHERE pool = ?1",
        "DELETE FROM removed_snaps WHERE pool = ?1",
        "DELETE FROM namespaces WHERE pool = ?1",
        "DELETE FROM garbage WHERE pool = ?1",
        "DELETE FROM file_ranges WHERE pool = ?1",
        "DELETE FROM pools WHERE id = ?1",
    ] {
        tx.execute(sql, [id]).map_err(db_error)?;
    }
    tx.commit().map_err(db_error)?;
    let pool = id as u64;
    w.shared.files.forget_pool(pool);
    w.ids.forget_pool(pool);
    match std::fs::remove_dir_all(w.shared.files.layout().pool_dir(pool)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("removing data of pool {name}: {e}");
        }
        _ => {}
    }
    Ok(())
}

/// Lists pools in id order.
pub(crate) fn pool_list(conn: &Connection) -> Result<Vec<PoolInfo>> {
    conn.prepare_cached("SELECT id, name FROM pools ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(PoolInfo {
                    id: PoolId(r.get::<_, i64>(0)? as u64),
                    name: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(db_error)
}

/// Looks a pool up by name.
pub(crate) fn pool_lookup(conn: &Connection, name: &str) -> Result<PoolInfo> {
    conn.prepare_cached("SELECT id FROM pools WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get::<_, i64>(0)).optional())
        .map_err(db_error)?
        .map(|id| PoolInfo {
            id: PoolId(id as u64),
            name: name.to_owned(),
        })
        .ok_or_else(|| Error::not_found(Subject::Pool(name.to_owned())))
}

/// Looks a pool up by id.
pub(crate) fn pool_by_id(conn: &Connection, id: PoolId) -> Result<PoolInfo> {
    conn.prepare_cached("SELECT name FROM pools WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.0 as i64], |r| r.get::<_, String>(0))
                .optional()
        })
        .map_err(db_error)?
        .map(|name| PoolInfo { id, name })
        .ok_or_else(|| Error::not_found(Subject::PoolId(id)))
}

/// Creates a namespace.
pub(crate) fn namespace_create(w: &mut Writer, io: &IoCtx) -> Result<()> {
    let tx = w.begin()?;
    check_pool_ns(&tx, &IoCtx::new(io.pool()))?;
    let inserted = tx
        .execute(
            "INSERT OR IGNORE INTO namespaces (pool, name) VALUES (?1, ?2)",
            params![io.pool().0 as i64, io.namespace()],
        )
        .map_err(db_error)?;
    if inserted == 0 {
        return Err(Error::new(ErrorKind::AlreadyExists, io.namespace_subject()));
    }
    tx.commit().map_err(db_error)
}

/// Removes an empty namespace.
pub(crate) fn namespace_remove(w: &mut Writer, io: &IoCtx) -> Result<()> {
    let tx = w.begin()?;
    check_pool_ns(&tx, io)?;
    let used = tx
        .prepare_cached("SELECT 1 FROM objects WHERE pool = ?1 AND ns = ?2 LIMIT 1")
        .and_then(|mut s| s.exists(params![io.pool().0 as i64, io.namespace()]))
        .map_err(db_error)?;
    if used {
        return Err(Error::new(ErrorKind::Busy, io.namespace_subject())
            .with_detail("namespace still holds objects"));
    }
    tx.execute(
        "DELETE FROM namespaces WHERE pool = ?1 AND name = ?2",
        params![io.pool().0 as i64, io.namespace()],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

/// Lists the named namespaces of a pool.
pub(crate) fn namespace_list(conn: &Connection, pool: PoolId) -> Result<Vec<String>> {
    check_pool_ns(conn, &IoCtx::new(pool))?;
    conn.prepare_cached("SELECT name FROM namespaces WHERE pool = ?1 ORDER BY name")
        .and_then(|mut s| s.query_map([pool.0 as i64], |r| r.get(0))?.collect())
        .map_err(db_error)
}

/// Sets a config key.
pub(crate) fn config_key_set(w: &mut Writer, key: &str, value: &[u8]) -> Result<()> {
    let tx = w.begin()?;
    tx.execute(
        "INSERT OR REPLACE INTO config_keys (key, value) VALUES (?1, ?2)",
        params![key, value],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)
}

/// Removes a config key.
pub(crate) fn config_key_remove(w: &mut Writer, key: &str) -> Result<()> {
    let tx = w.begin()?;
    if tx
        .execute("DELETE FROM config_keys WHERE key = ?1", [key])
        .map_err(db_error)?
        == 0
    {
        return Err(Error::not_found(Subject::ConfigKey(key.to_owned())));
    }
    tx.commit().map_err(db_error)
}

/// Reads a config key.
pub(crate) fn config_key_get(conn: &Connection, key: &str) -> Result<Bytes> {
    conn.prepare_cached("SELECT value FROM config_keys WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get::<_, Vec<u8>>(0)).optional())
        .map_err(db_error)?
        .map(Bytes::from)
        .ok_or_else(|| Error::not_found(Subject::ConfigKey(key.to_owned())))
}

/// Lists config keys.
pub(crate) fn config_key_list(conn: &Connection) -> Result<Vec<String>> {
    conn.prepare_cached("SELECT key FROM config_keys ORDER BY key")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db_error)
}

/// Allocates a snapshot id.
pub(crate) fn snap_create(w: &mut Writer, pool: PoolId) -> Result<SnapId> {
    let tx = w.begin()?;
    let seq: Option<i64> = tx
        .query_row(
            "UPDATE pools SET snap_seq = snap_seq + 1 WHERE id = ?1 RETURNING snap_seq",
            [pool.0 as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_error)?;
    let seq = seq.ok_or_else(|| Error::not_found(Subject::PoolId(pool)))?;
    tx.commit().map_err(db_error)?;
    Ok(SnapId(seq as u64))
}

/// Returns true if `snap` was ever allocated in `pool`.
fn was_allocated(conn: &Connection, pool: PoolId, snap: SnapId) -> Result<bool> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT snap_seq FROM pools WHERE id = ?1")
        .and_then(|mut s| s.query_row([pool.0 as i64], |r| r.get(0)).optional())
        .map_err(db_error)?;
    Ok(seq.is_some_and(|seq| snap.0 > 0 && snap.0 <= seq as u64))
}

/// Checks that `snap` was allocated in `pool` and not removed.
pub(crate) fn check_snap(conn: &Connection, pool: PoolId, snap: SnapId) -> Result<()> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT snap_seq FROM pools WHERE id = ?1")
        .and_then(|mut s| s.query_row([pool.0 as i64], |r| r.get(0)).optional())
        .map_err(db_error)?;
    let seq = seq.ok_or_else(|| Error::not_found(Subject::PoolId(pool)))?;
    let removed = conn
        .prepare_cached("SELECT 1 FROM removed_snaps WHERE pool = ?1 AND snap = ?2")
        .and_then(|mut s| s.exists(params![pool.0 as i64, snap.0 as i64]))
        .map_err(db_error)?;
    if snap.0 == 0 || snap.0 > seq as u64 || removed {
        return Err(Error::not_found(Subject::Snapshot { pool, snap }));
    }
    Ok(())
}

/// Removes a snapshot, then trims the clones that served it, object by object. Removing it
/// again trims again, which finishes a removal a crash interrupted.
pub(crate) fn snap_remove(w: &mut Writer, pool: PoolId, snap: SnapId) -> Result<()> {
    let tx = w.begin()?;
    match check_snap(&tx, pool, snap) {
        Err(e)
            if e.subject() == &(Subject::Snapshot { pool, snap })
                && was_allocated(&tx, pool, snap)? => {}
        other => other?,
    }
    tx.execute(
        "INSERT OR IGNORE INTO removed_snaps (pool, snap) VALUES (?1, ?2)",
        params![pool.0 as i64, snap.0 as i64],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    let candidates: Vec<(String, String)> = w
        .conn
        .prepare("SELECT DISTINCT ns, name FROM objects WHERE pool = ?1 AND snap >= ?2")
        .and_then(|mut s| {
            s.query_map(params![pool.0 as i64, snap.0 as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(db_error)?;
    for (ns, name) in candidates {
        let key = ObjKey {
            pool: pool.0,
            ns,
            name,
        };
        w.lock_stripe(key.stripe(), true)?;
        let result = trim_object(w, &key, snap);
        w.unlock_stripe(key.stripe());
        result?;
    }
    Ok(())
}

fn trim_object(w: &mut Writer, key: &ObjKey, snap: SnapId) -> Result<()> {
    let tx = w.begin()?;
    let clones = rows::load_clones(&tx, key).map_err(db_error)?;
    if !clones.iter().any(|c| c.meta.snaps.contains(&snap)) {
        return Ok(());
    }
    let mut metas: Vec<_> = clones.iter().map(|c| c.meta.clone()).collect();
    let dropped = snapset::trim_snap(&mut metas, snap);
    for clone in &clones {
        if dropped.contains(&clone.meta.id) {
            delete_attachments(&tx, clone.id, true).map_err(db_error)?;
            tx.execute("DELETE FROM objects WHERE id = ?1", [clone.id])
                .map_err(db_error)?;
            if let Some(file) = clone.file {
                tx.execute(
                    "INSERT INTO garbage (pool, file) VALUES (?1, ?2)",
                    params![key.pool as i64, file as i64],
                )
                .map_err(db_error)?;
            }
        } else if let Some(meta) = metas.iter().find(|m| m.id == clone.meta.id) {
            tx.execute(
                "UPDATE objects SET snaps = ?1, overlap = ?2 WHERE id = ?3",
                params![
                    db::encode_snaps(&meta.snaps),
                    db::encode_extents(&meta.overlap),
                    clone.id
                ],
            )
            .map_err(db_error)?;
        }
    }
    if metas.is_empty()
        && let Some(head) = rows::load_head(&tx, key).map_err(db_error)?
        && !head.present
    {
        delete_attachments(&tx, head.id, true).map_err(db_error)?;
        tx.execute("DELETE FROM objects WHERE id = ?1", [head.id])
            .map_err(db_error)?;
        note_removed(&tx, key.pool, head.version).map_err(db_error)?;
    }
    tx.commit().map_err(db_error)?;
    w.released += dropped.len() as u64;
    Ok(())
}
