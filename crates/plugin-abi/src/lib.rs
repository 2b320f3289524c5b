//! The C ABI of rbdx plugins (shared libraries loaded from the plugin directory): streams
//! ([`StreamPluginV1`]) and formats ([`FormatPluginV1`]).
//!
//! A plugin exports one entry function per kind of driver it holds: [`ENTRY_SYMBOL`] for a
//! stream, [`FORMAT_ENTRY_SYMBOL`] for a format:
//!
//! ```text
//! extern "C" fn rbdx_stream_plugin_v1(host_abi: u32) -> *const StreamPluginV1
//! extern "C" fn rbdx_format_plugin_v1(host_abi: u32) -> *const FormatPluginV1
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
//! `catch_unwind`) and must not keep pointers the host passed after returning, with one
//! exception: a format plugin keeps the [`HostStreamV1`] it was opened over until its handle
//! is closed. Every format function but `probe` may block (the host calls them on threads
//! meant for blocking work), and may call the host stream's functions.

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

/// The kind of driver a vtable describes: a format (an image read from a stream the host
/// lends it). Format plugins export [`FORMAT_ENTRY_SYMBOL`] and return a [`FormatPluginV1`].
///
/// Kinds are additions, not changes: a new kind comes with its own entry symbol and vtable
/// and keeps [`ABI_VERSION`]. A host that does not know a kind never finds its symbol.
pub const KIND_FORMAT: u32 = 2;
/// The name of the entry point of version 1 format plugins:
/// `extern "C" fn rbdx_format_plugin_v1(host_abi: u32) -> *const FormatPluginV1`.
pub const FORMAT_ENTRY_SYMBOL: &[u8] = b"rbdx_format_plugin_v1\0";

/// [`ExtentV1::kind`] of a range that holds data.
pub const EXTENT_DATA: u32 = 0;
/// [`ExtentV1::kind`] of a range that reads as zeros.
pub const EXTENT_ZERO: u32 = 1;

/// A range of a stream or an image and what it holds.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtentV1 {
    /// Offset in bytes.
    pub offset: u64,
    /// Length in bytes (more than 0).
    pub length: u64,
    /// [`EXTENT_DATA`] or [`EXTENT_ZERO`].
    pub kind: u32,
}

/// `HostStreamV1::read_at`: fills exactly `len` bytes of `buf` with the stream's bytes at
/// `offset`. It blocks until they are read; call it from the threads the host calls you on
/// (or threads of your own), never while holding a lock the host may wait on.
pub type HostReadAtFn =
    unsafe extern "C" fn(ctx: *mut c_void, offset: u64, buf: *mut u8, len: usize) -> i32;
/// `HostStreamV1::extents`: writes at most `cap` extents describing the stream from `offset`
/// on (in order, contiguous, within `[offset, offset + length)`) to `out` and their number to
/// `*count`. Fewer than the whole range may be returned; ask again from where they end.
pub type HostExtentsFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    offset: u64,
    length: u64,
    out: *mut ExtentV1,
    cap: usize,
    count: *mut usize,
) -> i32;

/// A stream the host opened and lends a format plugin for the life of one format handle.
/// Its functions may be called from any thread, concurrently.
#[repr(C)]
#[derive(Debug)]
pub struct HostStreamV1 {
    /// `size_of::<HostStreamV1>()` as the host knows it.
    pub struct_size: usize,
    /// The host's state, passed back to every function.
    pub ctx: *mut c_void,
    /// The stream's size in bytes.
    pub size: u64,
    /// Reads bytes.
    pub read_at: HostReadAtFn,
    /// Says which ranges hold data and which read as zeros, as far as the stream knows.
    pub extents: HostExtentsFn,
}

/// `probe`: returns 1 if `len` bytes at `header` (the start of a stream, at most `probe_len`
/// bytes) look like this format, else 0.
pub type FormatProbeFn = unsafe extern "C" fn(header: *const u8, len: usize) -> i32;
/// `open`: opens the format over `stream` (valid until this handle is closed) with the
/// source spec's own keys (UTF-8 JSON, the spec without its `stream`), storing a handle in
/// `*handle`; on failure, writes a UTF-8 message as [`OpenFn`] does.
pub type FormatOpenFn = unsafe extern "C" fn(
    spec: *const u8,
    spec_len: usize,
    stream: *const HostStreamV1,
    handle: *mut *mut c_void,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> i32;
/// `info`: stores the head's size and the number of snapshots.
pub type FormatInfoFn =
    unsafe extern "C" fn(handle: *mut c_void, size: *mut u64, snapshots: *mut u32) -> i32;
/// `snapshot`: describes snapshot `index` (oldest first): its name (UTF-8, at most
/// `name_cap` bytes written to `name`, the full length to `*name_len`) and its size.
pub type FormatSnapshotFn = unsafe extern "C" fn(
    handle: *mut c_void,
    index: u32,
    name: *mut u8,
    name_cap: usize,
    name_len: *mut usize,
    size: *mut u64,
) -> i32;
/// `read_at`: fills exactly `len` bytes of `buf` with the view's bytes at `offset`; `snap`
/// is -1 for the head or a snapshot index.
pub type FormatReadAtFn = unsafe extern "C" fn(
    handle: *mut c_void,
    snap: i64,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> i32;
/// `extents`: as [`HostExtentsFn`], for a view of the image (`snap` as in `read_at`).
pub type FormatExtentsFn = unsafe extern "C" fn(
    handle: *mut c_void,
    snap: i64,
    offset: u64,
    length: u64,
    out: *mut ExtentV1,
    cap: usize,
    count: *mut usize,
) -> i32;

/// The vtable of a version 1 format plugin.
#[repr(C)]
#[derive(Debug)]
pub struct FormatPluginV1 {
    /// Always [`ABI_MAGIC`].
    pub magic: u32,
    /// The ABI version the plugin was built for.
    pub abi_version: u32,
    /// `size_of::<FormatPluginV1>()` as the plugin knows it.
    pub struct_size: usize,
    /// [`KIND_FORMAT`].
    pub kind: u32,
    /// The format type name in specs, NUL-terminated UTF-8.
    pub name: *const c_char,
    /// Bytes of a stream's start that `probe` looks at (0: it cannot probe).
    pub probe_len: usize,
    /// Recognises the format by its first bytes.
    pub probe: FormatProbeFn,
    /// Opens an image.
    pub open: FormatOpenFn,
    /// Size and snapshot count.
    pub info: FormatInfoFn,
    /// One snapshot.
    pub snapshot: FormatSnapshotFn,
    /// Reads bytes.
    pub read_at: FormatReadAtFn,
    /// Data and zero ranges.
    pub extents: FormatExtentsFn,
    /// Closes a handle.
    pub close: CloseFn,
}

// SAFETY: immutable static data, as for `StreamPluginV1`.
unsafe impl Sync for FormatPluginV1 {}
