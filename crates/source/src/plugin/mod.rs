//! Drivers shipped as shared libraries, loaded from a plugin directory through the versioned
//! C ABI of `rbdx-plugin-abi`: streams ([`stream`]) and formats ([`format`]).
//!
//! Each `*.so` in the directory is opened and asked for the vtable of each kind it exports.
//! A vtable is checked before anything in it is used: magic, ABI version, size, kind and
//! name. A plugin whose name is already taken (by a built-in driver or an earlier plugin) is
//! refused too, never silently preferred. A refusal names the file and the reason, and
//! nothing of that file is registered. Libraries are never unloaded (their code may still be
//! referenced).

mod format;
mod stream;

use std::ffi::{CStr, c_char};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbdx_plugin_abi::{
    ABI_MAGIC, ABI_VERSION, ENTRY_SYMBOL, FORMAT_ENTRY_SYMBOL, FormatPluginV1, KIND_FORMAT,
    KIND_STREAM, StreamPluginV1,
};

use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;

/// What loading one plugin file gave.
#[derive(Debug)]
pub struct PluginLoad {
    /// The file.
    pub path: PathBuf,
    /// The driver it registered (`stream NAME` or `format NAME`), or why it was refused.
    pub result: Result<String>,
}

/// The fields every vtable starts with.
struct Common {
    magic: u32,
    abi_version: u32,
    struct_size: usize,
    kind: u32,
    name: *const c_char,
}

fn refusal(path: &Path, why: String) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("plugin {} refused: {why}", path.display()),
    )
}

/// Checks the common fields of a vtable of `kind` whose full size is `size`; returns its name.
fn check(path: &Path, c: &Common, kind: u32, size: usize) -> Result<String> {
    let refuse = |why: String| refusal(path, why);
    if c.magic != ABI_MAGIC {
        return Err(refuse("its vtable has a bad magic number".into()));
    }
    if c.abi_version != ABI_VERSION {
        return Err(refuse(format!(
            "it was built for plugin ABI version {}, this rbdx speaks version {ABI_VERSION}",
            c.abi_version
        )));
    }
    if c.struct_size < size {
        return Err(refuse(format!(
            "its vtable is {} bytes, version {ABI_VERSION} needs {size}",
            c.struct_size
        )));
    }
    if c.kind != kind {
        return Err(refuse(format!("it is of unknown kind {}", c.kind)));
    }
    if c.name.is_null() {
        return Err(refuse("it has no name".into()));
    }
    // SAFETY: a non-null, NUL-terminated static string, per the ABI.
    let name = unsafe { CStr::from_ptr(c.name) }
        .to_str()
        .map_err(|_| refuse("its name is not UTF-8".into()))?
        .to_owned();
    if name.is_empty() {
        return Err(refuse("its name is empty".into()));
    }
    Ok(name)
}

/// The vtables one library exports.
#[derive(Default)]
struct Exports {
    stream: Option<(&'static StreamPluginV1, String)>,
    format: Option<(&'static FormatPluginV1, String)>,
}

/// Opens one plugin file and checks the vtable of every kind it exports.
fn load_one(path: &Path) -> Result<Exports> {
    let refuse = |why: String| refusal(path, why);
    // SAFETY: loading a library runs its initialisers; plugins are code the operator chose
    // to install in the plugin directory, which is the trust boundary of this feature.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| refuse(format!("cannot load it: {e}")))?;
    let mut exports = Exports::default();
    type StreamEntry = unsafe extern "C" fn(u32) -> *const StreamPluginV1;
    // SAFETY: the symbol's type is fixed by the ABI's version 1, whose name it carries.
    let stream_entry = unsafe { lib.get::<StreamEntry>(ENTRY_SYMBOL) };
    if let Ok(entry) = stream_entry {
        // SAFETY: calling the entry point with our version is its documented contract.
        let vtable = unsafe { entry(ABI_VERSION) };
        if vtable.is_null() {
            return Err(refuse("its stream entry point returned no vtable".into()));
        }
        // SAFETY: non-null, and the plugin promises a static vtable; fields past the common
        // ones are used only after checking the size it declares.
        let v: &'static StreamPluginV1 = unsafe { &*vtable };
        let common = Common {
            magic: v.magic,
            abi_version: v.abi_version,
            struct_size: v.struct_size,
            kind: v.kind,
            name: v.name,
        };
        let name = check(path, &common, KIND_STREAM, size_of::<StreamPluginV1>())?;
        exports.stream = Some((v, name));
    }
    // SAFETY: as above, for the format entry point.
    let format_entry = unsafe {
        lib.get::<unsafe extern "C" fn(u32) -> *const FormatPluginV1>(FORMAT_ENTRY_SYMBOL)
    };
    if let Ok(entry) = format_entry {
        // SAFETY: as above.
        let vtable = unsafe { entry(ABI_VERSION) };
        if vtable.is_null() {
            return Err(refuse("its format entry point returned no vtable".into()));
        }
        // SAFETY: as above.
        let v: &'static FormatPluginV1 = unsafe { &*vtable };
        let common = Common {
            magic: v.magic,
            abi_version: v.abi_version,
            struct_size: v.struct_size,
            kind: v.kind,
            name: v.name,
        };
        let name = check(path, &common, KIND_FORMAT, size_of::<FormatPluginV1>())?;
        exports.format = Some((v, name));
    }
    if exports.stream.is_none() && exports.format.is_none() {
        return Err(refuse(format!(
            "it has no entry point rbdx_stream_plugin_v1 or rbdx_format_plugin_v1 (built for \
             another ABI version than {ABI_VERSION}?)"
        )));
    }
    // The library stays loaded for the life of the process, so its static vtables do too.
    std::mem::forget(lib);
    Ok(exports)
}

impl Registry {
    /// Loads every `*.so` in `dir` and registers the drivers that pass the checks; returns
    /// what happened to each file, in name order. A driver whose name is taken is refused.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<PluginLoad>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot read plugin directory {}", dir.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "so"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let result = load_one(&path).and_then(|exports| self.register_exports(&path, exports));
            out.push(PluginLoad { path, result });
        }
        Ok(out)
    }

    fn register_exports(&mut self, path: &Path, exports: Exports) -> Result<String> {
        let taken = |what: &str, name: &str| {
            refusal(
                path,
                format!(
                    "its {what} type '{name}' is already provided by another driver; remove \
                     one of them"
                ),
            )
        };
        if let Some((_, name)) = &exports.stream
            && self.stream(name).is_ok()
        {
            return Err(taken("stream", name));
        }
        if let Some((_, name)) = &exports.format
            && self.format(name).is_ok()
        {
            return Err(taken("format", name));
        }
        let mut registered = Vec::new();
        if let Some((vtable, name)) = exports.stream {
            registered.push(format!("stream {name}"));
            self.register_stream(Arc::new(stream::DynStreamFactory::new(
                vtable,
                name,
                path.to_owned(),
            )));
        }
        if let Some((vtable, name)) = exports.format {
            registered.push(format!("format {name}"));
            self.register_format(Arc::new(format::DynFormatFactory::new(
                vtable,
                name,
                path.to_owned(),
            )));
        }
        Ok(registered.join(", "))
    }
}

/// Maps a plugin's negative errno to an error.
fn errno_error(what: String, rc: i32) -> Error {
    let kind = match -rc {
        2 => ErrorKind::NotFound,
        13 => ErrorKind::PermissionDenied,
        22 => ErrorKind::Invalid,
        38 => ErrorKind::UnknownDriver,
        95 => ErrorKind::Unsupported,
        116 => ErrorKind::Changed,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{what} (plugin error {})", -rc))
}

/// Reads a plugin's message of `len` bytes from `buf`.
fn message(buf: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned()
}
