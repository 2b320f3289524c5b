//! Safe handles over librados: the cluster connection ([`Cluster`]) and I/O contexts ([`Io`]).
//!
//! A `rados_t` is thread-safe. A `rados_ioctx_t` is safe to use from one thread at a time and
//! carries state (namespace, read snapshot, write snapshot context), so the store hands each
//! call its own [`Io`] from a pool and resets that state afterwards.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;

use rbdx_objstore::{Error, ErrorKind, PoolId, Result, SnapContext, Subject, limits};

use crate::config::RadosConfig;
use crate::errors::{check, from_errno};
use crate::ffi;

/// Turns a name into a C string; names with NUL bytes were refused by validation earlier.
pub(crate) fn cstr(s: &str, subject: impl FnOnce() -> Subject) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(subject(), "contains a NUL byte"))
}

/// A buffer malloc'd by librados or the shim, freed when dropped.
#[derive(Debug)]
pub(crate) struct ForeignBuf {
    ptr: *mut c_char,
    len: usize,
    free: unsafe extern "C" fn(*mut c_char),
}

// SAFETY: the buffer is plain memory owned exclusively by this value.
unsafe impl Send for ForeignBuf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for ForeignBuf {}

impl ForeignBuf {
    fn new(ptr: *mut c_char, len: usize, free: unsafe extern "C" fn(*mut c_char)) -> Self {
        ForeignBuf { ptr, len, free }
    }

    /// Takes ownership of a buffer librados allocated (freed with `rados_buffer_free`).
    pub(crate) fn rados(ptr: *mut c_char, len: usize) -> Self {
        ForeignBuf::new(ptr, len, free_rados_buffer)
    }
}

impl AsRef<[u8]> for ForeignBuf {
    fn as_ref(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: librados or the shim allocated `len` initialised bytes at `ptr`, owned by us
        // until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for ForeignBuf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the pointer came from the matching allocator and is freed once.
            unsafe { (self.free)(self.ptr) };
        }
    }
}

unsafe extern "C" fn free_rados_buffer(p: *mut c_char) {
    // SAFETY: the pointer was returned by librados for `rados_buffer_free`.
    unsafe { ffi::rados_buffer_free(p) }
}

unsafe extern "C" fn free_shim_buffer(p: *mut c_char) {
    // SAFETY: the pointer was returned by the shim for `rbdx_free`.
    unsafe { ffi::rbdx_free(p) }
}

/// A connection to a Ceph cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    handle: ffi::rados_t,
}

// SAFETY: librados documents `rados_t` as safe to use from several threads at once.
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

fn conf_subject(cfg: &RadosConfig) -> Subject {
    match &cfg.ceph_conf {
        Some(path) => Subject::Path(path.clone()),
        None => Subject::Store,
    }
}

impl Cluster {
    /// Connects, failing within the configured timeout when the monitors cannot be reached.
    pub(crate) fn connect(cfg: &RadosConfig) -> Result<Cluster> {
        let subject = || conf_subject(cfg);
        if let Some(path) = &cfg.ceph_conf
            && !path.exists()
        {
            return Err(
                Error::not_found(Subject::Path(path.clone())).with_detail("no such ceph.conf")
            );
        }
        let cluster_name = cstr(&cfg.cluster, subject)?;
        let name = cstr(&cfg.name, subject)?;
        let mut handle: ffi::rados_t = ptr::null_mut();
        // SAFETY: out-pointer to a local; the strings outlive the call.
        let r = unsafe { ffi::rados_create2(&mut handle, cluster_name.as_ptr(), name.as_ptr(), 0) };
        check(r, subject)?;
        let cluster = Cluster { handle };
        let conf = match &cfg.ceph_conf {
            Some(path) => Some(cstr(&path.to_string_lossy(), subject)?),
            None => None,
        };
        // SAFETY: the handle is valid; a null path searches the default locations.
        let r = unsafe {
            ffi::rados_conf_read_file(handle, conf.as_ref().map_or(ptr::null(), |c| c.as_ptr()))
        };
        check(r, subject)
            .map_err(|e| Error::new(e.kind(), subject()).with_detail("cannot read ceph.conf"))?;
        let secs = |d: std::time::Duration| d.as_secs().max(1).to_string();
        let mut options = vec![
            ("client_mount_timeout", secs(cfg.connect_timeout)),
            ("rados_mon_op_timeout", secs(cfg.op_timeout)),
            ("rados_osd_op_timeout", secs(cfg.op_timeout)),
            // The store bounds operations in flight itself (64 per session); the objecter's
            // byte throttle would otherwise block submissions of large writes.
            (
                "objecter_inflight_op_bytes",
                (64 * limits::MAX_OBJECT_SIZE).to_string(),
            ),
            ("log_to_stderr", "false".to_owned()),
            ("err_to_stderr", "false".to_owned()),
        ];
        if let Some(keyring) = &cfg.keyring {
            options.push(("keyring", keyring.to_string_lossy().into_owned()));
        }
        for (key, value) in options {
            cluster.conf_set(key, &value, subject)?;
        }
        // SAFETY: the handle is valid and configured.
        let r = unsafe { ffi::rados_connect(handle) };
        if r < 0 {
            let detail = match -r {
                libc::ETIMEDOUT => "no monitor answered in time (mon_host unreachable?)".to_owned(),
                libc::EACCES | libc::EPERM => {
                    format!(
                        "authentication as {} failed (unknown user or wrong key)",
                        cfg.name
                    )
                }
                libc::ENOENT => format!("no keyring with a key for {}", cfg.name),
                other => format!(
                    "connecting failed: {}",
                    std::io::Error::from_raw_os_error(other)
                ),
            };
            let kind = if -r == libc::ETIMEDOUT {
                ErrorKind::TimedOut
            } else {
                from_errno(r, subject()).kind()
            };
            return Err(Error::new(kind, subject()).with_detail(detail));
        }
        Ok(cluster)
    }

    fn conf_set(&self, key: &str, value: &str, subject: impl Fn() -> Subject) -> Result<()> {
        let (k, v) = (cstr(key, &subject)?, cstr(value, &subject)?);
        // SAFETY: valid handle, NUL-terminated strings living across the call.
        let r = unsafe { ffi::rados_conf_set(self.handle, k.as_ptr(), v.as_ptr()) };
        check(r, subject)?;
        Ok(())
    }

    /// The global id of this client (`client.<id>` in watcher and lock listings).
    pub(crate) fn instance_id(&self) -> u64 {
        // SAFETY: valid, connected handle.
        unsafe { ffi::rados_get_instance_id(self.handle) }
    }

    /// The cluster's fsid.
    pub(crate) fn fsid(&self) -> Option<String> {
        let mut buf = [0 as c_char; 64];
        // SAFETY: valid, connected handle; librados writes at most `buf.len()` bytes.
        let r = unsafe { ffi::rados_cluster_fsid(self.handle, buf.as_mut_ptr(), buf.len()) };
        if r < 0 {
            return None;
        }
        let bytes: Vec<u8> = buf
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8(bytes).ok()
    }

    /// This client's network address as the cluster sees it.
    pub(crate) fn addr(&self) -> String {
        let mut addrs: *mut c_char = ptr::null_mut();
        // SAFETY: valid handle; librados allocates the string, freed below.
        let r = unsafe { ffi::rados_getaddrs(self.handle, &mut addrs) };
        if r < 0 || addrs.is_null() {
            return String::new();
        }
        // SAFETY: librados returned a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(addrs) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: allocated by librados with malloc-compatible memory.
        unsafe { libc::free(addrs.cast()) };
        text
    }

    /// Creates a pool.
    pub(crate) fn pool_create(&self, name: &str) -> Result<()> {
        let subject = || Subject::Pool(name.to_owned());
        let c = cstr(name, subject)?;
        // SAFETY: valid handle and string.
        let r = unsafe { ffi::rados_pool_create(self.handle, c.as_ptr()) };
        check(r, subject)?;
        Ok(())
    }

    /// Deletes a pool.
    pub(crate) fn pool_delete(&self, name: &str) -> Result<()> {
        let subject = || Subject::Pool(name.to_owned());
        let c = cstr(name, subject)?;
        // SAFETY: valid handle and string.
        let r = unsafe { ffi::rados_pool_delete(self.handle, c.as_ptr()) };
        if r == -libc::EPERM {
            return Err(Error::new(ErrorKind::Unsupported, subject()).with_detail(
                "the monitors refuse pool deletion (set mon_allow_pool_delete = true)",
            ));
        }
        check(r, subject)?;
        Ok(())
    }

    /// Lists pool names.
    pub(crate) fn pool_names(&self) -> Result<Vec<String>> {
        let mut len = 4096usize;
        loop {
            let mut buf = vec![0u8; len];
            // SAFETY: the buffer has `len` writable bytes.
            let r = unsafe { ffi::rados_pool_list(self.handle, buf.as_mut_ptr().cast(), len) };
            check(r, || Subject::Store)?;
            let needed = r as usize;
            if needed > len {
                len = needed;
                continue;
            }
            buf.truncate(needed);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }

    /// Looks up a pool id.
    pub(crate) fn pool_lookup(&self, name: &str) -> Result<PoolId> {
        let subject = || Subject::Pool(name.to_owned());
        let c = cstr(name, subject)?;
        // SAFETY: valid handle and string.
        let id = unsafe { ffi::rados_pool_lookup(self.handle, c.as_ptr()) };
        if id < 0 {
            return Err(from_errno(id as i32, subject()));
        }
        Ok(PoolId(id as u64))
    }

    /// Looks up a pool name.
    pub(crate) fn pool_name(&self, id: PoolId) -> Result<String> {
        let mut buf = vec![0u8; 512];
        // SAFETY: the buffer has 512 writable bytes.
        let r = unsafe {
            ffi::rados_pool_reverse_lookup(
                self.handle,
                id.0 as i64,
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        check(r, || Subject::PoolId(id))?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Sends a monitor command (JSON) with input bytes; returns its output bytes.
    pub(crate) fn mon_command(
        &self,
        cmd: &serde_json::Value,
        input: &[u8],
        subject: impl FnOnce() -> Subject,
    ) -> Result<Vec<u8>> {
        let text = cstr(&cmd.to_string(), || Subject::Store)?;
        let mut cmds = [text.as_ptr()];
        let (mut out, mut out_len, mut status, mut status_len) =
            (ptr::null_mut(), 0usize, ptr::null_mut(), 0usize);
        // SAFETY: one valid command string; input slice valid; librados allocates the outputs.
        let r = unsafe {
            ffi::rados_mon_command(
                self.handle,
                cmds.as_mut_ptr(),
                1,
                input.as_ptr().cast(),
                input.len(),
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        let out = ForeignBuf::new(out, out_len, free_rados_buffer);
        let status = ForeignBuf::new(status, status_len, free_rados_buffer);
        if r < 0 {
            let message = String::from_utf8_lossy(status.as_ref()).trim().to_owned();
            let err = from_errno(r, subject());
            return Err(if message.is_empty() {
                err
            } else {
                err.with_detail(message)
            });
        }
        Ok(out.as_ref().to_vec())
    }

    /// Opens an I/O context on `pool` and `namespace`.
    pub(crate) fn io(&self, pool: PoolId, namespace: &str) -> Result<Io> {
        let mut handle: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: valid cluster handle; out-pointer to a local.
        let r = unsafe { ffi::rados_ioctx_create2(self.handle, pool.0 as i64, &mut handle) };
        check(r, || Subject::PoolId(pool))?;
        let io = Io {
            handle,
            namespace: String::new(),
        };
        let mut io = io;
        io.set_namespace(namespace);
        Ok(io)
    }

    /// Waits until no watch callback is running (before freeing watch contexts).
    pub(crate) fn watch_flush(&self) {
        // SAFETY: valid handle.
        unsafe { ffi::rados_watch_flush(self.handle) };
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: every Io of this cluster is dropped first (the store owns both and drops the
        // I/O pool before the cluster), and the handle is shut down once.
        unsafe { ffi::rados_shutdown(self.handle) }
    }
}

/// An I/O context: a pool and a namespace.
#[derive(Debug)]
pub(crate) struct Io {
    pub(crate) handle: ffi::rados_ioctx_t,
    namespace: String,
}

// SAFETY: an Io is used by one thread at a time (moved between threads, never shared).
unsafe impl Send for Io {}

impl Io {
    fn set_namespace(&mut self, namespace: &str) {
        let ns = CString::new(namespace).unwrap_or_default();
        // SAFETY: valid handle and string; librados copies it.
        unsafe { ffi::rados_ioctx_set_namespace(self.handle, ns.as_ptr()) };
        self.namespace = namespace.to_owned();
    }

    /// Reads at `snap` (or the head) from now on.
    pub(crate) fn set_read_snap(&mut self, snap: Option<u64>) {
        // SAFETY: valid handle.
        unsafe {
            ffi::rados_ioctx_snap_set_read(self.handle, snap.unwrap_or(ffi::LIBRADOS_SNAP_HEAD))
        };
    }

    /// Writes with `snapc` from now on.
    pub(crate) fn set_write_ctx(
        &mut self,
        snapc: &SnapContext,
        subject: impl FnOnce() -> Subject,
    ) -> Result<()> {
        let mut snaps: Vec<u64> = snapc.snaps.iter().map(|s| s.0).collect();
        // SAFETY: valid handle; the array has `len` elements and lives across the call.
        let r = unsafe {
            ffi::rados_ioctx_selfmanaged_snap_set_write_ctx(
                self.handle,
                snapc.seq,
                snaps.as_mut_ptr(),
                snaps.len() as i32,
            )
        };
        check(r, subject)?;
        Ok(())
    }

    /// Allocates a self-managed snapshot id.
    pub(crate) fn snap_create(&mut self, pool: PoolId) -> Result<u64> {
        let mut id = 0u64;
        // SAFETY: valid handle; out-pointer to a local.
        let r = unsafe { ffi::rados_ioctx_selfmanaged_snap_create(self.handle, &mut id) };
        check(r, || Subject::PoolId(pool))?;
        Ok(id)
    }

    /// Removes a self-managed snapshot id.
    pub(crate) fn snap_remove(
        &mut self,
        snap: u64,
        subject: impl FnOnce() -> Subject,
    ) -> Result<()> {
        // SAFETY: valid handle.
        let r = unsafe { ffi::rados_ioctx_selfmanaged_snap_remove(self.handle, snap) };
        check(r, subject)?;
        Ok(())
    }

    /// Calls an object-class method.
    pub(crate) fn exec(
        &mut self,
        oid: &str,
        class: &str,
        method: &str,
        input: &[u8],
        subject: impl Fn() -> Subject,
    ) -> Result<Vec<u8>> {
        let (o, c, m) = (
            cstr(oid, &subject)?,
            cstr(class, &subject)?,
            cstr(method, &subject)?,
        );
        let mut cap = 64 << 10;
        loop {
            let mut out = vec![0u8; cap];
            // SAFETY: valid handle and strings; input and output buffers valid for their lengths.
            let r = unsafe {
                ffi::rados_exec(
                    self.handle,
                    o.as_ptr(),
                    c.as_ptr(),
                    m.as_ptr(),
                    input.as_ptr().cast(),
                    input.len(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                )
            };
            if r == -libc::ERANGE && cap < 64 << 20 {
                cap *= 8;
                continue;
            }
            check(r, &subject)?;
            out.truncate(r as usize);
            return Ok(out);
        }
    }

    /// Calls a shim function that returns one malloc'd buffer.
    pub(crate) fn shim(
        &mut self,
        call: impl FnOnce(ffi::rados_ioctx_t, *mut *mut c_char, *mut usize) -> i32,
        subject: impl FnOnce() -> Subject,
    ) -> Result<ForeignBuf> {
        self.shim_raw(call).map_err(|r| from_errno(r, subject()))
    }

    /// Like [`Io::shim`], but fails with the raw negative errno.
    pub(crate) fn shim_raw(
        &mut self,
        call: impl FnOnce(ffi::rados_ioctx_t, *mut *mut c_char, *mut usize) -> i32,
    ) -> std::result::Result<ForeignBuf, i32> {
        let (mut buf, mut len) = (ptr::null_mut(), 0usize);
        let r = call(self.handle, &mut buf, &mut len);
        let owned = ForeignBuf::new(buf, len, free_shim_buffer);
        if r < 0 { Err(r) } else { Ok(owned) }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and destroyed once; no watch uses it (watches have their
        // own Io, dropped after unwatching).
        unsafe { ffi::rados_ioctx_destroy(self.handle) }
    }
}
