//! Hand-written declarations of the librados C API calls this crate uses (librados 16.2,
//! `/usr/include/rados/librados.h`), and of the C++ shim in `shim/shim.cc`. Nothing here is
//! safe to call directly; `cluster.rs` and the other modules wrap every call.

#![allow(non_camel_case_types, missing_docs)]

use std::os::raw::{c_char, c_int, c_void};

pub type rados_t = *mut c_void;
pub type rados_ioctx_t = *mut c_void;
pub type rados_write_op_t = *mut c_void;
pub type rados_completion_t = *mut c_void;
pub type rados_callback_t = unsafe extern "C" fn(cb: rados_completion_t, arg: *mut c_void);
pub type rados_snap_t = u64;

pub const LIBRADOS_SNAP_HEAD: u64 = u64::MAX - 1;

pub type rados_watchcb2_t = unsafe extern "C" fn(
    arg: *mut c_void,
    notify_id: u64,
    handle: u64,
    notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
);
pub type rbdx_read_done = unsafe extern "C" fn(
    arg: *mut c_void,
    r: c_int,
    failed_step: c_int,
    out: *const c_char,
    len: usize,
    owner: *mut c_void,
);
pub type rados_watcherrcb_t = unsafe extern "C" fn(pre: *mut c_void, cookie: u64, err: c_int);

#[link(name = "rados")]
unsafe extern "C" {
    pub fn rados_create2(
        cluster: *mut rados_t,
        clustername: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_get_instance_id(cluster: rados_t) -> u64;
    pub fn rados_cluster_fsid(cluster: rados_t, buf: *mut c_char, len: usize) -> c_int;
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;
    pub fn rados_buffer_free(buf: *mut c_char);

    pub fn rados_pool_create(cluster: rados_t, name: *const c_char) -> c_int;
    pub fn rados_pool_delete(cluster: rados_t, name: *const c_char) -> c_int;
    pub fn rados_pool_list(cluster: rados_t, buf: *mut c_char, len: usize) -> c_int;
    pub fn rados_pool_lookup(cluster: rados_t, name: *const c_char) -> i64;
    pub fn rados_pool_reverse_lookup(
        cluster: rados_t,
        id: i64,
        buf: *mut c_char,
        maxlen: usize,
    ) -> c_int;
    pub fn rados_mon_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: usize,
        inbuf: *const c_char,
        inbuflen: usize,
        outbuf: *mut *mut c_char,
        outbuflen: *mut usize,
        outs: *mut *mut c_char,
        outslen: *mut usize,
    ) -> c_int;

    pub fn rados_ioctx_create2(cluster: rados_t, pool_id: i64, ioctx: *mut rados_ioctx_t) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    pub fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);
    pub fn rados_ioctx_selfmanaged_snap_create(
        io: rados_ioctx_t,
        snapid: *mut rados_snap_t,
    ) -> c_int;
    pub fn rados_ioctx_selfmanaged_snap_remove(io: rados_ioctx_t, snapid: rados_snap_t) -> c_int;
    pub fn rados_ioctx_selfmanaged_snap_set_write_ctx(
        io: rados_ioctx_t,
        seq: rados_snap_t,
        snaps: *mut rados_snap_t,
        num_snaps: c_int,
    ) -> c_int;
    pub fn rados_ioctx_snap_set_read(io: rados_ioctx_t, snap: rados_snap_t);

    pub fn rados_create_write_op() -> rados_write_op_t;
    pub fn rados_release_write_op(op: rados_write_op_t);
    pub fn rados_write_op_assert_exists(op: rados_write_op_t);
    pub fn rados_write_op_assert_version(op: rados_write_op_t, ver: u64);
    pub fn rados_write_op_cmpxattr(
        op: rados_write_op_t,
        name: *const c_char,
        op_: u8,
        value: *const c_char,
        len: usize,
    );
    pub fn rados_write_op_cmpext(
        op: rados_write_op_t,
        buf: *const c_char,
        len: usize,
        off: u64,
        prval: *mut c_int,
    );
    pub fn rados_write_op_create(op: rados_write_op_t, exclusive: c_int, category: *const c_char);
    pub fn rados_write_op_write(op: rados_write_op_t, buf: *const c_char, len: usize, off: u64);
    pub fn rados_write_op_write_full(op: rados_write_op_t, buf: *const c_char, len: usize);
    pub fn rados_write_op_zero(op: rados_write_op_t, off: u64, len: u64);
    pub fn rados_write_op_truncate(op: rados_write_op_t, off: u64);
    pub fn rados_write_op_remove(op: rados_write_op_t);
    pub fn rados_write_op_omap_set2(
        op: rados_write_op_t,
        keys: *const *const c_char,
        vals: *const *const c_char,
        key_lens: *const usize,
        val_lens: *const usize,
        num: usize,
    );
    pub fn rados_write_op_omap_rm_keys2(
        op: rados_write_op_t,
        keys: *const *const c_char,
        key_lens: *const usize,
        num: usize,
    );
    pub fn rados_write_op_omap_clear(op: rados_write_op_t);
    pub fn rados_write_op_setxattr(
        op: rados_write_op_t,
        name: *const c_char,
        value: *const c_char,
        len: usize,
    );
    pub fn rados_write_op_rmxattr(op: rados_write_op_t, name: *const c_char);
    pub fn rados_aio_create_completion2(
        cb_arg: *mut c_void,
        cb_complete: rados_callback_t,
        pc: *mut rados_completion_t,
    ) -> c_int;
    pub fn rados_aio_get_return_value(c: rados_completion_t) -> c_int;
    pub fn rados_aio_get_version(c: rados_completion_t) -> u64;
    pub fn rados_aio_release(c: rados_completion_t);
    pub fn rados_aio_write_op_operate(
        op: rados_write_op_t,
        io: rados_ioctx_t,
        completion: rados_completion_t,
        oid: *const c_char,
        mtime: *mut libc::time_t,
        flags: c_int,
    ) -> c_int;

    pub fn rados_exec(
        io: rados_ioctx_t,
        oid: *const c_char,
        cls: *const c_char,
        method: *const c_char,
        in_buf: *const c_char,
        in_len: usize,
        buf: *mut c_char,
        out_len: usize,
    ) -> c_int;

    pub fn rados_watch3(
        io: rados_ioctx_t,
        oid: *const c_char,
        cookie: *mut u64,
        watchcb: rados_watchcb2_t,
        watcherrcb: rados_watcherrcb_t,
        timeout: u32,
        arg: *mut c_void,
    ) -> c_int;
    pub fn rados_unwatch2(io: rados_ioctx_t, cookie: u64) -> c_int;
    pub fn rados_watch_flush(cluster: rados_t) -> c_int;
    pub fn rados_notify2(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *const c_char,
        buf_len: c_int,
        timeout_ms: u64,
        reply: *mut *mut c_char,
        reply_len: *mut usize,
    ) -> c_int;
    pub fn rados_notify_ack(
        io: rados_ioctx_t,
        oid: *const c_char,
        notify_id: u64,
        cookie: u64,
        buf: *const c_char,
        buf_len: c_int,
    ) -> c_int;
}

unsafe extern "C" {
    pub fn rbdx_free(buf: *mut c_char);
    pub fn rbdx_read_release(job: *mut c_void);
    pub fn rbdx_aio_read_op(
        io: rados_ioctx_t,
        oid: *const c_char,
        in_buf: *const c_char,
        in_len: usize,
        done: rbdx_read_done,
        arg: *mut c_void,
    ) -> c_int;
    pub fn rbdx_list_snaps(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut *mut c_char,
        out_len: *mut usize,
    ) -> c_int;
    pub fn rbdx_list_watchers(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut *mut c_char,
        out_len: *mut usize,
    ) -> c_int;
    pub fn rbdx_object_list(
        io: rados_ioctx_t,
        cursor: *const c_char,
        max: usize,
        buf: *mut *mut c_char,
        out_len: *mut usize,
    ) -> c_int;
}
