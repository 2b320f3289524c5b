//! The metadata database: schema, connection settings, and small encoders for the values the
//! schema stores as blobs.
//!
//! SQLite in WAL mode, through `rusqlite` with its bundled library, is the metadata store
//! because several processes must open one store at once (a command next to a long-running
//! server): WAL lets readers proceed while one writer commits, and SQLite coordinates writers
//! of different processes with file locks. Embedded stores such as redb or sled allow one
//! process per database file, which would force a server process on every user.
//!
//! `synchronous = NORMAL`: a commit survives the death of the process at once (it is in the
//! operating system's cache), and survives power loss after the next WAL sync, which every
//! `flush` forces.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbdx_objstore::{Error, ErrorKind, Extent, ExtentSet, SnapId, Subject};
use rusqlite::{Connection, OpenFlags};

/// The schema version this code reads and writes. Never reuse a number.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// SQLite page size: large enough that a row with a 4 KiB intent fits in its page, small
/// enough that rewriting that page costs little more than the intent.
const PAGE_SIZE: i64 = 8192;

/// Table definitions. The `objects` table holds heads (`snap = 0`) and clones (`snap` = clone
/// id); a head carries the redo intent of its last in-place change until it is known to be
/// applied; omap, xattrs, locks and watches hang off an object row id. `pools.removed_version`
/// is the highest version of an object removed without a trace (or of a change that left an
/// absent object absent), so a recreated object starts above it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pools (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    snap_seq INTEGER NOT NULL DEFAULT 0,
    removed_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS removed_snaps (
    pool INTEGER NOT NULL, snap INTEGER NOT NULL, PRIMARY KEY (pool, snap)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS namespaces (
    pool INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (pool, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS config_keys (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY,
    pool INTEGER NOT NULL,
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    snap INTEGER NOT NULL,
    present INTEGER NOT NULL,
    size INTEGER NOT NULL,
    version INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    file INTEGER,
    seq INTEGER NOT NULL DEFAULT 0,
    snaps BLOB,
    overlap BLOB,
    intent BLOB,
    UNIQUE (pool, ns, name, snap)
);
CREATE INDEX IF NOT EXISTS objects_clones ON objects (pool, snap);
CREATE INDEX IF NOT EXISTS objects_file ON objects (file);
CREATE TABLE IF NOT EXISTS omap (
    obj INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (obj, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS xattrs (
    obj INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (obj, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    addr TEXT NOT NULL,
    started INTEGER NOT NULL,
    token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_ranges (
    client INTEGER NOT NULL,
    pool INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (client, pool, lo)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS garbage (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pool INTEGER NOT NULL, file INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS garbage_file ON garbage (file);
CREATE TABLE IF NOT EXISTS watchers (
    cookie INTEGER PRIMARY KEY AUTOINCREMENT,
    obj INTEGER NOT NULL,
    client INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS watchers_obj ON watchers (obj);
CREATE TABLE IF NOT EXISTS locks (
    obj INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, tag TEXT NOT NULL,
    PRIMARY KEY (obj, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lock_holds (
    obj INTEGER NOT NULL,
    name TEXT NOT NULL,
    client INTEGER NOT NULL,
    cookie TEXT NOT NULL,
    addr TEXT NOT NULL,
    description TEXT NOT NULL,
    expiration INTEGER,
    PRIMARY KEY (obj, name, client, cookie)
) WITHOUT ROWID;
";

/// Maps a SQLite failure to the contract's error, naming the store.
pub(crate) fn db_error(e: rusqlite::Error) -> Error {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            ErrorKind::TimedOut
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            ErrorKind::Corrupt
        }
        _ => ErrorKind::Io,
    };
    Error::new(kind, Subject::Store)
        .with_detail("metadata database")
        .with_source(e)
}

/// Opens a connection with the store's settings.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
    // Plans must not depend on bound values: otherwise SQLite re-prepares statements whenever
    // a binding changes, which cost a fifth of the writer's time on small writes.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Creates the schema if needed and checks its version. Returns the store id.
pub(crate) fn init(
    conn: &mut Connection,
    new_fsid: &str,
) -> rusqlite::Result<Result<String, String>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let version: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .ok();
    match version {
        None => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION.to_string()],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('fsid', ?1)",
                [new_fsid],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('next_file', '1')",
                [],
            )?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Ok(Err(format!(
                "store schema version {v} is not supported (this build reads version {SCHEMA_VERSION})"
            )));
        }
    }
    let fsid: String = tx.query_row("SELECT value FROM meta WHERE key = 'fsid'", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(Ok(fsid))
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64)
}

/// Encodes snapshot ids as little-endian u64s.
pub(crate) fn encode_snaps(snaps: &[SnapId]) -> Vec<u8> {
    snaps.iter().flat_map(|s| s.0.to_le_bytes()).collect()
}

/// Decodes [`encode_snaps`]'s output.
pub(crate) fn decode_snaps(bytes: &[u8]) -> Vec<SnapId> {
    bytes
        .chunks_exact(8)
        .map(|c| SnapId(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect()
}

/// Encodes extents as pairs of little-endian u64s.
pub(crate) fn encode_extents(set: &ExtentSet) -> Vec<u8> {
    set.extents()
        .iter()
        .flat_map(|e| [e.offset.to_le_bytes(), e.length.to_le_bytes()])
        .flatten()
        .collect()
}

/// Decodes [`encode_extents`]'s output.
pub(crate) fn decode_extents(bytes: &[u8]) -> ExtentSet {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let offset = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
            let length = u64::from_le_bytes(c[8..].try_into().unwrap_or([0; 8]));
            Extent::new(offset, length)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_encodings_round_trip() {
        let snaps = vec![SnapId(3), SnapId(9)];
        assert_eq!(decode_snaps(&encode_snaps(&snaps)), snaps);
        let set = ExtentSet::from_extents([Extent::new(0, 5), Extent::new(100, 7)]);
        assert_eq!(decode_extents(&encode_extents(&set)), set);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("m.db")).unwrap();
        assert!(init(&mut conn, "a").unwrap().is_ok());
        conn.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        let refused = init(&mut conn, "a").unwrap();
        assert!(refused.unwrap_err().contains("version 99"));
    }
}
