//! The image layer's error: a kind callers can match, a one-line message naming what failed,
//! and the errno `rbd` would exit with.

use std::fmt;

/// What went wrong, as a caller needs to tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An image, snapshot, pool or key does not exist (ENOENT).
    NotFound,
    /// The name is taken (EEXIST).
    AlreadyExists,
    /// The image is in use: watchers, a lock held by a live client, a protected snapshot,
    /// children (EBUSY).
    Busy,
    /// The image still has snapshots (ENOTEMPTY).
    NotEmpty,
    /// Bad argument: size, layout, name, range (EINVAL).
    InvalidArgument,
    /// Not supported by this image or build (EOPNOTSUPP).
    Unsupported,
    /// The image is opened read-only or at a snapshot (EROFS).
    ReadOnly,
    /// A compare-and-write found other data (EILSEQ).
    Mismatch,
    /// The snapshot limit is reached (EDQUOT).
    QuotaExceeded,
    /// The stored metadata cannot be understood (EIO).
    Corrupt,
    /// The object store failed; its errno is kept.
    Store(i32),
}

impl ErrorKind {
    /// Returns the errno of this kind, as `rbd` exits with.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => 2,
            ErrorKind::AlreadyExists => 17,
            ErrorKind::Busy => 16,
            ErrorKind::NotEmpty => 39,
            ErrorKind::InvalidArgument => 22,
            ErrorKind::Unsupported => 95,
            ErrorKind::ReadOnly => 30,
            ErrorKind::Mismatch => 84,
            ErrorKind::QuotaExceeded => 122,
            ErrorKind::Corrupt => 5,
            ErrorKind::Store(errno) => errno,
        }
    }
}

/// A failed image operation.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<rbdx_objstore::Error>>,
}

impl Error {
    /// Creates an error of `kind` with a message naming what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An invalid-argument error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// A not-found error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// A busy error.
    pub fn busy(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Busy, message)
    }

    /// A corrupt-metadata error.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Wraps a store error with what the image layer was doing.
    pub fn store(context: impl Into<String>, e: rbdx_objstore::Error) -> Self {
        let kind = match e.kind() {
            rbdx_objstore::ErrorKind::NotFound => ErrorKind::NotFound,
            rbdx_objstore::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            rbdx_objstore::ErrorKind::Busy => ErrorKind::Busy,
            rbdx_objstore::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            rbdx_objstore::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Store(e.errno()),
        };
        Error {
            kind,
            message: context.into(),
            source: Some(Box::new(e)),
        }
    }

    /// Returns the kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns the errno `rbd` would exit with.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// Returns the store error behind this one, if any.
    pub fn store_error(&self) -> Option<&rbdx_objstore::Error> {
        self.source.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The result of an image operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to store results.
pub(crate) trait StoreContext<T> {
    /// Wraps a store error with `what` was being done.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> StoreContext<T> for rbdx_objstore::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::store(what(), e))
    }
}
