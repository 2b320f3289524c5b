//! Applying a [`WriteOp`] as one asynchronous librados write operation (`rados_write_op_*`),
//! which RADOS applies atomically.

use std::os::raw::{c_char, c_int};

use rbdx_objstore::{CmpOp, IoCtx, Result, SnapContext, WriteOp, WriteStep};
use tokio::sync::oneshot;

use crate::aio::{Completion, Done};
use crate::cluster::{Io, cstr};
use crate::errors::from_errno;
use crate::ffi;

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

/// Hands `op` (which must have steps) on `oid` with `snapc` to librados; the receiver gets
/// the result. librados copies everything the steps point at while they are added, except
/// the return slots of compare-extent steps, which travel with the completion.
pub(crate) fn submit(
    io: &mut Io,
    ctx: &IoCtx,
    oid: &str,
    op: &WriteOp,
    snapc: &SnapContext,
) -> Result<oneshot::Receiver<Done>> {
    let subject = || ctx.object_subject(oid);
    io.set_write_ctx(snapc, subject)?;
    let c_oid = cstr(oid, subject)?;
    // SAFETY: creates a new, empty write operation.
    let handle = Op(unsafe { ffi::rados_create_write_op() });
    let h = handle.0;
    // One return slot per compare-extent step, allocated once so their addresses stay put.
    let cmpexts = op
        .steps()
        .iter()
        .filter(|s| matches!(s, WriteStep::CmpExt { .. }))
        .count();
    let mut cmp_rvals: Box<[c_int]> = vec![0; cmpexts].into_boxed_slice();
    let mut next_rval = cmp_rvals.iter_mut();
    for step in op.steps() {
        // SAFETY: (every call in this match) `h` is a valid write operation; librados copies
        // the names, keys and data passed while adding the step; the compare-extent slots are
        // boxed and kept by the completion until the operation ends.
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
                }
                WriteStep::CmpExt { offset, data } => {
                    let rval: *mut c_int = next_rval
                        .next()
                        .map_or(std::ptr::null_mut(), std::ptr::from_mut);
                    ffi::rados_write_op_cmpext(h, data.as_ptr().cast(), data.len(), *offset, rval);
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
                }
                WriteStep::OmapRemove(keys) => {
                    let ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
                    let l: Vec<usize> = keys.iter().map(|k| k.len()).collect();
                    ffi::rados_write_op_omap_rm_keys2(h, ptrs.as_ptr(), l.as_ptr(), keys.len());
                }
                WriteStep::OmapClear => ffi::rados_write_op_omap_clear(h),
                WriteStep::XattrSet { name, value } => {
                    let n = cstr(name, subject)?;
                    ffi::rados_write_op_setxattr(h, n.as_ptr(), value.as_ptr().cast(), value.len());
                }
                WriteStep::XattrRemove(name) => {
                    let n = cstr(name, subject)?;
                    ffi::rados_write_op_rmxattr(h, n.as_ptr());
                }
            }
        }
    }
    let (completion, receiver) = Completion::new(cmp_rvals);
    // SAFETY: valid operation, io, completion and oid; the operation's content was copied.
    let r = unsafe {
        ffi::rados_aio_write_op_operate(
            h,
            io.handle,
            completion.handle(),
            c_oid.as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    if r < 0 {
        return Err(from_errno(r, subject()));
    }
    completion.submitted();
    Ok(receiver)
}

/// Turns a finished write into the object's new version or the error of the step at fault.
pub(crate) fn finish(done: Done, ctx: &IoCtx, oid: &str) -> Result<u64> {
    if done.r < 0 {
        return Err(from_errno(
            done.cmpext.unwrap_or(done.r),
            ctx.object_subject(oid),
        ));
    }
    Ok(done.version)
}
