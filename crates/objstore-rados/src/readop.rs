//! Evaluating a [`ReadOp`] as one asynchronous librados read operation through the C++ shim,
//! which runs every step against one version of the object (layout in `shim/shim.cc`).

use std::collections::BTreeMap;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use rbdx_objstore::{
    Error, ErrorKind, IoCtx, ObjectStat, ReadOp, ReadOutput, ReadResult, ReadStep, Result, Subject,
    limits,
};
use tokio::sync::oneshot;

use crate::cluster::{Io, cstr};
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
            // The digests are computed here from the bytes (see `decode`).
            ReadStep::Checksum { offset, length, .. } => {
                out.push(2);
                put_u64(&mut out, *offset);
                put_u64(&mut out, *length);
            }
            // RADOS has no extent-only read: the sparse read's bytes are dropped in `decode`.
            ReadStep::SparseRead { offset, length } | ReadStep::Extents { offset, length } => {
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

/// The outputs of a finished read: the shim's job, which owns the encoded outputs and the
/// librados buffers the read data stays in. Freed when the last [`Bytes`] of it is dropped.
#[derive(Debug)]
pub(crate) struct JobOutputs {
    job: *mut c_void,
    out: *const u8,
    len: usize,
}

// SAFETY: the job is plain memory nothing else uses once handed over; it is only read here and
// freed once, by `Drop`.
unsafe impl Send for JobOutputs {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for JobOutputs {}

impl Drop for JobOutputs {
    fn drop(&mut self) {
        // SAFETY: the shim handed this job over for us to release, once.
        unsafe { ffi::rbdx_read_release(self.job) }
    }
}

/// Bytes inside a job's memory (the encoded outputs, or read data left in librados' buffers).
struct JobBytes {
    _job: Arc<JobOutputs>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: points into memory owned by `job`, which is Send and Sync and outlives this value.
unsafe impl Send for JobBytes {}
// SAFETY: as above.
unsafe impl Sync for JobBytes {}

impl AsRef<[u8]> for JobBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the shim guarantees `len` readable bytes at `ptr` for as long as the job
        // (kept alive by `self.job`) exists.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn job_bytes(job: &Arc<JobOutputs>, ptr: *const u8, len: usize) -> Bytes {
    if len == 0 {
        return Bytes::new();
    }
    Bytes::from_owner(JobBytes {
        _job: Arc::clone(job),
        ptr,
        len,
    })
}

/// Reads a data reference (length, address) of the shim's output.
fn data_ref(r: &mut ShimReader, job: &Arc<JobOutputs>) -> Option<Bytes> {
    let len = usize::try_from(r.u64()?).ok()?;
    let addr = r.u64()?;
    Some(job_bytes(job, addr as usize as *const u8, len))
}

fn decode(op: &ReadOp, job: JobOutputs) -> Option<ReadResult> {
    let job = Arc::new(job);
    let mut r = ShimReader::from_bytes(job_bytes(&job, job.out, job.len));
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
            ReadStep::Read { .. } => ReadOutput::Data(data_ref(&mut r, &job)?),
            ReadStep::Checksum { length, chunk, .. } => ReadOutput::Checksums(
                rbdx_objstore::digest::chunk_digests(&data_ref(&mut r, &job)?, *length, *chunk),
            ),
            ReadStep::Extents { .. } => {
                let n = r.u32()?;
                let extents: Vec<(u64, u64)> = (0..n)
                    .map(|_| Some((r.u64()?, r.u64()?)))
                    .collect::<Option<_>>()?;
                data_ref(&mut r, &job)?;
                ReadOutput::Extents(extents)
            }
            ReadStep::SparseRead { .. } => {
                let n = r.u32()?;
                let extents: Vec<(u64, u64)> = (0..n)
                    .map(|_| Some((r.u64()?, r.u64()?)))
                    .collect::<Option<_>>()?;
                let data = data_ref(&mut r, &job)?;
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

/// What the shim reports when a read finishes.
#[derive(Debug)]
pub(crate) struct ReadDone {
    r: i32,
    failed_step: i32,
    outputs: Option<JobOutputs>,
}

/// The completion callback's state: where to send the result.
struct Pending {
    done: oneshot::Sender<ReadDone>,
}

/// Runs on a librados thread when a read finishes.
unsafe extern "C" fn read_done(
    arg: *mut c_void,
    r: c_int,
    failed_step: c_int,
    out: *const c_char,
    len: usize,
    owner: *mut c_void,
) {
    // SAFETY: `arg` is the Pending given at submission, owned by this callback once the read
    // was submitted, and freed here once.
    let pending = unsafe { Box::from_raw(arg.cast::<Pending>()) };
    let outputs = (!owner.is_null()).then(|| JobOutputs {
        job: owner,
        out: out.cast(),
        len,
    });
    // The caller may have stopped waiting; the outputs are then freed with the message.
    let _ = pending.done.send(ReadDone {
        r,
        failed_step,
        outputs,
    });
}

/// Submits `op` on `oid` at the head or snapshot `snap`; the receiver gets the result.
pub(crate) fn submit(
    io: &mut Io,
    ctx: &IoCtx,
    oid: &str,
    op: &ReadOp,
    snap: Option<u64>,
) -> Result<oneshot::Receiver<ReadDone>> {
    let c_oid = cstr(oid, || ctx.object_subject(oid))?;
    let input = encode(op);
    let (done, receiver) = oneshot::channel();
    let pending = Box::into_raw(Box::new(Pending { done }));
    io.set_read_snap(snap);
    // SAFETY: valid io, oid and input (the shim copies what it keeps); `pending` belongs to
    // the callback if the read is submitted.
    let r = unsafe {
        ffi::rbdx_aio_read_op(
            io.handle,
            c_oid.as_ptr(),
            input.as_ptr().cast(),
            input.len(),
            read_done,
            pending.cast(),
        )
    };
    io.set_read_snap(None);
    if r < 0 {
        // SAFETY: not submitted, so no callback will free it.
        drop(unsafe { Box::from_raw(pending) });
        return Err(from_errno(r, ctx.object_subject(oid)));
    }
    Ok(receiver)
}

/// Waits for a submitted read and decodes its outputs.
pub(crate) async fn finish(
    receiver: oneshot::Receiver<ReadDone>,
    ctx: &IoCtx,
    oid: &str,
    op: &ReadOp,
) -> Result<ReadResult> {
    let subject = || ctx.object_subject(oid);
    let done = receiver.await.map_err(|_| {
        Error::new(ErrorKind::Io, subject())
            .with_detail("librados dropped a read without completing it")
    })?;
    if done.r < 0 {
        // A missing attribute is ENODATA; a missing object is ENOENT.
        return match usize::try_from(done.failed_step)
            .ok()
            .and_then(|i| op.steps().get(i))
        {
            Some(ReadStep::GetXattr(name)) if done.r == -libc::ENODATA => {
                Err(Error::not_found(Subject::Xattr {
                    oid: oid.to_owned(),
                    name: name.clone(),
                }))
            }
            _ => Err(from_errno(done.r, subject())),
        };
    }
    done.outputs.and_then(|job| decode(op, job)).ok_or_else(|| {
        Error::new(ErrorKind::Io, subject())
            .with_detail("the shim returned a malformed read result")
    })
}
