//! Space usage per snapshot and head (`du`), from the object maps when fast-diff makes them
//! exact, else by asking the store about every data object.

use futures::TryStreamExt as _;
use rbdx_objstore::{ErrorKind as StoreKind, ObjectStoreExt as _, ReadOp, SnapId};

use crate::error::{Result, StoreContext};
use crate::features::Features;
use crate::header::{FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID, SnapInfo};
use crate::image::{Image, load_object_map};
use crate::objectmap::ObjectState;

/// The usage of one snapshot or of the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The snapshot, or `None` for the head.
    pub snapshot: Option<SnapInfo>,
    /// The size.
    pub provisioned: u64,
    /// Bytes of objects written since the previous snapshot (fast-diff), or allocated at
    /// this point (without it), at object granularity.
    pub used: u64,
}

impl Image {
    /// Returns the usage of every snapshot (oldest first) and of the head (last), and
    /// whether it came from the object maps.
    pub async fn usage(&self) -> Result<(Vec<Usage>, bool)> {
        let inner = &self.inner;
        inner.refresh().await?;
        let header = inner.header();
        let object_size = header.layout.object_size();
        let invalid = FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID;
        let exact = header.features.contains(Features::FAST_DIFF)
            && header.flags & invalid == 0
            && header.snapshots.values().all(|s| s.flags & invalid == 0);
        let points = header.views();
        let mut out = Vec::new();
        if exact {
            for (snap, size) in points {
                let map = load_object_map(
                    &inner.store,
                    &inner.io,
                    &inner.id,
                    snap.as_ref().map(|s| s.id),
                )
                .await?;
                let Some(map) = map else {
                    return self.usage_by_listing(&header).await.map(|u| (u, false));
                };
                let dirty = map
                    .iter()
                    .filter(|s| *s == ObjectState::Exists || *s == ObjectState::Pending)
                    .count() as u64;
                out.push(Usage {
                    snapshot: snap,
                    provisioned: size,
                    used: (dirty * object_size).min(size),
                });
            }
            return Ok((out, true));
        }
        self.usage_by_listing(&header).await.map(|u| (u, false))
    }

    async fn usage_by_listing(&self, header: &crate::header::Header) -> Result<Vec<Usage>> {
        let inner = &self.inner;
        let object_size = header.layout.object_size();
        let prefix = format!("{}.", header.object_prefix);
        let oids: Vec<String> = inner
            .store
            .list_objects(&inner.data_io, &prefix)
            .try_collect()
            .await
            .ctx(|| format!("cannot list the data objects of image {}", inner.name))?;
        let mut out = Vec::new();
        let points = header.views();
        for (snap, size) in points {
            let mut count = 0u64;
            for oid in &oids {
                let at = snap.as_ref().map(|s| SnapId(s.id));
                match inner
                    .store
                    .read_op(&inner.data_io, oid, &ReadOp::new().stat(), at)
                    .await
                {
                    Ok(_) => count += 1,
                    Err(e) if e.kind() == StoreKind::NotFound => {}
                    Err(e) => return Err(crate::Error::store(format!("cannot stat {oid}"), e)),
                }
            }
            out.push(Usage {
                snapshot: snap,
                provisioned: size,
                used: (count * object_size).min(size),
            });
        }
        Ok(out)
    }
}
