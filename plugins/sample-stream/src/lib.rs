//! A sample stream plugin: `{"type": "sample-pattern", "size": <bytes>, "seed": <0-255>}`.
//!
//! Byte `i` of the stream is `(seed + i / 4096) % 251`, so tests can check what they read.
//! It shows everything a vendor's plugin needs: the entry point, the vtable, spec parsing
//! with clear errors, and no unwinding across the boundary.

use std::ffi::c_void;
use std::panic::catch_unwind;

use rbdx_plugin_abi::{ABI_MAGIC, ABI_VERSION, KIND_STREAM, StreamPluginV1};

struct Pattern {
    size: u64,
    seed: u8,
}

const EINVAL: i32 = 22;
const EIO: i32 = 5;

/// Reads the value of `"key": <unsigned integer>` from a flat JSON object (enough for this
/// sample's two keys; a real plugin would use a JSON parser).
fn number(spec: &str, key: &str) -> Option<u64> {
    let at = spec.find(&format!("\"{key}\""))?;
    let rest = spec[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn write_error(msg: &str, err: *mut u8, err_cap: usize, err_len: *mut usize) {
    let n = msg.len().min(err_cap);
    // SAFETY: the host guarantees `err` points to `err_cap` writable bytes and `err_len` to
    // a writable usize.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
        *err_len = n;
    }
}

unsafe extern "C" fn open(
    spec: *const u8,
    spec_len: usize,
    handle: *mut *mut c_void,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32 {
    let result = catch_unwind(|| {
        // SAFETY: the host passes `spec_len` readable bytes at `spec`.
        let bytes = unsafe { std::slice::from_raw_parts(spec, spec_len) };
        let text = std::str::from_utf8(bytes).map_err(|_| "spec is not UTF-8".to_owned())?;
        let size = number(text, "size").ok_or("sample-pattern stream needs a numeric 'size'")?;
        let seed = number(text, "seed").unwrap_or(0);
        if seed > 255 {
            return Err("sample-pattern 'seed' must be 0 to 255".to_owned());
        }
        Ok(Box::into_raw(Box::new(Pattern {
            size,
            seed: seed as u8,
        })))
    });
    match result {
        Ok(Ok(pattern)) => {
            // SAFETY: the host passes a writable handle slot.
            unsafe { *handle = pattern.cast() };
            0
        }
        Ok(Err(msg)) => {
            write_error(&msg, err, err_cap, err_len);
            -EINVAL
        }
        Err(_) => -EIO,
    }
}

unsafe extern "C" fn size(handle: *mut c_void, size: *mut u64) -> i32 {
    // SAFETY: `handle` came from `open` and is not closed yet; `size` is writable.
    unsafe {
        let p = &*(handle as *const Pattern);
        *size = p.size;
    }
    0
}

unsafe extern "C" fn read_at(handle: *mut c_void, offset: u64, buf: *mut u8, len: usize) -> i32 {
    let result = catch_unwind(|| {
        // SAFETY: `handle` came from `open`; the host passes `len` writable bytes at `buf`.
        let (p, out) = unsafe {
            (
                &*(handle as *const Pattern),
                std::slice::from_raw_parts_mut(buf, len),
            )
        };
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > p.size)
        {
            return -EINVAL;
        }
        for (i, b) in out.iter_mut().enumerate() {
            let pos = offset + i as u64;
            *b = ((u64::from(p.seed) + pos / 4096) % 251) as u8;
        }
        0
    });
    result.unwrap_or(-EIO)
}

unsafe extern "C" fn close(handle: *mut c_void) {
    // SAFETY: `handle` came from `open` and the host closes it once.
    drop(unsafe { Box::from_raw(handle as *mut Pattern) });
}

static VTABLE: StreamPluginV1 = StreamPluginV1 {
    magic: ABI_MAGIC,
    abi_version: if cfg!(feature = "wrong-abi") {
        ABI_VERSION + 1
    } else {
        ABI_VERSION
    },
    struct_size: std::mem::size_of::<StreamPluginV1>(),
    kind: KIND_STREAM,
    name: if cfg!(feature = "builtin-name") {
        c"file".as_ptr()
    } else {
        c"sample-pattern".as_ptr()
    },
    open,
    size,
    read_at,
    close,
};

/// The plugin's entry point.
#[unsafe(no_mangle)]
pub extern "C" fn rbdx_stream_plugin_v1(_host_abi: u32) -> *const StreamPluginV1 {
    &VTABLE
}
