//! The `vhd` format as a plugin: VHD images (Microsoft's virtual hard disk, `vpc` in qemu),
//! fixed and dynamic, read through any stream the host opens.
//!
//! ```json
//! {"type": "vhd", "stream": {"type": "file", "file_path": "/images/disk.vhd"}}
//! ```
//!
//! This crate is built only as a shared library (`librbdx_format_vhd.so`) and is never
//! linked into `rbdx`: put it in the plugin directory (`--plugin-dir` or `RBDX_PLUGIN_DIR`).
//! It exports `rbdx_format_plugin_v1` ([`rbdx_plugin_abi::FormatPluginV1`]). The format
//! itself is in the private `vhd` module; this file is the glue to the ABI.

mod vhd;

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rbdx_plugin_abi::{
    ABI_MAGIC, ABI_VERSION, EXTENT_DATA, EXTENT_ZERO, ExtentV1, FormatPluginV1, HostStreamV1,
    KIND_FORMAT,
};

use crate::vhd::{File, Piece, Vhd, VhdError};

const EINVAL: i32 = 22;
const EIO: i32 = 5;

/// The host's stream, as the format reads it.
struct HostFile(*const HostStreamV1);

impl File for HostFile {
    fn size(&self) -> u64 {
        // SAFETY: the host keeps the stream valid until the handle is closed.
        unsafe { (*self.0).size }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VhdError> {
        // SAFETY: as above; `buf` is `buf.len()` writable bytes.
        let rc = unsafe { ((*self.0).read_at)((*self.0).ctx, offset, buf.as_mut_ptr(), buf.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(VhdError {
                errno: -rc,
                message: format!("cannot read {}~{} of the file", offset, buf.len()),
            })
        }
    }
}

/// An open image.
struct Image {
    file: HostFile,
    vhd: Vhd,
}

fn write_error(msg: &str, err: *mut u8, err_cap: usize, err_len: *mut usize) {
    let n = msg.len().min(err_cap);
    // SAFETY: the host passes `err_cap` writable bytes at `err` and a writable `err_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err_len = n;
    }
}

/// Checks the spec's own keys: `type` only.
fn check_spec(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad spec: {e}"))?;
    let object = value.as_object().ok_or("the spec must be an object")?;
    match object.keys().find(|k| k.as_str() != "type") {
        Some(key) => Err(format!("unknown key '{key}' in a vhd spec")),
        None => Ok(()),
    }
}

unsafe extern "C" fn probe(header: *const u8, len: usize) -> i32 {
    catch_unwind(|| {
        // SAFETY: the host passes `len` readable bytes.
        let head = unsafe { std::slice::from_raw_parts(header, len) };
        i32::from(vhd::probe(head))
    })
    .unwrap_or(0)
}

unsafe extern "C" fn open(
    spec: *const u8,
    spec_len: usize,
    stream: *const HostStreamV1,
    handle: *mut *mut c_void,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host passes `spec_len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(spec, spec_len) };
        let text = std::str::from_utf8(bytes).map_err(|_| (EINVAL, "spec is not UTF-8".into()))?;
        check_spec(text).map_err(|m| (EINVAL, m))?;
        let file = HostFile(stream);
        let vhd = Vhd::open(&file).map_err(|e| (e.errno, e.message))?;
        Ok::<_, (i32, String)>(Box::into_raw(Box::new(Image { file, vhd })))
    }));
    match result {
        Ok(Ok(image)) => {
            // SAFETY: the host passes a writable handle slot.
            unsafe { *handle = image.cast() };
            0
        }
        Ok(Err((errno, msg))) => {
            write_error(&msg, err, err_cap, err_len);
            -errno
        }
        Err(_) => {
            write_error("the vhd plugin panicked", err, err_cap, err_len);
            -EIO
        }
    }
}

/// Borrows an open image.
///
/// # Safety
/// `handle` came from `open` and is not closed.
unsafe fn image<'a>(handle: *mut c_void) -> &'a Image {
    // SAFETY: per the function's contract.
    unsafe { &*(handle as *const Image) }
}

unsafe extern "C" fn info(handle: *mut c_void, size: *mut u64, snapshots: *mut u32) -> i32 {
    // SAFETY: an open handle and writable outputs, per the ABI.
    unsafe {
        *size = image(handle).vhd.size();
        *snapshots = 0;
    }
    0
}

unsafe extern "C" fn snapshot(
    _: *mut c_void,
    _: u32,
    _: *mut u8,
    _: usize,
    _: *mut usize,
    _: *mut u64,
) -> i32 {
    -EINVAL
}

/// Checks a view and range; VHD has only the head.
fn check(img: &Image, snap: i64, offset: u64, length: u64) -> Result<(), i32> {
    match offset.checked_add(length) {
        Some(end) if snap == -1 && end <= img.vhd.size() => Ok(()),
        _ => Err(-EINVAL),
    }
}

unsafe extern "C" fn read_at(
    handle: *mut c_void,
    snap: i64,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: an open handle, per the ABI.
        let img = unsafe { image(handle) };
        if let Err(rc) = check(img, snap, offset, len as u64) {
            return rc;
        }
        // SAFETY: the host passes `len` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        for piece in img.vhd.map(offset, len as u64) {
            let at = (piece.offset - offset) as usize;
            let dest = &mut out[at..at + piece.length as usize];
            match piece.file {
                Some(file_at) => {
                    if let Err(e) = img.file.read_at(file_at, dest) {
                        return -e.errno;
                    }
                }
                None => dest.fill(0),
            }
        }
        0
    }))
    .unwrap_or(-EIO)
}

unsafe extern "C" fn extents(
    handle: *mut c_void,
    snap: i64,
    offset: u64,
    length: u64,
    out: *mut ExtentV1,
    cap: usize,
    count: *mut usize,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: an open handle, per the ABI.
        let img = unsafe { image(handle) };
        if let Err(rc) = check(img, snap, offset, length) {
            return rc;
        }
        let mut list: Vec<ExtentV1> = Vec::new();
        for Piece {
            offset: at,
            length: len,
            file,
        } in img.vhd.map(offset, length)
        {
            let kind = if file.is_some() {
                EXTENT_DATA
            } else {
                EXTENT_ZERO
            };
            if let Some(last) = list.last_mut()
                && last.kind == kind
            {
                last.length += len;
                continue;
            }
            if list.len() == cap {
                break;
            }
            list.push(ExtentV1 {
                offset: at,
                length: len,
                kind,
            });
        }
        // SAFETY: the host passes `cap` writable extents and a writable count; at most `cap`
        // are written.
        unsafe {
            std::ptr::copy_nonoverlapping(list.as_ptr(), out, list.len());
            *count = list.len();
        }
        0
    }))
    .unwrap_or(-EIO)
}

unsafe extern "C" fn close(handle: *mut c_void) {
    let _ = catch_unwind(|| {
        // SAFETY: a handle from `open`, closed once.
        drop(unsafe { Box::from_raw(handle.cast::<Image>()) });
    });
}

static VTABLE: FormatPluginV1 = FormatPluginV1 {
    magic: ABI_MAGIC,
    abi_version: ABI_VERSION,
    struct_size: size_of::<FormatPluginV1>(),
    kind: KIND_FORMAT,
    name: c"vhd".as_ptr(),
    probe_len: 8,
    probe,
    open,
    info,
    snapshot,
    read_at,
    extents,
    close,
};

/// The plugin's entry point: its vtable, for hosts that speak ABI version 1.
#[unsafe(no_mangle)]
pub extern "C" fn rbdx_format_plugin_v1(host_abi: u32) -> *const FormatPluginV1 {
    if host_abi == ABI_VERSION {
        &VTABLE
    } else {
        std::ptr::null()
    }
}
