//! Applying a [`WriteOp`] as one librados write operation (`rados_write_op_*`), which RADOS
//! applies atomically.

use std::ffi::CString;
use std::os::raw::{c_char, c_int};

use rbdx_objstore::{
    CmpOp, ErrorKind, IoCtx, ReadOp, Result, SnapContext, Subject, WriteOp, WriteStep,
};

use crate::cluster::{Io, cstr};
use crate::errors::from_errno;
use crate::{ffi, readop};

/// The `LIBRADOS_CMPXATTR_OP_*` code for `op`. RADOS puts the given value on the left
/// (`GT` holds when the given value is greater than the stored one) while [`CmpOp`] puts the
/// stored value there, so the ordering operators swap.
fn cmp_code(op: CmpOp) -> u8 {
    match op {
        CmpOp::Eq => 1,
        CmpOp::Ne => 2,
        CmpOp::Lt => 3,
        CmpOp::Lte => 4,
        CmpOp::Gt => 5,
        CmpOp::Gte => 6,
    }
}

/// An owned `rados_write_op_t`, released on drop.
struct Op(ffi::rados_write_op_t);

impl Drop for Op {
    fn drop(&mut self) {
        // SAFETY: created by rados_create_write_op and released once.
        unsafe { ffi::rados_release_write_op(self.0) }
    }
}

/// Applies `op` to `oid` with `snapc`; returns the object's new version.
pub(crate) fn operate(
    io: &mut Io,
    ctx: &IoCtx,
    oid: &str,
    op: &WriteOp,
    snapc: &SnapContext,
) -> Result<u64> {
    let subject = || ctx.object_subject(oid);
    if op.steps().is_empty() {
        // RADOS answers an empty operation with version 0; the contract wants the current one.
        return match readop::read(io, ctx, oid, &ReadOp::new().stat(), None) {
            Ok(result) => Ok(result.version),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        };
    }
    io.set_write_ctx(snapc, subject)?;
    let c_oid = cstr(oid, subject)?;
    // SAFETY: creates a new, empty write operation.
    let handle = Op(unsafe { ffi::rados_create_write_op() });
    let h = handle.0;
    // Everything the operation points at must outlive `operate2`, which copies the data.
    let mut names: Vec<CString> = Vec::new();
    let mut cmp_rvals: Vec<Box<c_int>> = Vec::new();
    let mut key_ptrs: Vec<Vec<*const c_char>> = Vec::new();
    let mut val_ptrs: Vec<Vec<*const c_char>> = Vec::new();
    let mut lens: Vec<Vec<usize>> = Vec::new();
    let mut first_xattr_removed: Option<String> = None;
    for step in op.steps() {
        // SAFETY: (every call in this match) `h` is a valid write operation; every pointer
        // passed stays valid until the operation runs below, as its owner lives in this frame.
        unsafe {
            match step {
                WriteStep::AssertExists => ffi::rados_write_op_assert_exists(h),
                WriteStep::Create { exclusive } => {
                    ffi::rados_write_op_create(h, c_int::from(*exclusive), std::ptr::null())
                }
                WriteStep::AssertVersion(v) => ffi::rados_write_op_assert_version(h, *v),
                WriteStep::CmpXattr { name, op, value } => {
                    let n = cstr(name, subject)?;
                    ffi::rados_write_op_cmpxattr(
                        h,
                        n.as_ptr(),
                        cmp_code(*op),
                        value.as_ptr().cast(),
                        value.len(),
                    );
                    names.push(n);
                }
                WriteStep::CmpExt { offset, data } => {
                    let mut rval = Box::new(0);
                    ffi::rados_write_op_cmpext(
                        h,
                        data.as_ptr().cast(),
                        data.len(),
                        *offset,
                        &mut *rval,
                    );
                    cmp_rvals.push(rval);
                }
                WriteStep::Write { offset, data } => {
                    ffi::rados_write_op_write(h, data.as_ptr().cast(), data.len(), *offset)
                }
                WriteStep::WriteFull(data) => {
                    ffi::rados_write_op_write_full(h, data.as_ptr().cast(), data.len())
                }
                WriteStep::Zero { offset, length } => ffi::rados_write_op_zero(h, *offset, *length),
                WriteStep::Truncate(size) => ffi::rados_write_op_truncate(h, *size),
                WriteStep::Remove => ffi::rados_write_op_remove(h),
                WriteStep::OmapSet(map) => {
                    let keys: Vec<*const c_char> = map.keys().map(|k| k.as_ptr().cast()).collect();
                    let vals: Vec<*const c_char> =
                        map.values().map(|v| v.as_ptr().cast()).collect();
                    let mut l: Vec<usize> = map.keys().map(|k| k.len()).collect();
                    l.extend(map.values().map(|v| v.len()));
                    let (key_lens, val_lens) = l.split_at(map.len());
                    ffi::rados_write_op_omap_set2(
                        h,
                        keys.as_ptr(),
                        vals.as_ptr(),
                        key_lens.as_ptr(),
                        val_lens.as_ptr(),
                        map.len(),
                    );
                    key_ptrs.push(keys);
                    val_ptrs.push(vals);
                    lens.push(l);
                }
                WriteStep::OmapRemove(keys) => {
                    let ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
                    let l: Vec<usize> = keys.iter().map(|k| k.len()).collect();
                    ffi::rados_write_op_omap_rm_keys2(h, ptrs.as_ptr(), l.as_ptr(), keys.len());
                    key_ptrs.push(ptrs);
                    lens.push(l);
                }
                WriteStep::OmapClear => ffi::rados_write_op_omap_clear(h),
                WriteStep::XattrSet { name, value } => {
                    let n = cstr(name, subject)?;
                    ffi::rados_write_op_setxattr(h, n.as_ptr(), value.as_ptr().cast(), value.len());
                    names.push(n);
                }
                WriteStep::XattrRemove(name) => {
                    let n = cstr(name, subject)?;
                    ffi::rados_write_op_rmxattr(h, n.as_ptr());
                    names.push(n);
                    first_xattr_removed.get_or_insert_with(|| name.clone());
                }
            }
        }
    }
    // SAFETY: valid operation, io and oid; the data it points at is alive (see above).
    let r = unsafe {
        ffi::rados_write_op_operate2(h, io.handle, c_oid.as_ptr(), std::ptr::null_mut(), 0)
    };
    drop((names, key_ptrs, val_ptrs, lens));
    if r < 0 {
        if r == -libc::ENODATA
            && let Some(name) = first_xattr_removed
        {
            return Err(from_errno(
                r,
                Subject::Xattr {
                    oid: oid.to_owned(),
                    name,
                },
            ));
        }
        if let Some(bad) = cmp_rvals.iter().find(|v| ***v < 0) {
            return Err(from_errno(**bad, subject()));
        }
        return Err(from_errno(r, subject()));
    }
    Ok(io.last_version())
}
