//! The one error type of the object-store contract.
//!
//! Every failure carries an [`ErrorKind`] that callers match on and a [`Subject`] naming the
//! pool, namespace, object, snapshot or key it concerns. Backends map their private errors into
//! it; the command line maps [`ErrorKind`] to an exit status with [`Error::errno`].

use std::fmt;

use crate::types::{ClientId, PoolId, SnapId};

/// What kind of failure happened; the part of an [`Error`] callers match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The subject does not exist (`ENOENT`).
    NotFound,
    /// The subject exists already (`EEXIST`).
    AlreadyExists,
    /// An `assert-version` step saw another version (`ERANGE`/`EOVERFLOW` in RADOS).
    VersionMismatch,
    /// A compare step (`cmpxattr`, `cmpext`) did not hold (`ECANCELED`).
    ComparisonFailed,
    /// The subject is in use: a lock held by someone else, a non-empty namespace (`EBUSY`).
    Busy,
    /// The request is malformed: a bad name, an out-of-range size, a bad snapshot context
    /// (`EINVAL`).
    InvalidArgument,
    /// The backend cannot do this (`EOPNOTSUPP`).
    Unsupported,
    /// The operation did not finish in time (`ETIMEDOUT`).
    TimedOut,
    /// The credentials were refused or lack the rights needed (`EACCES`).
    PermissionDenied,
    /// Stored state is damaged and was not used (`EIO`).
    Corrupt,
    /// The operating system or the backend's storage failed (`EIO`).
    Io,
    /// The other end does not speak the expected protocol (`EPROTO`).
    Protocol,
    /// Nothing listens where the store should be (`ECONNREFUSED`).
    ConnectionRefused,
}

impl ErrorKind {
    /// Returns the `errno` value that Ceph tools use for this kind of failure.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc_errno::ENOENT,
            ErrorKind::AlreadyExists => libc_errno::EEXIST,
            ErrorKind::VersionMismatch => libc_errno::ERANGE,
            ErrorKind::ComparisonFailed => libc_errno::ECANCELED,
            ErrorKind::Busy => libc_errno::EBUSY,
            ErrorKind::InvalidArgument => libc_errno::EINVAL,
            ErrorKind::Unsupported => libc_errno::EOPNOTSUPP,
            ErrorKind::TimedOut => libc_errno::ETIMEDOUT,
            ErrorKind::PermissionDenied => libc_errno::EACCES,
            ErrorKind::Corrupt | ErrorKind::Io => libc_errno::EIO,
            ErrorKind::Protocol => libc_errno::EPROTO,
            ErrorKind::ConnectionRefused => libc_errno::ECONNREFUSED,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::VersionMismatch => "version mismatch",
            ErrorKind::ComparisonFailed => "comparison failed",
            ErrorKind::Busy => "busy",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Io => "i/o error",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::ConnectionRefused => "connection refused",
        }
    }
}

/// Linux `errno` values, kept here so the crate needs no `libc` outside tests.
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ERANGE: i32 = 34;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const ECANCELED: i32 = 125;
}

/// The thing an [`Error`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// The store as a whole (opening it, its metadata database).
    Store,
    /// A pool, by name.
    Pool(String),
    /// A pool, by numeric id.
    PoolId(PoolId),
    /// A namespace inside a pool.
    Namespace {
        /// The pool.
        pool: PoolId,
        /// The namespace name.
        namespace: String,
    },
    /// An object.
    Object {
        /// The pool.
        pool: PoolId,
        /// The namespace (empty for the default one).
        namespace: String,
        /// The object name.
        oid: String,
    },
    /// A self-managed snapshot id of a pool.
    Snapshot {
        /// The pool.
        pool: PoolId,
        /// The snapshot id.
        snap: SnapId,
    },
    /// A key of an object's omap.
    OmapKey {
        /// The object name.
        oid: String,
        /// The key.
        key: String,
    },
    /// An extended attribute of an object.
    Xattr {
        /// The object name.
        oid: String,
        /// The attribute name.
        name: String,
    },
    /// An advisory lock on an object.
    Lock {
        /// The object name.
        oid: String,
        /// The lock name.
        name: String,
    },
    /// A watch, by cookie.
    Watch(u64),
    /// A client session.
    Client(ClientId),
    /// A key of the cluster's config-key store.
    ConfigKey(String),
    /// A path on the local file system.
    Path(std::path::PathBuf),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Store => write!(f, "object store"),
            Subject::Pool(name) => write!(f, "pool '{name}'"),
            Subject::PoolId(id) => write!(f, "pool id {id}"),
            Subject::Namespace { pool, namespace } => {
                write!(f, "namespace '{namespace}' in pool id {pool}")
            }
            Subject::Object {
                pool,
                namespace,
                oid,
            } if namespace.is_empty() => {
                write!(f, "object '{oid}' in pool id {pool}")
            }
            Subject::Object {
                pool,
                namespace,
                oid,
            } => {
                write!(
                    f,
                    "object '{oid}' in pool id {pool} namespace '{namespace}'"
                )
            }
            Subject::Snapshot { pool, snap } => write!(f, "snapshot id {snap} of pool id {pool}"),
            Subject::OmapKey { oid, key } => write!(f, "omap key '{key}' of object '{oid}'"),
            Subject::Xattr { oid, name } => write!(f, "xattr '{name}' of object '{oid}'"),
            Subject::Lock { oid, name } => write!(f, "lock '{name}' on object '{oid}'"),
            Subject::Watch(cookie) => write!(f, "watch {cookie}"),
            Subject::Client(id) => write!(f, "{id}"),
            Subject::ConfigKey(key) => write!(f, "config-key '{key}'"),
            Subject::Path(path) => write!(f, "'{}'", path.display()),
        }
    }
}

/// An object-store failure: a kind, the subject it concerns, and optional detail and cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    subject: Subject,
    detail: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of `kind` about `subject`.
    pub fn new(kind: ErrorKind, subject: Subject) -> Self {
        Error {
            kind,
            subject,
            detail: None,
            source: None,
        }
    }

    /// Adds a short, lowercase explanation shown after the kind.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A copy of this error for another caller of the same failed operation: same kind and
    /// subject, with the whole message (cause included) as its detail.
    pub fn duplicate(&self) -> Self {
        Error::new(self.kind, self.subject.clone()).with_detail(self.to_string())
    }

    /// Creates a [`ErrorKind::NotFound`] error.
    pub fn not_found(subject: Subject) -> Self {
        Error::new(ErrorKind::NotFound, subject)
    }

    /// Creates an [`ErrorKind::InvalidArgument`] error with an explanation.
    pub fn invalid(subject: Subject, detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, subject).with_detail(detail)
    }

    /// Creates an [`ErrorKind::Io`] error from an operating-system error.
    pub fn io(subject: Subject, source: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, subject).with_source(source)
    }

    /// Returns the kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns what the failure concerns.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Returns the explanation, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Returns the `errno` value Ceph tools would report.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.kind.describe())?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The result type of the object-store contract.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_subject_kind_and_detail() {
        let err = Error::new(
            ErrorKind::VersionMismatch,
            Subject::Object {
                pool: PoolId(3),
                namespace: String::new(),
                oid: "a".into(),
            },
        )
        .with_detail("expected 5, found 7");
        assert_eq!(
            err.to_string(),
            "object 'a' in pool id 3: version mismatch (expected 5, found 7)"
        );
        assert_eq!(err.errno(), 34);
    }

    #[test]
    fn errno_follows_ceph_conventions() {
        assert_eq!(ErrorKind::NotFound.errno(), 2);
        assert_eq!(ErrorKind::Busy.errno(), 16);
        assert_eq!(ErrorKind::AlreadyExists.errno(), 17);
        assert_eq!(ErrorKind::InvalidArgument.errno(), 22);
        assert_eq!(ErrorKind::Unsupported.errno(), 95);
    }
}
