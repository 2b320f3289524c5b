//! Stream drivers shipped as shared libraries, loaded from a plugin directory through the
//! versioned C ABI of `rbdx-plugin-abi`.
//!
//! Each `*.so` in the directory is opened and asked for its vtable. The vtable is checked
//! before anything in it is used: magic, ABI version, size, kind and name. A plugin that fails
//! any check is refused with a message naming the file and the reason, and nothing of it is
//! registered. Libraries are never unloaded (their code may still be referenced).

use std::ffi::{CStr, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_plugin_abi::{ABI_MAGIC, ABI_VERSION, ENTRY_SYMBOL, KIND_STREAM, StreamPluginV1};
use serde_json::{Map, Value};

use crate::context::OpenContext;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Registry, StreamFactory};
use crate::stream::{Stream, check_range};

/// What loading one plugin file gave.
#[derive(Debug)]
pub struct PluginLoad {
    /// The file.
    pub path: PathBuf,
    /// The stream type it registered, or why it was refused.
    pub result: Result<String>,
}

type Entry = unsafe extern "C" fn(u32) -> *const StreamPluginV1;

/// Opens one plugin file and checks its vtable.
fn load_one(path: &Path) -> Result<(&'static StreamPluginV1, String)> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Unsupported,
            format!("plugin {} refused: {why}", path.display()),
        )
    };
    // SAFETY: loading a library runs its initialisers; plugins are code the operator chose
    // to install in the plugin directory, which is the trust boundary of this feature.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| refuse(format!("cannot load it: {e}")))?;
    // SAFETY: the symbol's type is fixed by the ABI's version 1, whose name it carries.
    let entry: libloading::Symbol<'_, Entry> = unsafe { lib.get(ENTRY_SYMBOL) }.map_err(|_| {
        refuse(format!(
            "it has no entry point rbdx_stream_plugin_v1 (built for another ABI version than {ABI_VERSION}?)"
        ))
    })?;
    // SAFETY: calling the entry point with our version is its documented contract.
    let vtable = unsafe { entry(ABI_VERSION) };
    if vtable.is_null() {
        return Err(refuse("its entry point returned no vtable".into()));
    }
    // The library stays loaded for the life of the process, so its static vtable does too.
    std::mem::forget(lib);
    // SAFETY: non-null, and the plugin promises a static vtable; its first fields are read
    // only after checking the magic and the size it declares.
    let vtable: &'static StreamPluginV1 = unsafe { &*vtable };
    if vtable.magic != ABI_MAGIC {
        return Err(refuse("its vtable has a bad magic number".into()));
    }
    if vtable.abi_version != ABI_VERSION {
        return Err(refuse(format!(
            "it was built for plugin ABI version {}, this rbdx speaks version {ABI_VERSION}",
            vtable.abi_version
        )));
    }
    if vtable.struct_size < std::mem::size_of::<StreamPluginV1>() {
        return Err(refuse(format!(
            "its vtable is {} bytes, version {ABI_VERSION} needs {}",
            vtable.struct_size,
            std::mem::size_of::<StreamPluginV1>()
        )));
    }
    if vtable.kind != KIND_STREAM {
        return Err(refuse(format!("it is of unknown kind {}", vtable.kind)));
    }
    if vtable.name.is_null() {
        return Err(refuse("it has no name".into()));
    }
    // SAFETY: a non-null, NUL-terminated static string, per the ABI.
    let name = unsafe { CStr::from_ptr(vtable.name) }
        .to_str()
        .map_err(|_| refuse("its name is not UTF-8".into()))?
        .to_owned();
    if name.is_empty() {
        return Err(refuse("its name is empty".into()));
    }
    Ok((vtable, name))
}

impl Registry {
    /// Loads every `*.so` in `dir` and registers the stream drivers that pass the checks;
    /// returns what happened to each file, in name order.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<PluginLoad>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot read plugin directory {}", dir.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "so"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let result = load_one(&path).map(|(vtable, name)| {
                self.register_stream(Arc::new(DynStreamFactory {
                    vtable,
                    name: Box::leak(name.clone().into_boxed_str()),
                    path: path.clone(),
                }));
                name
            });
            out.push(PluginLoad { path, result });
        }
        Ok(out)
    }
}

struct DynStreamFactory {
    vtable: &'static StreamPluginV1,
    name: &'static str,
    path: PathBuf,
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

fn errno_error(what: String, rc: i32) -> Error {
    let kind = match -rc {
        2 => ErrorKind::NotFound,
        13 => ErrorKind::PermissionDenied,
        22 => ErrorKind::Invalid,
        95 => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{what} (plugin error {})", -rc))
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
            let msg = String::from_utf8_lossy(&err[..err_len.min(err.len())]).into_owned();
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
