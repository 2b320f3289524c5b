//! The progress record of a migration's background copy, `rbdx_migration.<destination id>`
//! next to the destination's header: what `status` shows from any process, and the
//! checkpoint a re-run `execute` resumes from.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rbdx_image::{Error, Result};
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, SnapContext, WriteOp};
use serde::{Deserialize, Serialize};

/// How far the copy of a migration has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// Bytes of data copied.
    pub copied_bytes: u64,
    /// Bytes of data to copy in all.
    pub total_bytes: u64,
    /// Every object below this number is copied.
    pub next_object: u64,
    /// Objects in the image.
    pub objects: u64,
    /// Copy rate of the current run, bytes per second.
    pub rate: f64,
    /// When this record was written (seconds since the epoch).
    pub updated: u64,
}

impl ProgressRecord {
    /// Returns the percentage done (by bytes; by objects when there is no data).
    pub fn percent(&self) -> u64 {
        (self.copied_bytes.min(self.total_bytes) * 100)
            .checked_div(self.total_bytes)
            .or_else(|| (self.next_object.min(self.objects) * 100).checked_div(self.objects))
            .unwrap_or(100)
    }

    /// Returns the estimated seconds left at the current rate, if known.
    pub fn eta_secs(&self) -> Option<u64> {
        (self.rate > 0.0).then(|| {
            (self.total_bytes.saturating_sub(self.copied_bytes) as f64 / self.rate).ceil() as u64
        })
    }
}

fn oid(id: &str) -> String {
    format!("rbdx_migration.{id}")
}

/// Returns the current time in seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Reads the progress record of destination `id`, if there is one.
pub async fn load(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
) -> Result<Option<ProgressRecord>> {
    let op = ReadOp::new().read(0, None);
    match store.read_op(io, &oid(id), &op, None).await {
        Ok(mut res) => {
            let data = res.take_data(0).unwrap_or_default();
            Ok(serde_json::from_slice(&data).ok())
        }
        Err(e) if e.kind() == StoreKind::NotFound => Ok(None),
        Err(e) => Err(Error::store("cannot read the migration progress", e)),
    }
}

/// Writes the progress record of destination `id`.
pub async fn save(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
    record: &ProgressRecord,
) -> Result<()> {
    let data = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
    store
        .operate(
            io,
            &oid(id),
            &WriteOp::new().write_full(data),
            &SnapContext::empty(),
        )
        .await
        .map_err(|e| Error::store("cannot write the migration progress", e))?;
    Ok(())
}

/// Removes the progress record of destination `id`.
pub async fn remove(store: &Arc<dyn ObjectStore>, io: &IoCtx, id: &str) -> Result<()> {
    match store
        .operate(
            io,
            &oid(id),
            &WriteOp::new().remove(),
            &SnapContext::empty(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == StoreKind::NotFound => Ok(()),
        Err(e) => Err(Error::store("cannot remove the migration progress", e)),
    }
}
