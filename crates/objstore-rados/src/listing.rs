//! Object listings (through the shim's object-list cursors) and snapshot sets of objects.

use std::sync::Arc;

use rbdx_objstore::snapset::SnapSet;
use rbdx_objstore::{
    CloneInfo, Error, ErrorKind, Extent, IoCtx, ListOptions, ListPage, Result, SnapId, limits,
};

use crate::cluster::{ForeignBuf, Io, cstr};
use crate::ffi;
use crate::shim_reader::ShimReader;
use crate::store::Inner;

/// librados' clone id of the head in a snapshot set (`CEPH_NOSNAP`).
const HEAD: u64 = u64::MAX - 1;

fn malformed(ctx: &IoCtx, oid: &str, what: &str) -> Error {
    Error::new(ErrorKind::Io, ctx.object_subject(oid))
        .with_detail(format!("the shim returned a malformed {what}"))
}

/// One raw page of names from `cursor`; returns the names and the next cursor.
fn raw_page(
    io: &mut Io,
    ctx: &IoCtx,
    cursor: &str,
    max: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let c_cursor = cstr(cursor, || ctx.namespace_subject())?;
    let buf: ForeignBuf = io.shim(
        // SAFETY: valid io and cursor string; the shim writes the out-pointers.
        |h, buf, len| unsafe { ffi::rbdx_object_list(h, c_cursor.as_ptr(), max, buf, len) },
        || ctx.namespace_subject(),
    )?;
    let mut r = ShimReader::new(buf);
    let parse = |r: &mut ShimReader| -> Option<(Vec<String>, Option<String>)> {
        let next = r.string()?;
        let n = r.u32()?;
        let names = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
        Some((names, (!next.is_empty()).then_some(next)))
    };
    parse(&mut r).ok_or_else(|| malformed(ctx, "", "object listing"))
}

impl Inner {
    /// Lists one page of names starting with the prefix. RADOS lists in hash order and cannot
    /// filter by prefix, so pages without a match are skipped here.
    pub(crate) async fn list_objects(
        self: &Arc<Self>,
        ctx: &IoCtx,
        opts: &ListOptions,
    ) -> Result<ListPage> {
        let opts = opts.clone();
        self.io_call(ctx, move |io, ctx| {
            let max = limits::page_len(opts.max);
            let mut cursor = opts.cursor.clone().unwrap_or_default();
            loop {
                let (names, next) = raw_page(io, ctx, &cursor, max)?;
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| n.starts_with(&opts.prefix))
                    .collect();
                match next {
                    Some(next) if names.is_empty() => cursor = next,
                    next => return Ok(ListPage { names, next }),
                }
            }
        })
        .await
    }

    /// Returns an object's clones and head.
    pub(crate) async fn list_snaps(self: &Arc<Self>, ctx: &IoCtx, oid: &str) -> Result<SnapSet> {
        let oid = oid.to_owned();
        self.io_call(ctx, move |io, ctx| {
            let c_oid = cstr(&oid, || ctx.object_subject(&oid))?;
            let buf = io.shim(
                // SAFETY: valid io and oid; the shim writes the out-pointers.
                |h, buf, len| unsafe { ffi::rbdx_list_snaps(h, c_oid.as_ptr(), buf, len) },
                || ctx.object_subject(&oid),
            )?;
            decode_snap_set(ShimReader::new(buf))
                .ok_or_else(|| malformed(ctx, &oid, "snapshot set"))
        })
        .await
    }
}

fn decode_snap_set(mut r: ShimReader) -> Option<SnapSet> {
    let seq = r.u64()?;
    let n = r.u32()?;
    let mut set = SnapSet {
        seq,
        clones: Vec::new(),
        head_size: None,
    };
    for _ in 0..n {
        let id = r.u64()?;
        let size = r.u64()?;
        let nsnaps = r.u32()?;
        let snaps = (0..nsnaps)
            .map(|_| r.u64().map(SnapId))
            .collect::<Option<Vec<_>>>()?;
        let noverlap = r.u32()?;
        let overlap = (0..noverlap)
            .map(|_| Some(Extent::new(r.u64()?, r.u64()?)))
            .collect::<Option<Vec<_>>>()?;
        if id == HEAD {
            set.head_size = Some(size);
        } else {
            set.clones.push(CloneInfo {
                id: SnapId(id),
                snaps,
                overlap,
                size,
            });
        }
    }
    set.clones.sort_by_key(|c| c.id);
    Some(set)
}
