//! Watch registration (rows in `watchers`) and the listing of live watchers.

use rbdx_objstore::{ClientId, ClientInfo, Error, IoCtx, Result, Subject, Watch, WatcherInfo};
use rusqlite::{Connection, params};
use tokio::sync::mpsc;

use crate::db::db_error;
use crate::files::Layout;
use crate::rows::{self, ObjKey};
use crate::session;
use crate::writer::{Writer, check_pool_ns};

fn present_head(conn: &Connection, io: &IoCtx, oid: &str) -> Result<i64> {
    check_pool_ns(conn, io)?;
    let key = ObjKey {
        pool: io.pool().0,
        ns: io.namespace().to_owned(),
        name: oid.to_owned(),
    };
    rows::load_head(conn, &key)
        .map_err(db_error)?
        .filter(|h| h.present)
        .map(|h| h.id)
        .ok_or_else(|| Error::not_found(io.object_subject(oid)))
}

/// Registers a watch of this session. The local channel is in place before the row commits,
/// so no notify can find the row without the channel.
pub(crate) fn watch(w: &mut Writer, io: &IoCtx, oid: &str) -> Result<Watch> {
    let client = w.shared.client;
    let watches = w.shared.watches.clone();
    let tx = w.begin()?;
    let obj = present_head(&tx, io, oid)?;
    tx.execute(
        "INSERT INTO watchers (obj, client) VALUES (?1, ?2)",
        params![obj, client as i64],
    )
    .map_err(db_error)?;
    let cookie = tx.last_insert_rowid() as u64;
    let (sender, events) = mpsc::unbounded_channel();
    watches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(cookie, sender);
    if let Err(e) = tx.commit() {
        watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cookie);
        return Err(db_error(e));
    }
    Ok(Watch::new(cookie, events))
}

/// Removes a watch of this session.
pub(crate) fn unwatch(w: &mut Writer, cookie: u64) -> Result<()> {
    let client = w.shared.client;
    w.shared
        .watches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&cookie);
    let removed = w
        .conn
        .execute(
            "DELETE FROM watchers WHERE cookie = ?1 AND client = ?2",
            params![cookie as i64, client as i64],
        )
        .map_err(db_error)?;
    if removed == 0 {
        return Err(Error::not_found(Subject::Watch(cookie)));
    }
    Ok(())
}

/// Deletes rows of watches whose local handle was dropped.
pub(crate) fn forget_dropped(w: &mut Writer) -> Result<()> {
    let dropped: Vec<u64> = std::mem::take(
        &mut *w
            .shared
            .dropped_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for cookie in dropped {
        w.conn
            .execute(
                "DELETE FROM watchers WHERE cookie = ?1 AND client = ?2",
                params![cookie as i64, w.shared.client as i64],
            )
            .map_err(db_error)?;
    }
    Ok(())
}

/// Lists the watchers of an object whose session is alive.
pub(crate) fn list_watchers(
    conn: &Connection,
    layout: &Layout,
    io: &IoCtx,
    oid: &str,
) -> Result<Vec<WatcherInfo>> {
    let obj = present_head(conn, io, oid)?;
    let rows: Vec<(i64, i64, String, String)> = conn
        .prepare_cached(
            "SELECT w.cookie, w.client, c.addr, c.token FROM watchers w JOIN clients c ON c.id = w.client
             WHERE w.obj = ?1 ORDER BY w.cookie",
        )
        .and_then(|mut s| s.query_map([obj], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, _, token)| session::token_alive(layout, token))
        .map(|(cookie, client, addr, _)| WatcherInfo {
            client: ClientInfo {
                id: ClientId(client as u64),
                addr,
            },
            cookie: cookie as u64,
        })
        .collect())
}
