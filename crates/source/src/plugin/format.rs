//! Format drivers from plugins: a format's vtable behind [`FormatFactory`] and [`Format`],
//! over a stream the host opens and lends the plugin ([`HostStreamV1`]).
//!
//! Every call into the plugin but `probe` runs on a blocking thread; the plugin reads its
//! stream through the host's functions, which wait for the host's async stream there.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_plugin_abi::{CloseFn, EXTENT_DATA, EXTENT_ZERO, ExtentV1, FormatPluginV1, HostStreamV1};
use serde_json::Value;

use super::{errno_error, message};
use crate::context::OpenContext;
use crate::error::{Error, ErrorKind, Result};
use crate::extent::{Extent, ExtentKind};
use crate::format::{Format, SnapshotInfo};
use crate::registry::FormatFactory;
use crate::spec::SourceSpec;
use crate::stream::Stream;

/// Extents asked for per call.
const EXTENTS_PER_CALL: usize = 1024;

pub(super) struct DynFormatFactory {
    vtable: &'static FormatPluginV1,
    name: &'static str,
    path: PathBuf,
}

impl DynFormatFactory {
    /// Wraps a checked vtable.
    pub(super) fn new(vtable: &'static FormatPluginV1, name: String, path: PathBuf) -> Self {
        DynFormatFactory {
            vtable,
            name: Box::leak(name.into_boxed_str()),
            path,
        }
    }
}

/// What the host lends a plugin: its stream and the runtime that reads it.
struct HostStream {
    stream: Arc<dyn Stream>,
    runtime: tokio::runtime::Handle,
}

fn errno_of(e: &Error) -> i32 {
    -e.kind().errno()
}

unsafe extern "C" fn host_read_at(ctx: *mut c_void, offset: u64, buf: *mut u8, len: usize) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostStream` this function table was made with, alive until
        // the plugin's handle is closed.
        let host = unsafe { &*(ctx as *const HostStream) };
        match host.runtime.block_on(host.stream.read(offset, len as u64)) {
            Ok(data) if data.len() == len => {
                // SAFETY: the plugin passes `len` writable bytes at `buf`.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, len) };
                0
            }
            Ok(_) => -5,
            Err(e) => errno_of(&e),
        }
    }))
    .unwrap_or(-5)
}

unsafe extern "C" fn host_extents(
    ctx: *mut c_void,
    offset: u64,
    length: u64,
    out: *mut ExtentV1,
    cap: usize,
    count: *mut usize,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `host_read_at`.
        let host = unsafe { &*(ctx as *const HostStream) };
        match host.runtime.block_on(host.stream.extents(offset, length)) {
            Ok(extents) => {
                let n = extents.len().min(cap);
                for (i, e) in extents.iter().take(n).enumerate() {
                    let kind = match e.kind {
                        ExtentKind::Data => EXTENT_DATA,
                        ExtentKind::Zero => EXTENT_ZERO,
                    };
                    // SAFETY: the plugin passes `cap` writable extents at `out`, i < cap.
                    unsafe {
                        out.add(i).write(ExtentV1 {
                            offset: e.offset,
                            length: e.length,
                            kind,
                        });
                    }
                }
                // SAFETY: the plugin passes a writable count.
                unsafe { *count = n };
                0
            }
            Err(e) => errno_of(&e),
        }
    }))
    .unwrap_or(-5)
}

/// An open plugin format handle, with the stream lent to it; closed when the last
/// reference goes away (reads hold one while they run).
struct Handle {
    handle: *mut c_void,
    close: CloseFn,
    /// Lent to the plugin until `close`: boxed so that their addresses stay put.
    _table: Box<HostStreamV1>,
    _host: Box<HostStream>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `open` and this is its only close; the stream it was
        // lent is dropped after it.
        unsafe { (self.close)(self.handle) };
    }
}

// SAFETY: the ABI requires format functions to be callable from any thread, concurrently on
// one handle; the host stream's functions are thread-safe (an `Arc<dyn Stream>` and a runtime
// handle, both Send + Sync).
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

/// An image served by a format plugin.
struct DynFormat {
    vtable: &'static FormatPluginV1,
    name: &'static str,
    path: PathBuf,
    source: String,
    handle: Arc<Handle>,
    size: u64,
    snapshots: Vec<SnapshotInfo>,
}

impl std::fmt::Debug for DynFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynFormat({} from {})", self.name, self.path.display())
    }
}

/// Runs a call into a plugin on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("plugin task failed: {e}")))
}

fn snap_arg(snap: Option<usize>) -> i64 {
    snap.map_or(-1, |i| i as i64)
}

impl DynFormatFactory {
    /// Opens the plugin's image over `stream` on a blocking thread: open, info, snapshots.
    fn open_blocking(
        vtable: &'static FormatPluginV1,
        name: &'static str,
        json: String,
        stream: Arc<dyn Stream>,
        size: u64,
        runtime: tokio::runtime::Handle,
    ) -> Result<(Arc<Handle>, u64, Vec<SnapshotInfo>)> {
        let mut host = Box::new(HostStream { stream, runtime });
        let table = Box::new(HostStreamV1 {
            struct_size: size_of::<HostStreamV1>(),
            ctx: (&mut *host as *mut HostStream).cast(),
            size,
            read_at: host_read_at,
            extents: host_extents,
        });
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut err = vec![0u8; 1024];
        let mut err_len = 0usize;
        // SAFETY: every pointer is valid for the lengths passed; `table` and `host` live in
        // the `Handle` until after `close`.
        let rc = unsafe {
            (vtable.open)(
                json.as_ptr(),
                json.len(),
                &*table,
                &mut handle,
                err.as_mut_ptr(),
                err.len(),
                &mut err_len,
            )
        };
        if rc != 0 || handle.is_null() {
            return Err(errno_error(
                format!("{name}: {}", message(&err, err_len)),
                rc.min(-5),
            ));
        }
        let handle = Arc::new(Handle {
            handle,
            close: vtable.close,
            _table: table,
            _host: host,
        });
        let (mut size, mut count) = (0u64, 0u32);
        // SAFETY: an open handle and writable outputs.
        let rc = unsafe { (vtable.info)(handle.handle, &mut size, &mut count) };
        if rc != 0 {
            return Err(errno_error(
                format!("{name}: cannot describe the image"),
                rc,
            ));
        }
        let mut snapshots = Vec::new();
        for index in 0..count {
            let mut buf = vec![0u8; 1024];
            let (mut len, mut snap_size) = (0usize, 0u64);
            // SAFETY: an open handle, `buf.len()` writable bytes and writable outputs.
            let rc = unsafe {
                (vtable.snapshot)(
                    handle.handle,
                    index,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                    &mut snap_size,
                )
            };
            if rc != 0 {
                return Err(errno_error(
                    format!("{name}: cannot describe snapshot {index}"),
                    rc,
                ));
            }
            snapshots.push(SnapshotInfo {
                name: message(&buf, len),
                size: snap_size,
            });
        }
        Ok((handle, size, snapshots))
    }
}

#[async_trait]
impl FormatFactory for DynFormatFactory {
    fn name(&self) -> &'static str {
        self.name
    }

    fn probe_len(&self) -> usize {
        self.vtable.probe_len
    }

    fn probe(&self, header: &[u8]) -> bool {
        if self.vtable.probe_len == 0 {
            return false;
        }
        let vtable = self.vtable;
        catch_unwind(|| {
            // SAFETY: `header.len()` readable bytes; probe neither blocks nor keeps the pointer.
            let rc = unsafe { (vtable.probe)(header.as_ptr(), header.len()) };
            rc == 1
        })
        .unwrap_or(false)
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        let mut own = spec.object.clone();
        let stream_spec = match own.remove("stream") {
            Some(Value::Object(s)) => s,
            Some(_) => return Err(Error::invalid("'stream' must be an object")),
            None => return Err(Error::invalid(format!("{} needs a 'stream'", self.name))),
        };
        let stream = ctx.registry().open_stream(&stream_spec, ctx).await?;
        let own = SourceSpec::from_value(Value::Object(own))?;
        self.open_stream(Arc::from(stream), &own, ctx).await
    }

    async fn open_stream(
        &self,
        stream: Arc<dyn Stream>,
        spec: &SourceSpec,
        _ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        let json = Value::Object(spec.object.clone()).to_string();
        let size = stream.size().await?;
        let source = stream.describe();
        let (vtable, name) = (self.vtable, self.name);
        let runtime = tokio::runtime::Handle::current();
        let (handle, size, snapshots) =
            blocking(move || Self::open_blocking(vtable, name, json, stream, size, runtime))
                .await??;
        Ok(Box::new(DynFormat {
            vtable,
            name,
            path: self.path.clone(),
            source,
            handle,
            size,
            snapshots,
        }))
    }
}

#[async_trait]
impl Format for DynFormat {
    fn describe(&self) -> String {
        format!(
            "{} image {} (plugin {})",
            self.name,
            self.source,
            self.path.display()
        )
    }

    fn format_name(&self) -> &str {
        self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    async fn read(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes> {
        check_view(self, snap, offset, length)?;
        let (vtable, handle) = (self.vtable, self.handle.clone());
        let (rc, buf) = blocking(move || {
            let mut buf = crate::BufferPool::global().take(length as usize);
            // SAFETY: an open handle (kept alive by the Arc) and `length` writable bytes.
            let rc = unsafe {
                (vtable.read_at)(
                    handle.handle,
                    snap_arg(snap),
                    offset,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            (rc, buf)
        })
        .await?;
        if rc != 0 {
            return Err(errno_error(
                format!("{}: cannot read {offset}~{length}", self.name),
                rc,
            ));
        }
        Ok(buf.freeze())
    }

    async fn extents(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>> {
        check_view(self, snap, offset, length)?;
        let (vtable, handle, name) = (self.vtable, self.handle.clone(), self.name);
        blocking(move || extents_blocking(vtable, &handle, name, snap, offset, length)).await?
    }
}

/// Asks the plugin for the extents of `[offset, offset + length)` until they cover it,
/// checking that each answer continues where the last one ended.
fn extents_blocking(
    vtable: &'static FormatPluginV1,
    handle: &Handle,
    name: &str,
    snap: Option<usize>,
    offset: u64,
    length: u64,
) -> Result<Vec<Extent>> {
    let end = offset + length;
    let mut out: Vec<Extent> = Vec::new();
    let mut at = offset;
    let mut buf = vec![ExtentV1::default(); EXTENTS_PER_CALL];
    while at < end {
        let mut count = 0usize;
        // SAFETY: an open handle, `buf.len()` writable extents and a writable count.
        let rc = unsafe {
            (vtable.extents)(
                handle.handle,
                snap_arg(snap),
                at,
                end - at,
                buf.as_mut_ptr(),
                buf.len(),
                &mut count,
            )
        };
        if rc != 0 {
            return Err(errno_error(
                format!("{name}: cannot map {at}~{}", end - at),
                rc,
            ));
        }
        if count == 0 || count > buf.len() {
            return Err(bad_extents(name, at));
        }
        for e in &buf[..count] {
            let kind = match e.kind {
                EXTENT_DATA => ExtentKind::Data,
                EXTENT_ZERO => ExtentKind::Zero,
                _ => return Err(bad_extents(name, at)),
            };
            if e.offset != at || e.length == 0 || e.length > end - at {
                return Err(bad_extents(name, at));
            }
            match out.last_mut() {
                Some(last) if last.kind == kind => last.length += e.length,
                _ => out.push(Extent {
                    offset: e.offset,
                    length: e.length,
                    kind,
                }),
            }
            at += e.length;
        }
    }
    Ok(out)
}

fn bad_extents(name: &str, at: u64) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("{name}: the plugin mapped the image wrongly at offset {at}"),
    )
}

fn check_view(f: &DynFormat, snap: Option<usize>, offset: u64, length: u64) -> Result<()> {
    if let Some(i) = snap
        && i >= f.snapshots.len()
    {
        return Err(Error::invalid(format!("no snapshot number {i}")));
    }
    let size = f.view_size(snap);
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "read {offset}~{length} is past the end of {} ({size} bytes)",
            f.describe()
        ))),
    }
}
