//! Evaluating a [`ReadOp`] as one librados read operation through the C++ shim, which runs
//! every step against one version of the object (layout in `shim/shim.cc`).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use rbdx_objstore::{
    Error, IoCtx, ObjectStat, ReadOp, ReadOutput, ReadResult, ReadStep, Result, Subject, limits,
};

use crate::cluster::{ForeignBuf, Io, cstr};
use crate::errors::from_errno;
use crate::ffi;
use crate::shim_reader::ShimReader;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes the steps for the shim.
fn encode(op: &ReadOp) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, op.steps().len() as u32);
    for step in op.steps() {
        match step {
            ReadStep::Stat => out.push(1),
            ReadStep::Read { offset, length } => {
                out.push(2);
                put_u64(&mut out, *offset);
                put_u64(&mut out, length.unwrap_or(0));
            }
            ReadStep::SparseRead { offset, length } => {
                out.push(3);
                put_u64(&mut out, *offset);
                put_u64(&mut out, length.unwrap_or(limits::MAX_OBJECT_SIZE));
            }
            ReadStep::OmapGetVals {
                start_after,
                prefix,
                max,
            } => {
                out.push(4);
                put_str(&mut out, start_after.as_deref().unwrap_or(""));
                put_str(&mut out, prefix);
                put_u64(&mut out, limits::page_len(*max) as u64);
            }
            ReadStep::OmapGetByKeys(keys) => {
                out.push(5);
                put_u32(&mut out, keys.len() as u32);
                for k in keys {
                    put_str(&mut out, k);
                }
            }
            ReadStep::GetXattr(name) => {
                out.push(6);
                put_str(&mut out, name);
            }
            ReadStep::GetXattrs => out.push(7),
        }
    }
    out
}

fn decode(op: &ReadOp, buf: ForeignBuf) -> Option<ReadResult> {
    let mut r = ShimReader::new(buf);
    let version = r.u64()?;
    let mut outputs = Vec::with_capacity(op.steps().len());
    for step in op.steps() {
        let output = match step {
            ReadStep::Stat => {
                let size = r.u64()?;
                let (sec, nsec) = (r.u64()?, r.u32()?);
                let mtime = UNIX_EPOCH + Duration::new(sec, nsec);
                ReadOutput::Stat(ObjectStat {
                    size,
                    mtime,
                    version,
                })
            }
            ReadStep::Read { .. } => {
                let len = r.u64()? as usize;
                ReadOutput::Data(r.take(len)?)
            }
            ReadStep::SparseRead { .. } => {
                let n = r.u32()?;
                let extents: Vec<(u64, u64)> = (0..n)
                    .map(|_| Some((r.u64()?, r.u64()?)))
                    .collect::<Option<_>>()?;
                let len = r.u64()? as usize;
                let data = r.take(len)?;
                let mut at = 0usize;
                let mut out = Vec::with_capacity(extents.len());
                for (off, len) in extents {
                    let end = at.checked_add(len as usize).filter(|e| *e <= data.len())?;
                    out.push((off, data.slice(at..end)));
                    at = end;
                }
                ReadOutput::Sparse(out)
            }
            ReadStep::OmapGetVals { .. } => {
                let more = r.u8()? != 0;
                ReadOutput::OmapVals {
                    entries: r.pairs()?,
                    more,
                }
            }
            ReadStep::OmapGetByKeys(_) => ReadOutput::OmapByKeys(r.pairs()?.into_iter().collect()),
            ReadStep::GetXattr(_) => ReadOutput::Xattr(r.bytes()?),
            ReadStep::GetXattrs => {
                let map: BTreeMap<String, Bytes> = r.pairs()?.into_iter().collect();
                ReadOutput::Xattrs(map)
            }
        };
        outputs.push(output);
    }
    Some(ReadResult { version, outputs })
}

/// Evaluates `op` on `oid` at the head or a snapshot.
pub(crate) fn read(
    io: &mut Io,
    ctx: &IoCtx,
    oid: &str,
    op: &ReadOp,
    snap: Option<u64>,
) -> Result<ReadResult> {
    let subject = || ctx.object_subject(oid);
    let c_oid = cstr(oid, subject)?;
    let input = encode(op);
    let mut failed = -1;
    io.set_read_snap(snap);
    let result = io.shim_raw(
        // SAFETY: valid io, oid and input buffer; the shim writes the out-pointers.
        |h, buf, len| unsafe {
            ffi::rbdx_read_op(
                h,
                c_oid.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                buf,
                len,
                &mut failed,
            )
        },
    );
    io.set_read_snap(None);
    match result {
        Ok(buf) => decode(op, buf).ok_or_else(|| {
            from_errno(-libc::EIO, subject())
                .with_detail("the shim returned a malformed read result")
        }),
        // A missing attribute is ENODATA; a missing object is ENOENT.
        Err(r) => match usize::try_from(failed).ok().and_then(|i| op.steps().get(i)) {
            Some(ReadStep::GetXattr(name)) if r == -libc::ENODATA => {
                Err(Error::not_found(Subject::Xattr {
                    oid: oid.to_owned(),
                    name: name.clone(),
                }))
            }
            _ => Err(from_errno(r, subject())),
        },
    }
}
