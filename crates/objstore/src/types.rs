//! Identifiers, I/O contexts, snapshot contexts and the small value types of the contract.

use std::fmt;
use std::time::SystemTime;

/// The numeric id of a pool, unique within a cluster and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId(pub u64);

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A self-managed snapshot id, allocated per pool in increasing order starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapId(pub u64);

impl fmt::Display for SnapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A pool's name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// The numeric id.
    pub id: PoolId,
    /// The name.
    pub name: String,
}

/// Where object operations go: a pool and a namespace inside it (empty for the default one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IoCtx {
    pool: PoolId,
    namespace: String,
}

impl IoCtx {
    /// Returns the I/O context of the default namespace of `pool`.
    pub fn new(pool: PoolId) -> Self {
        IoCtx {
            pool,
            namespace: String::new(),
        }
    }

    /// Returns the I/O context of `namespace` in `pool`.
    pub fn with_namespace(pool: PoolId, namespace: impl Into<String>) -> Self {
        IoCtx {
            pool,
            namespace: namespace.into(),
        }
    }

    /// Returns the pool.
    pub fn pool(&self) -> PoolId {
        self.pool
    }

    /// Returns the namespace; empty for the default namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Returns the error subject naming `oid` in this context.
    pub fn object_subject(&self, oid: &str) -> crate::Subject {
        crate::Subject::Object {
            pool: self.pool,
            namespace: self.namespace.clone(),
            oid: oid.to_owned(),
        }
    }

    /// Returns the error subject naming this context's namespace.
    pub fn namespace_subject(&self) -> crate::Subject {
        crate::Subject::Namespace {
            pool: self.pool,
            namespace: self.namespace.clone(),
        }
    }
}

/// The snapshot context carried by every write, as in RADOS: the newest snapshot sequence the
/// writer knows of and the live snapshot ids, newest first.
///
/// When a write reaches an object whose snapshot sequence is older than `seq`, the store first
/// keeps a clone of the object for the snapshots taken since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapContext {
    /// The newest snapshot sequence number known to the writer.
    pub seq: u64,
    /// The snapshot ids, in decreasing order; none is greater than `seq`.
    pub snaps: Vec<SnapId>,
}

impl SnapContext {
    /// Returns the empty context: no snapshots, so no clones are kept.
    pub fn empty() -> Self {
        SnapContext::default()
    }

    /// Returns a context with the given snapshot ids (any order) and `seq` set to the newest.
    pub fn from_snaps(snaps: impl IntoIterator<Item = SnapId>) -> Self {
        let mut snaps: Vec<SnapId> = snaps.into_iter().collect();
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        snaps.dedup();
        let seq = snaps.first().map_or(0, |s| s.0);
        SnapContext { seq, snaps }
    }

    /// Checks that the snapshot ids are strictly decreasing and none exceeds `seq`.
    pub fn is_valid(&self) -> bool {
        self.snaps.first().is_none_or(|s| s.0 <= self.seq)
            && self.snaps.windows(2).all(|w| w[0] > w[1])
            && self.snaps.iter().all(|s| s.0 > 0)
    }
}

/// Size, modification time and version of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// Logical size in bytes.
    pub size: u64,
    /// Time of the last modification.
    pub mtime: SystemTime,
    /// Version after the last modification.
    pub version: u64,
}

/// The id of a client session (one per open store handle), shown as `client.<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client.{}", self.0)
    }
}

/// A client session's id and an address a person can read (host, process id, program).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    /// The session id.
    pub id: ClientId,
    /// Where the client runs, e.g. `myhost/pid 4242 (rbdx)`.
    pub addr: String,
}

impl fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.addr)
    }
}

/// Options of [`crate::ObjectStore::list_objects_opts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only names starting with this prefix.
    pub prefix: String,
    /// Where to continue: the `next` cursor of the previous page.
    pub cursor: Option<String>,
    /// The largest number of names in one page; 0 means the backend's default.
    pub max: usize,
}

impl ListOptions {
    /// Lists names starting with `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Continues after the page that returned `cursor`.
    pub fn with_cursor(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Limits the page size.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

/// One page of an object listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Object names in this page.
    pub names: Vec<String>,
    /// The cursor of the next page, or `None` at the end.
    pub next: Option<String>,
}

/// Size limits of the contract; every backend enforces them the same way.
pub mod limits {
    /// Longest pool name, in bytes.
    pub const MAX_POOL_NAME: usize = 255;
    /// Longest namespace name, in bytes.
    pub const MAX_NAMESPACE: usize = 255;
    /// Longest object name, in bytes (RADOS' `osd_max_object_name_len`).
    pub const MAX_OBJECT_NAME: usize = 2048;
    /// Largest object, in bytes (RADOS' `osd_max_object_size`).
    pub const MAX_OBJECT_SIZE: u64 = 128 << 20;
    /// Longest omap key, in bytes.
    pub const MAX_OMAP_KEY: usize = 4096;
    /// Longest xattr name, in bytes (RADOS' `osd_max_attr_name_len`).
    pub const MAX_XATTR_NAME: usize = 100;
    /// Largest xattr value, in bytes.
    pub const MAX_XATTR_VALUE: usize = 64 << 10;
    /// Longest config-key name, in bytes.
    pub const MAX_CONFIG_KEY: usize = 1024;
    /// Largest config-key value, in bytes (Ceph's `mon_config_key_max_entry_size`).
    pub const MAX_CONFIG_VALUE: usize = 64 << 10;
    /// Largest notify payload or acknowledgement, in bytes.
    pub const MAX_NOTIFY_PAYLOAD: usize = 16 << 20;
    /// Longest lock name, cookie, tag or description, in bytes.
    pub const MAX_LOCK_FIELD: usize = 1024;
    /// Default and largest page size of listings and omap reads.
    pub const MAX_LIST_PAGE: usize = 1024;

    /// Returns the page size to use for a request of `requested` entries (0: the default).
    pub fn page_len(requested: usize) -> usize {
        match requested {
            0 => MAX_LIST_PAGE,
            n => n.min(MAX_LIST_PAGE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snap_context_from_snaps_sorts_newest_first() {
        let snapc = SnapContext::from_snaps([SnapId(2), SnapId(9), SnapId(4)]);
        assert_eq!(snapc.seq, 9);
        assert_eq!(snapc.snaps, vec![SnapId(9), SnapId(4), SnapId(2)]);
        assert!(snapc.is_valid());
    }

    #[test]
    fn snap_context_with_snap_above_seq_is_invalid() {
        let snapc = SnapContext {
            seq: 3,
            snaps: vec![SnapId(4)],
        };
        assert!(!snapc.is_valid());
        let unordered = SnapContext {
            seq: 9,
            snaps: vec![SnapId(2), SnapId(4)],
        };
        assert!(!unordered.is_valid());
    }
}
