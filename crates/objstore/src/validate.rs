//! Checks of names and sizes shared by every backend, so that bad input gets the same typed
//! error everywhere and is refused before anything changes.

use crate::error::{Error, Result, Subject};
use crate::op::{ReadOp, ReadStep, WriteOp, WriteStep};
use crate::types::{IoCtx, SnapContext, limits};

fn check_name(subject: impl Fn() -> Subject, name: &str, max: usize, what: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(subject(), format!("{what} is empty")));
    }
    if name.len() > max {
        return Err(Error::invalid(
            subject(),
            format!("{what} is {} bytes long, the limit is {max}", name.len()),
        ));
    }
    if name.contains('\0') {
        return Err(Error::invalid(
            subject(),
            format!("{what} contains a NUL byte"),
        ));
    }
    Ok(())
}

/// Checks a pool name: 1 to 255 bytes, no `/`, no NUL.
pub fn pool_name(name: &str) -> Result<()> {
    let subject = || Subject::Pool(name.to_owned());
    check_name(subject, name, limits::MAX_POOL_NAME, "pool name")?;
    if name.contains('/') {
        return Err(Error::invalid(subject(), "pool name contains '/'"));
    }
    Ok(())
}

/// Checks a namespace name given to create or remove: 1 to 255 bytes, no `/`, no NUL.
pub fn namespace_name(io: &IoCtx) -> Result<()> {
    let subject = || io.namespace_subject();
    check_name(
        subject,
        io.namespace(),
        limits::MAX_NAMESPACE,
        "namespace name",
    )?;
    if io.namespace().contains('/') {
        return Err(Error::invalid(subject(), "namespace name contains '/'"));
    }
    Ok(())
}

/// Checks the namespace of an I/O context: empty (the default one) or a valid name.
pub fn io_ctx(io: &IoCtx) -> Result<()> {
    if io.namespace().is_empty() {
        Ok(())
    } else {
        namespace_name(io)
    }
}

/// Checks an object name: 1 to 2048 bytes, no NUL.
pub fn object_name(io: &IoCtx, oid: &str) -> Result<()> {
    io_ctx(io)?;
    check_name(
        || io.object_subject(oid),
        oid,
        limits::MAX_OBJECT_NAME,
        "object name",
    )
}

/// Checks a config-key name and, if given, its value size.
pub fn config_key(key: &str, value: Option<&[u8]>) -> Result<()> {
    let subject = || Subject::ConfigKey(key.to_owned());
    check_name(subject, key, limits::MAX_CONFIG_KEY, "config-key name")?;
    if let Some(value) = value
        && value.len() > limits::MAX_CONFIG_VALUE
    {
        return Err(Error::invalid(
            subject(),
            format!(
                "value is {} bytes, the limit is {}",
                value.len(),
                limits::MAX_CONFIG_VALUE
            ),
        ));
    }
    Ok(())
}

/// Checks a snapshot context.
pub fn snap_context(io: &IoCtx, snapc: &SnapContext) -> Result<()> {
    if !snapc.is_valid() {
        return Err(Error::invalid(
            Subject::PoolId(io.pool()),
            format!(
                "snapshot context seq {} with snaps {:?} is not newest-first with seq >= snaps",
                snapc.seq,
                snapc.snaps.iter().map(|s| s.0).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(())
}

fn check_extent(io: &IoCtx, oid: &str, offset: u64, length: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= limits::MAX_OBJECT_SIZE => Ok(()),
        _ => Err(Error::invalid(
            io.object_subject(oid),
            format!(
                "range {offset}+{length} is past the object size limit of {} bytes",
                limits::MAX_OBJECT_SIZE
            ),
        )),
    }
}

fn check_omap_key(io: &IoCtx, oid: &str, key: &str) -> Result<()> {
    if key.len() > limits::MAX_OMAP_KEY {
        return Err(Error::invalid(
            io.object_subject(oid),
            format!(
                "omap key is {} bytes, the limit is {}",
                key.len(),
                limits::MAX_OMAP_KEY
            ),
        ));
    }
    if key.contains('\0') {
        return Err(Error::invalid(
            io.object_subject(oid),
            "omap key contains a NUL byte",
        ));
    }
    Ok(())
}

fn check_xattr_name(io: &IoCtx, oid: &str, name: &str) -> Result<()> {
    check_name(
        || io.object_subject(oid),
        name,
        limits::MAX_XATTR_NAME,
        "xattr name",
    )
}

/// Checks every step of a write batch; nothing is applied if this fails.
pub fn write_op(io: &IoCtx, oid: &str, op: &WriteOp, snapc: &SnapContext) -> Result<()> {
    object_name(io, oid)?;
    snap_context(io, snapc)?;
    for step in op.steps() {
        match step {
            WriteStep::Write { offset, data } => check_extent(io, oid, *offset, data.len() as u64)?,
            WriteStep::WriteFull(data) => check_extent(io, oid, 0, data.len() as u64)?,
            WriteStep::CmpExt { offset, data } => {
                check_extent(io, oid, *offset, data.len() as u64)?
            }
            WriteStep::Zero { offset, length } => {
                offset.checked_add(*length).ok_or_else(|| {
                    Error::invalid(io.object_subject(oid), "zero range overflows")
                })?;
            }
            WriteStep::Truncate(size) => check_extent(io, oid, *size, 0)?,
            WriteStep::OmapSet(map) => {
                for key in map.keys() {
                    check_omap_key(io, oid, key)?;
                }
            }
            WriteStep::OmapRemove(keys) => {
                for key in keys {
                    check_omap_key(io, oid, key)?;
                }
            }
            WriteStep::XattrSet { name, value } => {
                check_xattr_name(io, oid, name)?;
                if value.len() > limits::MAX_XATTR_VALUE {
                    return Err(Error::invalid(
                        io.object_subject(oid),
                        format!(
                            "xattr '{name}' value is {} bytes, the limit is {}",
                            value.len(),
                            limits::MAX_XATTR_VALUE
                        ),
                    ));
                }
            }
            WriteStep::XattrRemove(name) | WriteStep::CmpXattr { name, .. } => {
                check_xattr_name(io, oid, name)?
            }
            WriteStep::AssertExists
            | WriteStep::Create { .. }
            | WriteStep::AssertVersion(_)
            | WriteStep::Remove
            | WriteStep::OmapClear => {}
        }
    }
    Ok(())
}

/// Checks every step of a compound read.
pub fn read_op(io: &IoCtx, oid: &str, op: &ReadOp) -> Result<()> {
    object_name(io, oid)?;
    for step in op.steps() {
        match step {
            ReadStep::GetXattr(name) => check_xattr_name(io, oid, name)?,
            ReadStep::OmapGetByKeys(keys) => {
                for key in keys {
                    check_omap_key(io, oid, key)?;
                }
            }
            ReadStep::Read { offset, length }
            | ReadStep::SparseRead { offset, length }
            | ReadStep::Extents { offset, length } => {
                if offset.checked_add(length.unwrap_or(0)).is_none() {
                    return Err(Error::invalid(
                        io.object_subject(oid),
                        "read range overflows",
                    ));
                }
            }
            ReadStep::Checksum {
                offset,
                length,
                chunk,
            } => {
                let fits = offset
                    .checked_add(*length)
                    .is_some_and(|end| end <= limits::MAX_OBJECT_SIZE);
                if !fits || *chunk == 0 || length.div_ceil(*chunk) > crate::digest::MAX_CHUNKS {
                    return Err(Error::invalid(
                        io.object_subject(oid),
                        "checksum range must lie within the largest object, in at most 65536 \
                         chunks of at least one byte",
                    ));
                }
            }
            ReadStep::Stat | ReadStep::OmapGetVals { .. } | ReadStep::GetXattrs => {}
        }
    }
    Ok(())
}

/// Checks the fields of a lock request or lookup.
pub fn lock_field(io: &IoCtx, oid: &str, field: &str, value: &str) -> Result<()> {
    if value.len() > limits::MAX_LOCK_FIELD {
        return Err(Error::invalid(
            io.object_subject(oid),
            format!(
                "lock {field} is {} bytes, the limit is {}",
                value.len(),
                limits::MAX_LOCK_FIELD
            ),
        ));
    }
    Ok(())
}

/// Checks a lock name (non-empty, bounded).
pub fn lock_name(io: &IoCtx, oid: &str, name: &str) -> Result<()> {
    object_name(io, oid)?;
    if name.is_empty() {
        return Err(Error::invalid(io.object_subject(oid), "lock name is empty"));
    }
    lock_field(io, oid, "name", name)
}

/// Checks every field of a lock request.
pub fn lock_options(io: &IoCtx, oid: &str, opts: &crate::LockOptions) -> Result<()> {
    lock_name(io, oid, &opts.name)?;
    for (field, value) in [
        ("cookie", &opts.cookie),
        ("tag", &opts.tag),
        ("description", &opts.description),
    ] {
        lock_field(io, oid, field, value)?;
    }
    Ok(())
}

/// Checks a notify payload or acknowledgement size.
pub fn notify_payload(io: &IoCtx, oid: &str, len: usize) -> Result<()> {
    if len > limits::MAX_NOTIFY_PAYLOAD {
        return Err(Error::invalid(
            io.object_subject(oid),
            format!(
                "notify payload is {len} bytes, the limit is {}",
                limits::MAX_NOTIFY_PAYLOAD
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::types::PoolId;

    #[test]
    fn pool_name_with_slash_is_invalid() {
        assert_eq!(
            pool_name("a/b").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            pool_name("").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            pool_name(&"x".repeat(256)).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(pool_name("rbd").is_ok());
    }

    #[test]
    fn write_past_object_size_limit_is_invalid() {
        let io = IoCtx::new(PoolId(1));
        let op = WriteOp::new().write(limits::MAX_OBJECT_SIZE, &b"x"[..]);
        let err = write_op(&io, "o", &op, &SnapContext::empty()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
