//! The journal header object, `journal.<image id>`: its layout, the object sets in use, the
//! registered clients with their commit positions, and the tags.
//!
//! Each piece is one omap key holding JSON, so a header reads at a glance (`rbdx rados
//! listomapvals`) and changes by version-checked batches (read, change, write asserting the
//! version, retry on a conflict), like an image header:
//!
//! | key | value |
//! |---|---|
//! | `meta` | `{"version":1,"order":24,"splay_width":4,"pool_id":P,"max_lag_sets":64}` |
//! | `sets` | `{"minimum_set":M,"active_set":A}` |
//! | `client.<id>` | a [`Client`] (the image itself is the client with the empty id) |
//! | `tag.<tid, 20 digits>` | a [`Tag`] |
//! | `next_tag_tid` | the next tag id |

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{Error, Result};
use rbdx_objstore::{ErrorKind as StoreKind, IoCtx, ObjectStore, ReadOp, SnapContext, WriteOp};
use serde::{Deserialize, Serialize};

/// The version of the header layout this code writes. Never reuse a number.
pub const VERSION: u32 = 1;

/// Returns the header object of image `id`'s journal.
pub fn header_object(image_id: &str) -> String {
    format!("journal.{image_id}")
}

/// Returns the name prefix of image `id`'s journal data objects (`pool` is the pool id).
pub fn data_prefix(pool: u64, image_id: &str) -> String {
    format!("journal_data.{pool}.{image_id}.")
}

/// Where an entry is: the object holding it and its tag and entry ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The data object number.
    pub object_number: u64,
    /// The tag the entry was written under.
    pub tag_tid: u64,
    /// The entry id.
    pub entry_tid: u64,
}

/// Whether a client still holds back trimming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// Trimming waits for it.
    Connected,
    /// It fell too far behind (or was disconnected by hand); trimming ignores it.
    Disconnected,
}

/// A registered reader of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Its id (empty for the image itself).
    pub id: String,
    /// What it is, for people.
    pub description: String,
    /// Connected or disconnected.
    pub state: ClientState,
    /// The last entry it has applied, if any.
    pub commit_position: Option<Position>,
}

/// The entry a tag follows, when ownership moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predecessor {
    /// The site that owned the image before (empty: this site).
    pub mirror_uuid: String,
    /// True if the position below is meaningful.
    pub commit_valid: bool,
    /// The previous tag.
    pub tag_tid: u64,
    /// The last entry under it.
    pub entry_tid: u64,
}

/// A tag: entries are written under the tag of the site that owns the image, so a change of
/// owner (demote/promote) starts a new tag that names its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag id.
    pub tid: u64,
    /// The class (one per image).
    pub tag_class: u64,
    /// The owning site (empty: this site).
    pub mirror_uuid: String,
    /// What it follows, if anything.
    pub predecessor: Option<Predecessor>,
}

/// The fixed layout of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The header layout version.
    pub version: u32,
    /// Data objects hold up to 2^order bytes.
    pub order: u8,
    /// Data objects per object set (entries go round-robin across them).
    pub splay_width: u64,
    /// The pool of the data objects.
    pub pool_id: u64,
    /// A client more than this many object sets behind is disconnected by trimming.
    pub max_lag_sets: u64,
}

/// The object sets in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sets {
    /// The oldest set not trimmed.
    pub minimum_set: u64,
    /// The set entries are appended to.
    pub active_set: u64,
}

/// A whole header as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The layout.
    pub meta: Meta,
    /// The sets in use.
    pub sets: Sets,
    /// Clients by id.
    pub clients: BTreeMap<String, Client>,
    /// Tags by id.
    pub tags: BTreeMap<u64, Tag>,
    /// The next tag id.
    pub next_tag_tid: u64,
}

fn json<T: Serialize>(value: &T) -> Bytes {
    // Plain structs of numbers and strings always serialise.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::corrupt(format!("journal header key {key}: {e}")))
}

fn client_key(id: &str) -> String {
    format!("client.{id}")
}

fn tag_key(tid: u64) -> String {
    format!("tag.{tid:020}")
}

impl Header {
    /// A new header.
    pub fn new(meta: Meta) -> Self {
        Header {
            meta,
            sets: Sets::default(),
            clients: BTreeMap::new(),
            tags: BTreeMap::new(),
            next_tag_tid: 0,
        }
    }

    /// Adds a tag with the next tag id in `tag_class` for site `mirror_uuid` (empty: this
    /// site), after `predecessor`; returns its id.
    pub fn push_tag(
        &mut self,
        tag_class: u64,
        mirror_uuid: &str,
        predecessor: Option<Predecessor>,
    ) -> u64 {
        let tid = self.next_tag_tid;
        self.tags.insert(
            tid,
            Tag {
                tid,
                tag_class,
                mirror_uuid: mirror_uuid.to_owned(),
                predecessor,
            },
        );
        self.next_tag_tid = tid + 1;
        tid
    }

    /// Encodes the header as omap pairs.
    pub fn encode(&self) -> BTreeMap<String, Bytes> {
        let mut out = BTreeMap::new();
        out.insert("meta".to_owned(), json(&self.meta));
        out.insert("sets".to_owned(), json(&self.sets));
        out.insert("next_tag_tid".to_owned(), json(&self.next_tag_tid));
        for (id, c) in &self.clients {
            out.insert(client_key(id), json(c));
        }
        for (tid, t) in &self.tags {
            out.insert(tag_key(*tid), json(t));
        }
        out
    }

    /// Decodes omap pairs.
    pub fn decode(pairs: &BTreeMap<String, Bytes>) -> Result<Self> {
        let get = |key: &str| {
            pairs
                .get(key)
                .ok_or_else(|| Error::corrupt(format!("journal header has no {key}")))
        };
        let meta: Meta = parse("meta", get("meta")?)?;
        if meta.version != VERSION {
            return Err(Error::corrupt(format!(
                "journal header version {} is not known to this program",
                meta.version
            )));
        }
        let mut header = Header {
            meta,
            sets: parse("sets", get("sets")?)?,
            clients: BTreeMap::new(),
            tags: BTreeMap::new(),
            next_tag_tid: parse("next_tag_tid", get("next_tag_tid")?)?,
        };
        for (k, v) in pairs {
            if let Some(id) = k.strip_prefix("client.") {
                header.clients.insert(id.to_owned(), parse(k, v)?);
            } else if k.starts_with("tag.") {
                let tag: Tag = parse(k, v)?;
                header.tags.insert(tag.tid, tag);
            }
        }
        Ok(header)
    }

    /// Returns the newest tag.
    pub fn current_tag(&self) -> Option<&Tag> {
        self.tags.values().next_back()
    }
}

/// Reads the header of `oid` with its object version.
pub async fn read(store: &Arc<dyn ObjectStore>, io: &IoCtx, oid: &str) -> Result<(Header, u64)> {
    let op = ReadOp::new().omap_get_vals(None, "", 0);
    let mut res = store.read_op(io, oid, &op, None).await.map_err(|e| {
        if e.kind() == StoreKind::NotFound {
            Error::not_found(format!("the image has no journal ({oid})"))
        } else {
            Error::store(format!("cannot read journal header {oid}"), e)
        }
    })?;
    let (pairs, _) = res
        .take_omap_vals(0)
        .ok_or_else(|| Error::corrupt("journal header read returned no entries"))?;
    let pairs: BTreeMap<String, Bytes> = pairs.into_iter().collect();
    Ok((Header::decode(&pairs)?, res.version))
}

/// Changes the header optimistically (read, change, write asserting the version, retry on a
/// conflict); returns the new header.
pub async fn update(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    oid: &str,
    change: impl Fn(&mut Header) -> Result<()>,
) -> Result<Header> {
    loop {
        let (current, version) = read(store, io, oid).await?;
        let mut new = current.clone();
        change(&mut new)?;
        let old = current.encode();
        let encoded = new.encode();
        let set: Vec<(String, Bytes)> = encoded
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|k| !encoded.contains_key(*k))
            .cloned()
            .collect();
        if set.is_empty() && removed.is_empty() {
            return Ok(new);
        }
        let mut op = WriteOp::new().assert_version(version);
        if !set.is_empty() {
            op = op.omap_set(set);
        }
        if !removed.is_empty() {
            op = op.omap_remove(removed);
        }
        match store.operate(io, oid, &op, &SnapContext::empty()).await {
            Ok(_) => return Ok(new),
            Err(e) if e.kind() == StoreKind::VersionMismatch => continue,
            Err(e) => {
                return Err(Error::store(
                    format!("cannot update journal header {oid}"),
                    e,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encodes_and_decodes() {
        let mut h = Header::new(Meta {
            version: VERSION,
            order: 24,
            splay_width: 4,
            pool_id: 2,
            max_lag_sets: 64,
        });
        h.sets = Sets {
            minimum_set: 1,
            active_set: 3,
        };
        h.clients.insert(
            String::new(),
            Client {
                id: String::new(),
                description: "image".into(),
                state: ClientState::Connected,
                commit_position: Some(Position {
                    object_number: 13,
                    tag_tid: 0,
                    entry_tid: 99,
                }),
            },
        );
        h.push_tag(0, "", None);
        let back = Header::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert!(h.encode().contains_key("client."));
        assert!(h.encode().contains_key("tag.00000000000000000000"));
    }
}
