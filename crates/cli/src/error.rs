//! Command-line errors: one line for the user and an exit status following `rbd`'s errno
//! convention (2 not found, 16 busy, 17 exists, 22 invalid, 95 unsupported).

use std::fmt;

/// A failed command.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    /// An invalid-argument error (exit status 22).
    pub fn invalid(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 22,
        }
    }

    /// An operating-system error while doing `what`.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        let code = CliError::from(std::io::Error::new(e.kind(), "")).code;
        CliError {
            message: format!("{what}: {e}"),
            code: e
                .raw_os_error()
                .and_then(|n| u8::try_from(n).ok())
                .unwrap_or(code),
        }
    }

    /// An error whose message is `e` followed by its causes, exiting with `errno`.
    fn with_causes(e: &dyn std::error::Error, errno: i32) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        CliError {
            message,
            code: u8::try_from(errno).unwrap_or(1),
        }
    }

    /// An error with an explicit exit status.
    pub fn with_code(message: impl Into<String>, code: u8) -> Self {
        CliError {
            message: message.into(),
            code,
        }
    }

    /// Returns the process exit status.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<rbdx_objstore::Error> for CliError {
    fn from(e: rbdx_objstore::Error) -> Self {
        CliError::with_causes(&e, e.errno())
    }
}

impl From<rbdx_image::Error> for CliError {
    fn from(e: rbdx_image::Error) -> Self {
        CliError::with_causes(&e, e.errno())
    }
}

impl From<rbdx_source::Error> for CliError {
    fn from(e: rbdx_source::Error) -> Self {
        CliError::with_causes(&e, e.errno())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match (e.raw_os_error(), e.kind()) {
            (Some(errno), _) => u8::try_from(errno).unwrap_or(5),
            (None, K::NotFound) => 2,
            (None, K::PermissionDenied) => 13,
            (None, K::AlreadyExists) => 17,
            (None, K::InvalidInput | K::InvalidData) => 22,
            (None, _) => 5,
        };
        CliError {
            message: e.to_string(),
            code,
        }
    }
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
