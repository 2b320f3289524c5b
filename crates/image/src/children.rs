//! The children registry (`rbd_children` in the parent's pool namespace): which clones use a
//! snapshot of an image, so that the snapshot cannot be unprotected or removed under them.
//!
//! Keys are `<parent id>.<snap id as %016x>.<child pool id>/<child namespace>/<child id>`,
//! values are the child's record as JSON.

use std::sync::Arc;

use rbdx_objstore::{IoCtx, ObjectStore, ReadOp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names;

/// A clone, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRef {
    /// The child's pool id.
    pub pool_id: u64,
    /// The child's namespace.
    pub namespace: String,
    /// The child's image id.
    pub image_id: String,
    /// 1 for a clone of a protected snapshot, 2 for a clone that needs no protection.
    #[serde(default = "format_one", skip_serializing_if = "is_format_one")]
    pub clone_format: u8,
}

fn format_one() -> u8 {
    1
}

fn is_format_one(format: &u8) -> bool {
    *format == 1
}

/// Returns the key prefix of the children of one parent snapshot.
pub fn key_prefix(parent_id: &str, snap_id: u64) -> String {
    format!("{parent_id}.{snap_id:016x}.")
}

/// Lists the children of snapshot `snap_id` of image `parent_id` (whose header is in `io`).
pub async fn list(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    parent_id: &str,
    snap_id: u64,
) -> Result<Vec<ChildRef>> {
    list_prefixed(store, io, &key_prefix(parent_id, snap_id)).await
}

/// Lists the children of every snapshot of image `parent_id`.
pub async fn list_all(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    parent_id: &str,
) -> Result<Vec<ChildRef>> {
    list_prefixed(store, io, &format!("{parent_id}.")).await
}

async fn list_prefixed(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    prefix: &str,
) -> Result<Vec<ChildRef>> {
    let prefix = prefix.to_owned();
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let op = ReadOp::new().omap_get_vals(after.as_deref(), &prefix, 0);
        let mut res = match store.read_op(io, names::CHILDREN, &op, None).await {
            Ok(res) => res,
            Err(e) if crate::directory::is_missing_object(&e) => return Ok(out),
            Err(e) => return Err(Error::store("cannot read the children registry", e)),
        };
        let (entries, more) = res.take_omap_vals(0).unwrap_or_default();
        after = entries.last().map(|(k, _)| k.clone());
        for (key, value) in entries {
            let child: ChildRef = serde_json::from_slice(&value)
                .map_err(|e| Error::corrupt(format!("children registry key {key}: {e}")))?;
            out.push(child);
        }
        if !more {
            return Ok(out);
        }
    }
}
