//! Object rows as stored in the `objects` table, and how to load them.

use rbdx_objstore::snapset::CloneMeta;
use rusqlite::{Connection, OptionalExtension, params};

use crate::db;

/// Identifies an object: pool id, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjKey {
    pub(crate) pool: u64,
    pub(crate) ns: String,
    pub(crate) name: String,
}

impl ObjKey {
    /// Returns the stripe (byte of the stripe-lock file) that serialises changes to the object.
    pub(crate) fn stripe(&self) -> u64 {
        const STRIPES: u64 = 1 << 16;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&self.pool.to_le_bytes());
        feed(self.ns.as_bytes());
        feed(&[0]);
        feed(self.name.as_bytes());
        hash % STRIPES
    }
}

/// The head row of an object. A head that is not `present` is a whiteout kept for clones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadRow {
    pub(crate) id: i64,
    pub(crate) present: bool,
    pub(crate) size: u64,
    pub(crate) version: u64,
    pub(crate) mtime: i64,
    pub(crate) file: Option<u64>,
    pub(crate) seq: u64,
    /// The encoded redo intent of the last in-place change, until it is known to be applied.
    pub(crate) intent: Option<Vec<u8>>,
}

/// A clone row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloneRow {
    pub(crate) id: i64,
    pub(crate) meta: CloneMeta,
    pub(crate) file: Option<u64>,
    pub(crate) version: u64,
    pub(crate) mtime: i64,
}

const HEAD_COLUMNS: &str = "id, present, size, version, mtime, file, seq, intent";

fn head_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeadRow> {
    Ok(HeadRow {
        id: r.get(0)?,
        present: r.get::<_, i64>(1)? != 0,
        size: r.get::<_, i64>(2)? as u64,
        version: r.get::<_, i64>(3)? as u64,
        mtime: r.get(4)?,
        file: r.get::<_, Option<i64>>(5)?.map(|f| f as u64),
        seq: r.get::<_, i64>(6)? as u64,
        intent: r.get(7)?,
    })
}

/// Loads the head row of `key`, if there is one.
pub(crate) fn load_head(conn: &Connection, key: &ObjKey) -> rusqlite::Result<Option<HeadRow>> {
    let sql = format!(
        "SELECT {HEAD_COLUMNS} FROM objects WHERE pool = ?1 AND ns = ?2 AND name = ?3 AND snap = 0"
    );
    conn.prepare_cached(&sql)?
        .query_row(params![key.pool as i64, key.ns, key.name], head_from_row)
        .optional()
}

/// Loads the clones of `key` in increasing id order.
pub(crate) fn load_clones(conn: &Connection, key: &ObjKey) -> rusqlite::Result<Vec<CloneRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, snap, size, version, mtime, file, snaps, overlap FROM objects
         WHERE pool = ?1 AND ns = ?2 AND name = ?3 AND snap > 0 ORDER BY snap",
    )?;
    let rows = stmt.query_map(params![key.pool as i64, key.ns, key.name], |r| {
        Ok(CloneRow {
            id: r.get(0)?,
            meta: CloneMeta {
                id: rbdx_objstore::SnapId(r.get::<_, i64>(1)? as u64),
                size: r.get::<_, i64>(2)? as u64,
                snaps: db::decode_snaps(&r.get::<_, Vec<u8>>(6)?),
                overlap: db::decode_extents(&r.get::<_, Vec<u8>>(7)?),
            },
            version: r.get::<_, i64>(3)? as u64,
            mtime: r.get(4)?,
            file: r.get::<_, Option<i64>>(5)?.map(|f| f as u64),
        })
    })?;
    rows.collect()
}

/// Loads the head and the clones of `key` (increasing id order) with one query.
pub(crate) fn load_object(
    conn: &Connection,
    key: &ObjKey,
) -> rusqlite::Result<(Option<HeadRow>, Vec<CloneRow>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, snap, present, size, version, mtime, file, seq, snaps, overlap, intent FROM objects
         WHERE pool = ?1 AND ns = ?2 AND name = ?3 ORDER BY snap",
    )?;
    let mut rows = stmt.query(params![key.pool as i64, key.ns, key.name])?;
    let mut head = None;
    let mut clones = Vec::new();
    while let Some(r) = rows.next()? {
        let snap = r.get::<_, i64>(1)? as u64;
        let id = r.get(0)?;
        let size = r.get::<_, i64>(3)? as u64;
        let version = r.get::<_, i64>(4)? as u64;
        let mtime = r.get(5)?;
        let file = r.get::<_, Option<i64>>(6)?.map(|f| f as u64);
        if snap == 0 {
            head = Some(HeadRow {
                id,
                present: r.get::<_, i64>(2)? != 0,
                size,
                version,
                mtime,
                file,
                seq: r.get::<_, i64>(7)? as u64,
                intent: r.get(10)?,
            });
        } else {
            let snaps: Option<Vec<u8>> = r.get(8)?;
            let overlap: Option<Vec<u8>> = r.get(9)?;
            clones.push(CloneRow {
                id,
                meta: CloneMeta {
                    id: rbdx_objstore::SnapId(snap),
                    size,
                    snaps: db::decode_snaps(&snaps.unwrap_or_default()),
                    overlap: db::decode_extents(&overlap.unwrap_or_default()),
                },
                version,
                mtime,
                file,
            });
        }
    }
    Ok((head, clones))
}

/// Loads the key of an object row.
pub(crate) fn load_key(conn: &Connection, id: i64) -> rusqlite::Result<Option<ObjKey>> {
    conn.prepare_cached("SELECT pool, ns, name FROM objects WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(ObjKey {
                pool: r.get::<_, i64>(0)? as u64,
                ns: r.get(1)?,
                name: r.get(2)?,
            })
        })
        .optional()
}

/// Returns true if the pool exists and, for a named namespace, the namespace too. `Err(true)`
/// means the pool is missing, `Err(false)` the namespace.
pub(crate) fn check_pool_ns(
    conn: &Connection,
    pool: u64,
    ns: &str,
) -> rusqlite::Result<Result<(), bool>> {
    let pool_exists = conn
        .prepare_cached("SELECT 1 FROM pools WHERE id = ?1")?
        .exists([pool as i64])?;
    if !pool_exists {
        return Ok(Err(true));
    }
    if ns.is_empty() {
        return Ok(Ok(()));
    }
    let ns_exists = conn
        .prepare_cached("SELECT 1 FROM namespaces WHERE pool = ?1 AND name = ?2")?
        .exists(params![pool as i64, ns])?;
    Ok(if ns_exists { Ok(()) } else { Err(false) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_spread_and_are_stable() {
        let a = ObjKey {
            pool: 1,
            ns: String::new(),
            name: "rbd_data.1.0".into(),
        };
        let b = ObjKey {
            pool: 1,
            ns: String::new(),
            name: "rbd_data.1.1".into(),
        };
        assert_eq!(a.stripe(), a.clone().stripe());
        assert_ne!(a.stripe(), b.stripe());
        assert!(a.stripe() < 1 << 16);
    }
}
