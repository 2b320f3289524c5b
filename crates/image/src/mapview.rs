//! Stored object maps for readers outside the image layer (diffs, usage reports), with how far
//! each can be trusted.

use crate::error::{Error, Result};
use crate::features::Features;
use crate::header::{FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID};
use crate::image::{Image, load_object_map};
use crate::objectmap::ObjectMap;

/// An object map as stored, for the head or one snapshot.
#[derive(Debug, Clone)]
pub struct StoredMap {
    /// The map: one entry per object of that view.
    pub map: ObjectMap,
    /// True if its states tell objects changed since the previous snapshot (exists) from
    /// unchanged ones (exists-clean): the image has fast-diff and the view's flags allow it.
    pub fast_diff: bool,
}

impl Image {
    /// Returns the stored object map of the head (`snap` is `None`) or of the snapshot with
    /// store id `snap`, or `None` if the image has no object map or this one is flagged
    /// invalid, missing or of the wrong length. Reads the header afresh first.
    pub async fn stored_object_map(&self, snap: Option<u64>) -> Result<Option<StoredMap>> {
        let inner = &self.inner;
        inner.refresh().await?;
        let header = inner.header();
        if !header.features.contains(Features::OBJECT_MAP) {
            return Ok(None);
        }
        let (flags, size) = match snap {
            None => (header.flags, header.size),
            Some(id) => {
                let s = header.snapshots.get(&id).ok_or_else(|| {
                    Error::not_found(format!("snapshot id {id} of image {}", inner.name))
                })?;
                (s.flags, s.size)
            }
        };
        if flags & FLAG_OBJECT_MAP_INVALID != 0 {
            return Ok(None);
        }
        let Some(map) = load_object_map(&inner.store, &inner.io, &inner.id, snap).await? else {
            return Ok(None);
        };
        if map.len() != header.layout.num_objects(size) {
            return Ok(None);
        }
        Ok(Some(StoredMap {
            map,
            fast_diff: header.features.contains(Features::FAST_DIFF)
                && flags & FLAG_FAST_DIFF_INVALID == 0,
        }))
    }
}
