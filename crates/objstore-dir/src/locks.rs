//! Advisory locks (`cls_lock` semantics) stored in the `locks` and `lock_holds` tables of the
//! object's head row. Taking or releasing a lock changes the object's version, as it does in
//! RADOS, and runs under the object's stripe lock like any other change.

use std::time::SystemTime;

use rbdx_objstore::lock::{Hold, LockState};
use rbdx_objstore::{
    ClientId, ClientInfo, Error, IoCtx, LockInfo, LockKind, LockOptions, Result, Subject,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::db::{self, db_error};
use crate::files::Layout;
use crate::rows::{self, ObjKey};
use crate::session;
use crate::writer::{Writer, check_pool_ns, removed_version};

fn key_of(io: &IoCtx, oid: &str) -> ObjKey {
    ObjKey {
        pool: io.pool().0,
        ns: io.namespace().to_owned(),
        name: oid.to_owned(),
    }
}

fn kind_from(text: &str) -> LockKind {
    if text == "shared" {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    }
}

fn load_state(conn: &Connection, obj: i64, name: &str) -> rusqlite::Result<Option<LockState>> {
    let head: Option<(String, String)> = conn
        .prepare_cached("SELECT kind, tag FROM locks WHERE obj = ?1 AND name = ?2")?
        .query_row(params![obj, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((kind, tag)) = head else {
        return Ok(None);
    };
    let holds = conn
        .prepare_cached(
            "SELECT client, addr, cookie, description, expiration FROM lock_holds WHERE obj = ?1 AND name = ?2",
        )?
        .query_map(params![obj, name], |r| {
            Ok(Hold {
                client: ClientInfo { id: ClientId(r.get::<_, i64>(0)? as u64), addr: r.get(1)? },
                cookie: r.get(2)?,
                description: r.get(3)?,
                expiration: r.get::<_, Option<i64>>(4)?.map(db::from_nanos),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(LockState {
        kind: kind_from(&kind),
        tag,
        holds,
    }))
}

fn store_state(
    tx: &Transaction<'_>,
    obj: i64,
    name: &str,
    state: &LockState,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM lock_holds WHERE obj = ?1 AND name = ?2",
        params![obj, name],
    )?;
    if state.holds.is_empty() {
        tx.execute(
            "DELETE FROM locks WHERE obj = ?1 AND name = ?2",
            params![obj, name],
        )?;
        return Ok(());
    }
    tx.execute(
        "INSERT OR REPLACE INTO locks (obj, name, kind, tag) VALUES (?1, ?2, ?3, ?4)",
        params![obj, name, state.kind.as_str(), state.tag],
    )?;
    for h in &state.holds {
        tx.execute(
            "INSERT INTO lock_holds (obj, name, client, cookie, addr, description, expiration)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                obj,
                name,
                h.client.id.0 as i64,
                h.cookie,
                h.client.addr,
                h.description,
                h.expiration.map(db::to_nanos)
            ],
        )?;
    }
    Ok(())
}

fn touch(tx: &Transaction<'_>, obj: i64, version: u64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE objects SET version = ?1, mtime = ?2 WHERE id = ?3",
        params![version as i64, db::to_nanos(SystemTime::now()), obj],
    )?;
    Ok(())
}

/// Takes a lock for this writer's session, creating the object if it is absent.
pub(crate) fn lock(w: &mut Writer, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
    let key = key_of(io, oid);
    w.lock_stripe(key.stripe(), true)?;
    let me = ClientInfo {
        id: ClientId(w.shared.client),
        addr: w.shared.addr.clone(),
    };
    let result = (|| {
        let tx = w.begin()?;
        check_pool_ns(&tx, io)?;
        let head = rows::load_head(&tx, &key).map_err(db_error)?;
        let current = match head.as_ref().filter(|h| h.present) {
            Some(h) => load_state(&tx, h.id, &opts.name).map_err(db_error)?,
            None => None,
        };
        let subject = || Subject::Lock {
            oid: oid.to_owned(),
            name: opts.name.clone(),
        };
        let next = LockState::acquire(current, &me, opts, SystemTime::now(), subject)?;
        let version = match &head {
            Some(h) => h.version + 1,
            None => removed_version(&tx, key.pool).map_err(db_error)? + 1,
        };
        let obj = match head {
            Some(h) if h.present => h.id,
            Some(h) => {
                tx.execute(
                    "UPDATE objects SET present = 1, size = 0, file = NULL WHERE id = ?1",
                    [h.id],
                )
                .map_err(db_error)?;
                h.id
            }
            None => {
                tx.execute(
                    "INSERT INTO objects (pool, ns, name, snap, present, size, version, mtime, file, seq)
                     VALUES (?1, ?2, ?3, 0, 1, 0, 0, 0, NULL, 0)",
                    params![key.pool as i64, key.ns, key.name],
                )
                .map_err(db_error)?;
                tx.last_insert_rowid()
            }
        };
        store_state(&tx, obj, &opts.name, &next).map_err(db_error)?;
        touch(&tx, obj, version).map_err(db_error)?;
        tx.commit().map_err(db_error)
    })();
    w.unlock_stripe(key.stripe());
    result
}

/// Removes the hold of `client` with `cookie` (an unlock, or a break by another client).
pub(crate) fn release(
    w: &mut Writer,
    io: &IoCtx,
    oid: &str,
    name: &str,
    client: ClientId,
    cookie: &str,
) -> Result<()> {
    let key = key_of(io, oid);
    w.lock_stripe(key.stripe(), true)?;
    let result = (|| {
        let tx = w.begin()?;
        check_pool_ns(&tx, io)?;
        let head = rows::load_head(&tx, &key)
            .map_err(db_error)?
            .filter(|h| h.present);
        let head = head.ok_or_else(|| Error::not_found(io.object_subject(oid)))?;
        let subject = || Subject::Lock {
            oid: oid.to_owned(),
            name: name.to_owned(),
        };
        let mut state = load_state(&tx, head.id, name)
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found(subject()))?;
        state.expire(SystemTime::now());
        state.release(client, cookie, subject)?;
        store_state(&tx, head.id, name, &state).map_err(db_error)?;
        touch(&tx, head.id, head.version + 1).map_err(db_error)?;
        tx.commit().map_err(db_error)
    })();
    w.unlock_stripe(key.stripe());
    result
}

fn present_head(conn: &Connection, io: &IoCtx, oid: &str) -> Result<i64> {
    check_pool_ns(conn, io)?;
    rows::load_head(conn, &key_of(io, oid))
        .map_err(db_error)?
        .filter(|h| h.present)
        .map(|h| h.id)
        .ok_or_else(|| Error::not_found(io.object_subject(oid)))
}

/// Describes a lock, with the liveness of each holder.
pub(crate) fn lock_info(
    conn: &Connection,
    layout: &Layout,
    io: &IoCtx,
    oid: &str,
    name: &str,
) -> Result<LockInfo> {
    let obj = present_head(conn, io, oid)?;
    let Some(state) = load_state(conn, obj, name).map_err(db_error)? else {
        return Ok(LockInfo {
            kind: None,
            tag: String::new(),
            lockers: Vec::new(),
        });
    };
    state.describe(SystemTime::now(), |client| {
        session::alive(conn, layout, client.0).map_err(db_error)
    })
}

/// Lists the locks with live holds on an object.
pub(crate) fn lock_list(conn: &Connection, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
    let obj = present_head(conn, io, oid)?;
    let now = db::to_nanos(SystemTime::now());
    conn.prepare_cached(
        "SELECT DISTINCT name FROM lock_holds WHERE obj = ?1 AND (expiration IS NULL OR expiration > ?2) ORDER BY name",
    )
    .and_then(|mut s| s.query_map(params![obj, now], |r| r.get(0))?.collect())
    .map_err(db_error)
}
