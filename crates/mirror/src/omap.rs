//! Reading and changing the omap of the pool's `rbd_mirroring` object.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{Error, ErrorKind, Result};
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, SnapContext, WriteOp};

/// The object that holds a pool namespace's mirroring configuration and status.
pub const MIRRORING: &str = "rbd_mirroring";

/// Reads every omap entry under `prefix` of `oid`, with the object's version (0 and nothing
/// when the object does not exist).
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    oid: &str,
    prefix: &str,
) -> Result<(BTreeMap<String, Bytes>, u64)> {
    'again: loop {
        let mut entries = BTreeMap::new();
        let mut after: Option<String> = None;
        let mut version = None;
        loop {
            let op = ReadOp::new().omap_get_vals(after.as_deref(), prefix, 0);
            let mut res = match store.read_op(io, oid, &op, None).await {
                Ok(res) => res,
                Err(e) if e.kind() == StoreKind::NotFound => return Ok((BTreeMap::new(), 0)),
                Err(e) => return Err(Error::store(format!("cannot read {oid}"), e)),
            };
            match version {
                None => version = Some(res.version),
                Some(v) if v != res.version => continue 'again,
                Some(_) => {}
            }
            let (page, more) = res
                .take_omap_vals(0)
                .ok_or_else(|| Error::corrupt(format!("reading {oid} returned no entries")))?;
            after = page.last().map(|(k, _)| k.clone());
            entries.extend(page);
            if !more {
                break;
            }
        }
        return Ok((entries, version.unwrap_or(0)));
    }
}

/// Sets and removes omap entries of `oid` in one step; with `version`, only if the object
/// is still at that version (`VersionMismatch` otherwise; 0: only if it does not exist).
pub async fn change(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    oid: &str,
    set: Vec<(String, Bytes)>,
    remove: Vec<String>,
    version: Option<u64>,
) -> std::result::Result<(), rbdx_objstore::Error> {
    let mut op = WriteOp::new();
    match version {
        Some(0) => op = op.create(true),
        Some(v) => op = op.assert_version(v),
        None => {}
    }
    if !set.is_empty() {
        op = op.omap_set(set);
    }
    if !remove.is_empty() {
        op = op.omap_remove(remove);
    }
    match store.operate(io, oid, &op, &SnapContext::empty()).await {
        Ok(_) => Ok(()),
        // Removing keys of an object that is not there removes nothing.
        Err(e) if e.kind() == StoreKind::NotFound && version.is_none() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets and removes entries of `rbd_mirroring`, unconditionally.
pub async fn update(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    set: Vec<(String, Bytes)>,
    remove: Vec<String>,
) -> Result<()> {
    change(store, io, MIRRORING, set, remove, None)
        .await
        .map_err(|e| Error::store(format!("cannot update {MIRRORING}"), e))
}

/// Returns true for the error of a lost version race (try again).
pub fn raced(e: &rbdx_objstore::Error) -> bool {
    matches!(
        e.kind(),
        StoreKind::VersionMismatch | StoreKind::AlreadyExists
    )
}

/// Encodes a record as JSON bytes.
pub fn json<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Decodes a JSON record stored under `key`.
pub fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{MIRRORING} key {key}: {e}")))
}
