//! Stream drivers from plugins: a stream's vtable behind [`StreamFactory`] and [`Stream`].

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_plugin_abi::StreamPluginV1;
use serde_json::{Map, Value};

use super::{errno_error, message};
use crate::context::OpenContext;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::StreamFactory;
use crate::stream::{Stream, check_range};

pub(super) struct DynStreamFactory {
    vtable: &'static StreamPluginV1,
    name: &'static str,
    path: PathBuf,
}

impl DynStreamFactory {
    /// Wraps a checked vtable.
    pub(super) fn new(vtable: &'static StreamPluginV1, name: String, path: PathBuf) -> Self {
        DynStreamFactory {
            vtable,
            name: Box::leak(name.into_boxed_str()),
            path,
        }
    }
}

/// A plugin's stream handle, closed when the last reference goes away (reads hold one while
/// they run, so a handle is never closed under a read).
struct Handle(*mut c_void, rbdx_plugin_abi::CloseFn);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `open` and this is its only close.
        unsafe { (self.1)(self.0) };
    }
}

// SAFETY: the ABI requires `size`, `read_at` and `close` to be callable from any thread, and
// `read_at` concurrently on one handle.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

/// A stream served by a plugin.
struct DynStream {
    vtable: &'static StreamPluginV1,
    name: &'static str,
    path: PathBuf,
    handle: Arc<Handle>,
    size: u64,
}

impl std::fmt::Debug for DynStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DynStream({} from {})", self.name, self.path.display())
    }
}

#[async_trait]
impl StreamFactory for DynStreamFactory {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn open(&self, spec: &Map<String, Value>, _ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        let json = Value::Object(spec.clone()).to_string();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut err = vec![0u8; 1024];
        let mut err_len = 0usize;
        // SAFETY: every pointer is valid for the lengths passed, for the duration of the call.
        let rc = unsafe {
            (self.vtable.open)(
                json.as_ptr(),
                json.len(),
                &mut handle,
                err.as_mut_ptr(),
                err.len(),
                &mut err_len,
            )
        };
        if rc != 0 || handle.is_null() {
            let msg = message(&err, err_len);
            return Err(errno_error(
                format!("{} stream: {msg}", self.name),
                rc.min(-5),
            ));
        }
        let handle = Arc::new(Handle(handle, self.vtable.close));
        let mut size = 0u64;
        // SAFETY: an open handle and a writable u64.
        let rc = unsafe { (self.vtable.size)(handle.0, &mut size) };
        if rc != 0 {
            return Err(errno_error(
                format!("{} stream: cannot get its size", self.name),
                rc,
            ));
        }
        Ok(Box::new(DynStream {
            vtable: self.vtable,
            name: self.name,
            path: self.path.clone(),
            handle,
            size,
        }))
    }
}

#[async_trait]
impl Stream for DynStream {
    fn describe(&self) -> String {
        format!("{} stream (plugin {})", self.name, self.path.display())
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        check_range(self, offset, length, self.size)?;
        let (vtable, handle) = (self.vtable, self.handle.clone());
        let (rc, buf) = tokio::task::spawn_blocking(move || {
            let mut buf = crate::BufferPool::global().take(length as usize);
            // SAFETY: an open handle (kept alive by the Arc) and `length` writable bytes.
            let rc = unsafe { (vtable.read_at)(handle.0, offset, buf.as_mut_ptr(), buf.len()) };
            (rc, buf)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("plugin read task failed: {e}")))?;
        if rc != 0 {
            return Err(errno_error(
                format!("{} stream: cannot read {offset}~{length}", self.name),
                rc,
            ));
        }
        Ok(buf.freeze())
    }
}
