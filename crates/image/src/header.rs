//! The image header: everything about an image except its data, stored in the omap of
//! `rbd_header.<id>` under RBD's key names.
//!
//! Scalars are little-endian integers (`size`, `features`, `snap_seq`, `stripe_unit`,
//! `stripe_count`, `data_pool_id`, `flags`, `snap_limit`: u64; `order`: u8); `object_prefix`
//! is UTF-8; `create_timestamp` is seconds (u64) and nanoseconds (u32). Structured records
//! (`snapshot_<id as %016x>`, `parent`) are JSON, so that a store stays readable with
//! `rbdx rados listomapvals`. Image metadata lives under `metadata_<key>` as raw bytes.
//!
//! The header is changed optimistically: read it with its object version, build a batch that
//! asserts that version, and retry from a fresh read when another client got there first.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{Features, OpFeatures};
use crate::layout::Layout;

/// Omap key prefix of snapshot records.
pub const SNAPSHOT_PREFIX: &str = "snapshot_";
/// Omap key prefix of image metadata.
pub const METADATA_PREFIX: &str = "metadata_";

/// Whether a snapshot may be cloned and must be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protection {
    /// May be removed; cannot be cloned.
    Unprotected,
    /// May be cloned; cannot be removed.
    Protected,
    /// Being unprotected (children are being checked).
    Unprotecting,
}

/// A snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapInfo {
    /// The store's snapshot id.
    pub id: u64,
    /// The name, unique within the image.
    pub name: String,
    /// The image size when the snapshot was taken.
    pub size: u64,
    /// When it was taken (seconds, nanoseconds since the epoch).
    pub timestamp: (u64, u32),
    /// Protection status.
    pub protection: Protection,
    /// Flags of the snapshot's object map (`RBD_FLAG_*`).
    #[serde(default)]
    pub flags: u64,
    /// The parent the image had when the snapshot was taken.
    #[serde(default)]
    pub parent: Option<ParentSpec>,
    /// The user's snapshot, or one removed while format 2 clones still use it.
    #[serde(default, skip_serializing_if = "SnapNamespace::is_user")]
    pub namespace: SnapNamespace,
}

/// Where a snapshot belongs, as RBD's snapshot namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SnapNamespace {
    /// A snapshot the user made and sees.
    #[default]
    User,
    /// A snapshot the user removed while format 2 clones still use it: renamed to a UUID,
    /// hidden from `snap ls`, removed for good with its last clone.
    Trash {
        /// Its name before it was removed.
        original_name: String,
    },
    /// A mirror snapshot, taken at the primary or copied by the mirror daemon.
    Mirror(crate::mirroring::MirrorSnap),
}

impl SnapNamespace {
    /// Returns true for the user's namespace.
    pub fn is_user(&self) -> bool {
        *self == SnapNamespace::User
    }

    /// Returns the mirror snapshot record, for a mirror snapshot.
    pub fn mirror(&self) -> Option<&crate::mirroring::MirrorSnap> {
        match self {
            SnapNamespace::Mirror(m) => Some(m),
            _ => None,
        }
    }
}

impl SnapInfo {
    /// Returns the snapshot time.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.timestamp.0, self.timestamp.1)
    }
}

/// A clone's parent: an image at a snapshot, and how much of it shows through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentSpec {
    /// Pool id of the parent.
    pub pool_id: u64,
    /// Namespace of the parent.
    pub namespace: String,
    /// Image id of the parent.
    pub image_id: String,
    /// Snapshot id of the parent.
    pub snap_id: u64,
    /// Bytes of the parent visible through the child.
    pub overlap: u64,
}

/// Object map flag: the object map cannot be trusted.
pub const FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
/// Object map flag: the fast-diff states cannot be trusted.
pub const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

/// An image header as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Size in bytes.
    pub size: u64,
    /// Object size and striping.
    pub layout: Layout,
    /// Enabled features.
    pub features: Features,
    /// Prefix of the data objects (`rbd_data.<id>`).
    pub object_prefix: String,
    /// The newest snapshot id the image knows of.
    pub snap_seq: u64,
    /// When the image was created.
    pub create_timestamp: (u64, u32),
    /// The pool holding the data objects, if not the header's pool.
    pub data_pool_id: Option<u64>,
    /// Head flags (`FLAG_*`).
    pub flags: u64,
    /// The maximum number of snapshots, if limited.
    pub snap_limit: Option<u64>,
    /// Snapshots by id.
    pub snapshots: BTreeMap<u64, SnapInfo>,
    /// The parent, for a clone.
    pub parent: Option<ParentSpec>,
    /// Image metadata (`image-meta`).
    pub metadata: BTreeMap<String, Bytes>,
    /// The migration this image takes part in, as source or destination.
    pub migration: Option<crate::migration::MigrationSpec>,
    /// Operation features (format 2 clones and the snapshot trash).
    pub op_features: OpFeatures,
    /// The image's part in mirroring, once mirroring is enabled for it.
    pub mirror: Option<crate::mirroring::ImageMirror>,
}

fn u64_of(key: &str, v: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| {
        Error::corrupt(format!(
            "header key {key}: expected 8 bytes, got {}",
            v.len()
        ))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

fn json_of<T: for<'de> Deserialize<'de>>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::corrupt(format!("header key {key}: {e}")))
}

fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing plain structs of integers and strings cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// Returns the current time as (seconds, nanoseconds) since the epoch.
pub fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// Returns the omap key of a snapshot record.
pub fn snapshot_key(id: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{id:016x}")
}

impl Header {
    /// Decodes a header from its omap entries.
    pub fn decode(entries: &BTreeMap<String, Bytes>) -> Result<Header> {
        let get = |key: &str| {
            entries
                .get(key)
                .ok_or_else(|| Error::corrupt(format!("image header has no '{key}'")))
        };
        let size = u64_of("size", get("size")?)?;
        let order = *get("order")?
            .first()
            .ok_or_else(|| Error::corrupt("header key order is empty"))?;
        let stripe_unit = match entries.get("stripe_unit") {
            Some(v) => u64_of("stripe_unit", v)?,
            None => 1u64 << order.min(63),
        };
        let stripe_count = match entries.get("stripe_count") {
            Some(v) => u64_of("stripe_count", v)?,
            None => 1,
        };
        let layout = Layout::new(order, stripe_unit, stripe_count)
            .map_err(|e| Error::corrupt(format!("image header: {e}")))?;
        let object_prefix = String::from_utf8(get("object_prefix")?.to_vec())
            .map_err(|_| Error::corrupt("header key object_prefix is not UTF-8"))?;
        let ts = get("create_timestamp")?;
        if ts.len() != 12 {
            return Err(Error::corrupt(
                "header key create_timestamp: expected 12 bytes",
            ));
        }
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&ts[..8]);
        let mut nanos = [0u8; 4];
        nanos.copy_from_slice(&ts[8..]);
        let mut header = Header {
            size,
            layout,
            features: Features(u64_of("features", get("features")?)?),
            object_prefix,
            snap_seq: u64_of("snap_seq", get("snap_seq")?)?,
            create_timestamp: (u64::from_le_bytes(secs), u32::from_le_bytes(nanos)),
            data_pool_id: entries
                .get("data_pool_id")
                .map(|v| u64_of("data_pool_id", v))
                .transpose()?,
            flags: entries
                .get("flags")
                .map(|v| u64_of("flags", v))
                .transpose()?
                .unwrap_or(0),
            snap_limit: entries
                .get("snap_limit")
                .map(|v| u64_of("snap_limit", v))
                .transpose()?,
            snapshots: BTreeMap::new(),
            parent: entries
                .get("parent")
                .map(|v| json_of("parent", v))
                .transpose()?,
            metadata: BTreeMap::new(),
            migration: entries
                .get("migration")
                .map(|v| json_of("migration", v))
                .transpose()?,
            op_features: OpFeatures(
                entries
                    .get("op_features")
                    .map(|v| u64_of("op_features", v))
                    .transpose()?
                    .unwrap_or(0),
            ),
            mirror: entries
                .get("mirror")
                .map(|v| json_of("mirror", v))
                .transpose()?,
        };
        for (key, value) in entries {
            if let Some(rest) = key.strip_prefix(SNAPSHOT_PREFIX) {
                let snap: SnapInfo = json_of(key, value)?;
                if u64::from_str_radix(rest, 16).ok() != Some(snap.id) {
                    return Err(Error::corrupt(format!(
                        "header key {key} holds snapshot {}",
                        snap.id
                    )));
                }
                header.snapshots.insert(snap.id, snap);
            } else if let Some(name) = key.strip_prefix(METADATA_PREFIX) {
                header.metadata.insert(name.to_owned(), value.clone());
            }
        }
        Ok(header)
    }

    /// Encodes every key of a new header.
    pub fn encode(&self) -> BTreeMap<String, Bytes> {
        let mut map = BTreeMap::new();
        map.insert(
            "size".into(),
            Bytes::copy_from_slice(&self.size.to_le_bytes()),
        );
        map.insert(
            "order".into(),
            Bytes::copy_from_slice(&[self.layout.order()]),
        );
        map.insert(
            "features".into(),
            Bytes::copy_from_slice(&self.features.0.to_le_bytes()),
        );
        map.insert(
            "object_prefix".into(),
            Bytes::from(self.object_prefix.clone()),
        );
        map.insert(
            "snap_seq".into(),
            Bytes::copy_from_slice(&self.snap_seq.to_le_bytes()),
        );
        let mut ts = Vec::with_capacity(12);
        ts.extend_from_slice(&self.create_timestamp.0.to_le_bytes());
        ts.extend_from_slice(&self.create_timestamp.1.to_le_bytes());
        map.insert("create_timestamp".into(), Bytes::from(ts));
        map.insert(
            "stripe_unit".into(),
            Bytes::copy_from_slice(&self.layout.stripe_unit().to_le_bytes()),
        );
        map.insert(
            "stripe_count".into(),
            Bytes::copy_from_slice(&self.layout.stripe_count().to_le_bytes()),
        );
        if let Some(pool) = self.data_pool_id {
            map.insert(
                "data_pool_id".into(),
                Bytes::copy_from_slice(&pool.to_le_bytes()),
            );
        }
        map.insert(
            "flags".into(),
            Bytes::copy_from_slice(&self.flags.to_le_bytes()),
        );
        if let Some(limit) = self.snap_limit {
            map.insert(
                "snap_limit".into(),
                Bytes::copy_from_slice(&limit.to_le_bytes()),
            );
        }
        for snap in self.snapshots.values() {
            map.insert(snapshot_key(snap.id), json_bytes(snap));
        }
        if let Some(parent) = &self.parent {
            map.insert("parent".into(), json_bytes(parent));
        }
        if let Some(migration) = &self.migration {
            map.insert("migration".into(), json_bytes(migration));
        }
        if let Some(mirror) = &self.mirror {
            map.insert("mirror".into(), json_bytes(mirror));
        }
        if self.op_features.0 != 0 {
            map.insert(
                "op_features".into(),
                Bytes::copy_from_slice(&self.op_features.0.to_le_bytes()),
            );
        }
        for (key, value) in &self.metadata {
            map.insert(format!("{METADATA_PREFIX}{key}"), value.clone());
        }
        map
    }

    /// Returns the keys to set and to remove to turn `old` into `self`.
    pub fn diff(&self, old: &Header) -> (BTreeMap<String, Bytes>, Vec<String>) {
        let new_map = self.encode();
        let old_map = old.encode();
        let set = new_map
            .iter()
            .filter(|(k, v)| old_map.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remove = old_map
            .keys()
            .filter(|k| !new_map.contains_key(*k))
            .cloned()
            .collect();
        (set, remove)
    }

    /// Finds a snapshot by name.
    pub fn snapshot_by_name(&self, name: &str) -> Option<&SnapInfo> {
        self.user_snapshots().find(|s| s.name == name)
    }

    /// Returns the user's snapshots (not those in the trash namespace), oldest first.
    pub fn user_snapshots(&self) -> impl Iterator<Item = &SnapInfo> {
        self.snapshots
            .values()
            .filter(|s| s.namespace == SnapNamespace::User)
    }

    /// Clears `clone-child` once neither the head nor any snapshot has a parent.
    pub fn clear_clone_child_if_detached(&mut self) {
        if self.parent.is_none() && self.snapshots.values().all(|s| s.parent.is_none()) {
            self.op_features = self.op_features.set(OpFeatures::CLONE_CHILD, false);
        }
    }

    /// Returns the features as `rbd info` shows them: with `operations` while any operation
    /// feature is set.
    pub fn shown_features(&self) -> Features {
        if self.op_features.0 == 0 {
            self.features
        } else {
            self.features.with(Features::OPERATIONS)
        }
    }

    /// Returns every view of the image with its size: the snapshots, oldest first, then the
    /// head (`None`).
    pub fn views(&self) -> Vec<(Option<SnapInfo>, u64)> {
        let mut views: Vec<(Option<SnapInfo>, u64)> = self
            .snapshots
            .values()
            .map(|s| (Some(s.clone()), s.size))
            .collect();
        views.push((None, self.size));
        views
    }

    /// Returns the creation time.
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.create_timestamp.0, self.create_timestamp.1)
    }

    /// Returns the image id, taken from the object prefix.
    pub fn id(&self) -> &str {
        self.object_prefix
            .strip_prefix("rbd_data.")
            .unwrap_or(&self.object_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            size: 1 << 30,
            layout: Layout::new(22, 1 << 20, 4).unwrap(),
            features: Features::DEFAULT,
            object_prefix: "rbd_data.abc".into(),
            snap_seq: 7,
            create_timestamp: (1_700_000_000, 5),
            data_pool_id: Some(3),
            flags: 0,
            snap_limit: None,
            snapshots: BTreeMap::from([(
                7,
                SnapInfo {
                    id: 7,
                    name: "s1".into(),
                    size: 1 << 20,
                    timestamp: (1_700_000_001, 0),
                    protection: Protection::Protected,
                    flags: 0,
                    parent: None,
                    namespace: SnapNamespace::Trash {
                        original_name: "old".into(),
                    },
                },
            )]),
            parent: None,
            metadata: BTreeMap::from([("conf_x".to_owned(), Bytes::from_static(b"1"))]),
            migration: Some(crate::migration::MigrationSpec {
                role: crate::migration::MigrationRole::Destination,
                pool_id: 1,
                namespace: String::new(),
                image_name: "src".into(),
                image_id: "123".into(),
                source_spec: None,
                snap_map: BTreeMap::from([(7, 3)]),
                overlap: 1 << 30,
                flatten: false,
                state: crate::migration::MigrationState::Executing,
                state_description: String::new(),
                copy: Some(crate::migration::CopyOrigin {
                    cluster: Some("site-a".into()),
                    head_snap: None,
                    live: false,
                }),
            }),
            op_features: OpFeatures::CLONE_PARENT.set(OpFeatures::SNAP_TRASH, true),
            mirror: Some(crate::mirroring::ImageMirror {
                global_id: "g".into(),
                mode: crate::mirroring::MirrorMode::Journal,
                primary: false,
                generation: crate::mirroring::Generation {
                    id: "gen".into(),
                    site: "site".into(),
                    predecessor: None,
                    journal_start: Some(crate::mirroring::JournalPoint {
                        object_number: 1,
                        tag_tid: 2,
                        entry_tid: 4,
                    }),
                },
                position: Some(9),
                demoted: false,
                resync: false,
                full_resync: false,
                syncing: None,
            }),
        }
    }

    #[test]
    fn encode_then_decode_gives_the_same_header() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn diff_sets_changed_keys_and_removes_dropped_ones() {
        let old = sample();
        let mut new = old.clone();
        new.size = 2 << 30;
        new.snapshots.clear();
        let (set, remove) = new.diff(&old);
        assert_eq!(set.keys().collect::<Vec<_>>(), vec!["size"]);
        assert_eq!(remove, vec![snapshot_key(7)]);
    }

    #[test]
    fn missing_or_short_keys_are_corrupt() {
        let mut map = sample().encode();
        map.insert("size".into(), Bytes::from_static(b"abc"));
        assert!(Header::decode(&map).is_err());
        map.remove("size");
        assert!(
            Header::decode(&map)
                .unwrap_err()
                .to_string()
                .contains("size")
        );
    }
}
