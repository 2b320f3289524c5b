//! The C ABI of rbdx stream plugins (shared libraries loaded from the plugin directory).
//!
//! A plugin exports one function, [`ENTRY_SYMBOL`]:
//!
//! ```text
//! extern "C" fn rbdx_stream_plugin_v1(host_abi: u32) -> *const StreamPluginV1
//! ```
//!
//! The host passes its [`ABI_VERSION`]; the plugin returns a pointer to a static vtable (or
//! null to refuse). The host uses the vtable only after checking `abi_version` (equal to its
//! own) and `struct_size` (at least the size it knows). Only raw pointers, lengths, integers
//! and `i32` results cross the boundary: 0 for success, a negative errno for failure. Buffers
//! are always owned by the host (the plugin fills them), so no allocator is shared.
//!
//! # Versioning rules
//!
//! - The major version is part of the symbol name (`_v1`) and of [`ABI_VERSION`]. Any change
//!   to the meaning of an existing field or function is a new major version: new symbol, new
//!   struct; a host never loads a plugin of another major version.
//! - Fields may only be appended at the end of the vtable, without changing the version;
//!   `struct_size` tells the host which of them a plugin has.
//! - The magic value `ABI_MAGIC` must never change.
//!
//! # Threads
//!
//! `size`, `read_at` and `close` may be called from any thread; `read_at` calls on one handle
//! may run concurrently. Plugins must not unwind across these functions (wrap them in
//! `catch_unwind`) and must not keep pointers the host passed after returning.

use std::ffi::{c_char, c_void};

/// The ABI version this crate describes.
pub const ABI_VERSION: u32 = 1;
/// The first field of every vtable; never change it.
pub const ABI_MAGIC: u32 = 0x5242_5850; // "RBXP"
/// The name of the entry point of version 1 plugins.
pub const ENTRY_SYMBOL: &[u8] = b"rbdx_stream_plugin_v1\0";
/// The kind of driver a vtable describes: a stream.
pub const KIND_STREAM: u32 = 1;

/// `open`: parses the stream's spec (UTF-8 JSON of the `stream` object, `spec_len` bytes)
/// and stores a handle in `*handle`. On failure, writes a UTF-8 message of at most `err_cap`
/// bytes to `err` and its length to `*err_len`.
pub type OpenFn = unsafe extern "C" fn(
    spec: *const u8,
    spec_len: usize,
    handle: *mut *mut c_void,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;
/// `size`: stores the stream's size in bytes in `*size`.
pub type SizeFn = unsafe extern "C" fn(handle: *mut c_void, size: *mut u64) -> i32;
/// `read_at`: fills exactly `len` bytes of `buf` with the stream's bytes at `offset`.
pub type ReadAtFn =
    unsafe extern "C" fn(handle: *mut c_void, offset: u64, buf: *mut u8, len: usize) -> i32;
/// `close`: releases a handle.
pub type CloseFn = unsafe extern "C" fn(handle: *mut c_void);

/// The vtable of a version 1 stream plugin.
#[repr(C)]
#[derive(Debug)]
pub struct StreamPluginV1 {
    /// Always [`ABI_MAGIC`].
    pub magic: u32,
    /// The ABI version the plugin was built for.
    pub abi_version: u32,
    /// `size_of::<StreamPluginV1>()` as the plugin knows it.
    pub struct_size: usize,
    /// [`KIND_STREAM`].
    pub kind: u32,
    /// The stream type name in specs, NUL-terminated UTF-8.
    pub name: *const c_char,
    /// Opens a stream.
    pub open: OpenFn,
    /// Returns the size.
    pub size: SizeFn,
    /// Reads bytes.
    pub read_at: ReadAtFn,
    /// Closes a handle.
    pub close: CloseFn,
}

// SAFETY: the vtable is immutable static data (function pointers and a pointer to a static
// string), so sharing it between threads is sound.
unsafe impl Sync for StreamPluginV1 {}
