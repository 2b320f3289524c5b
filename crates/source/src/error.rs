//! The source layer's error: a kind, a one-line message naming the source, key or offset, and
//! the errno `rbd` would exit with.

use std::fmt;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The spec is not valid JSON or not an object (EBADMSG).
    BadMessage,
    /// A key is missing, unknown, of the wrong type, or the input is malformed (EINVAL).
    Invalid,
    /// No driver of that name is registered (ENOSYS).
    UnknownDriver,
    /// The source lacks something that was asked for: file, URL, snapshot (ENOENT).
    NotFound,
    /// A feature of the source is not supported (EOPNOTSUPP).
    Unsupported,
    /// Access was refused: credentials, a backing file outside the allowed locations (EACCES).
    PermissionDenied,
    /// The source changed while it was being read (ESTALE).
    Changed,
    /// Reading failed (EIO).
    Io,
}

impl ErrorKind {
    /// Returns the errno of this kind.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::BadMessage => 74,
            ErrorKind::Invalid => 22,
            ErrorKind::UnknownDriver => 38,
            ErrorKind::NotFound => 2,
            ErrorKind::Unsupported => 95,
            ErrorKind::PermissionDenied => 13,
            ErrorKind::Changed => 116,
            ErrorKind::Io => 5,
        }
    }
}

/// A failed source operation.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// Creates an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An invalid-input error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, message)
    }

    /// An unsupported-feature error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            message: what.into(),
            source: Some(Box::new(e)),
        }
    }

    /// Attaches the error that caused this one.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Returns the kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns the errno `rbd` would exit with.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
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

/// The result of a source operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
