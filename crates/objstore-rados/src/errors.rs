//! Mapping librados' negative errno results to the contract's error kinds.

use rbdx_objstore::{Error, ErrorKind, Subject};

/// librados' highest errno; a `cmpext` mismatch at offset `n` returns `-(MAX_ERRNO + n)`.
const MAX_ERRNO: i32 = 4095;

/// Turns a negative librados result into an error about `subject`.
pub(crate) fn from_errno(r: i32, subject: Subject) -> Error {
    let errno = -r;
    if errno >= MAX_ERRNO {
        return Error::new(ErrorKind::ComparisonFailed, subject)
            .with_detail(format!("data differs at offset {}", errno - MAX_ERRNO));
    }
    let kind = match errno {
        libc::ENOENT | libc::ENODATA => ErrorKind::NotFound,
        libc::EEXIST => ErrorKind::AlreadyExists,
        libc::ERANGE | libc::EOVERFLOW => ErrorKind::VersionMismatch,
        libc::ECANCELED => ErrorKind::ComparisonFailed,
        libc::EBUSY => ErrorKind::Busy,
        libc::EINVAL | libc::EFBIG | libc::E2BIG | libc::ENAMETOOLONG => ErrorKind::InvalidArgument,
        libc::EOPNOTSUPP => ErrorKind::Unsupported,
        libc::ETIMEDOUT => ErrorKind::TimedOut,
        libc::EACCES | libc::EPERM => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    let error = Error::new(kind, subject);
    if kind == ErrorKind::Io {
        error.with_detail(std::io::Error::from_raw_os_error(errno).to_string())
    } else {
        error
    }
}

/// Checks a librados result.
pub(crate) fn check(r: i32, subject: impl FnOnce() -> Subject) -> Result<i32, Error> {
    if r < 0 {
        Err(from_errno(r, subject()))
    } else {
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_kinds() {
        assert_eq!(
            from_errno(-libc::ENOENT, Subject::Store).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            from_errno(-libc::EOVERFLOW, Subject::Store).kind(),
            ErrorKind::VersionMismatch
        );
        let cmp = from_errno(-(MAX_ERRNO + 7), Subject::Store);
        assert_eq!(cmp.kind(), ErrorKind::ComparisonFailed);
        assert!(cmp.to_string().contains("offset 7"));
        let first = from_errno(-MAX_ERRNO, Subject::Store);
        assert!(first.to_string().contains("offset 0"), "{first}");
    }
}
