//! An image's part in mirroring, as its header records it: whether it is the primary copy
//! (the one clients write) or a non-primary copy kept in step by the mirror daemon, and which
//! history of writes its data belongs to.
//!
//! The history is a chain of generations. A generation starts when an image is first
//! enabled for mirroring or promoted, at the site where it becomes primary, and names the
//! point of its predecessor it continues from. Positions inside a generation are journal
//! entry ids (journal mode) or the primary's mirror snapshot ids (snapshot mode). Two copies
//! can follow each other only when one's generation continues from exactly where the other
//! stopped; anything else is split-brain.

use serde::{Deserialize, Serialize};

/// How an image is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    /// Every change is journaled and replayed in order at the peer.
    Journal,
    /// Mirror snapshots are taken at the primary and their deltas copied to the peer.
    Snapshot,
}

impl MirrorMode {
    /// Returns the name `rbd` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorMode::Journal => "journal",
            MirrorMode::Snapshot => "snapshot",
        }
    }
}

/// Where a generation continues from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    /// The generation it continues.
    pub generation: String,
    /// The last position of that generation it holds (`None`: none of it).
    pub position: Option<u64>,
}

/// One stretch of an image's history with one primary site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// A unique id (a UUID).
    pub id: String,
    /// Mirror UUID of the site whose image was primary in it.
    pub site: String,
    /// What it continues from; `None` for the first generation.
    pub predecessor: Option<Branch>,
    /// Journal mode: the position of the primary's journal when the generation began; its
    /// entries start after it.
    #[serde(default)]
    pub journal_start: Option<JournalPoint>,
}

/// A position in an image journal (as the journal's commit positions name one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPoint {
    /// The journal data object holding the entry.
    pub object_number: u64,
    /// The tag the entry was written under.
    pub tag_tid: u64,
    /// The entry's id.
    pub entry_tid: u64,
}

/// An image's mirroring record (header key `mirror`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMirror {
    /// The id that names the image at every site.
    pub global_id: String,
    /// Journal or snapshot mode.
    pub mode: MirrorMode,
    /// True for the copy clients write.
    pub primary: bool,
    /// The generation this copy's data belongs to.
    pub generation: Generation,
    /// The last position of `generation` this copy holds. Set on a non-primary copy as it
    /// replays, and on a primary when it is demoted.
    #[serde(default)]
    pub position: Option<u64>,
    /// True once this copy, while primary, was demoted in order: `position` is then where
    /// its generation ends.
    #[serde(default)]
    pub demoted: bool,
    /// A resync was asked for: the mirror daemon replaces this copy's data from the primary.
    #[serde(default)]
    pub resync: bool,
    /// The resync asked for copies everything, even where a delta would do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_resync: bool,
    /// Snapshot mode: the primary mirror snapshot whose delta is being copied into the head,
    /// while it is (the head then matches no snapshot; a forced promotion rolls it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syncing: Option<u64>,
}

/// The state of a mirror snapshot, as `rbd snap ls --all` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MirrorSnapState {
    /// Taken at the primary.
    #[serde(rename = "primary")]
    Primary,
    /// Taken at the primary when it was demoted.
    #[serde(rename = "primary (demoted)")]
    PrimaryDemoted,
    /// A copy of a primary mirror snapshot, made by the mirror daemon.
    #[serde(rename = "non-primary")]
    NonPrimary,
    /// A copy of a demotion snapshot.
    #[serde(rename = "non-primary (demoted)")]
    NonPrimaryDemoted,
}

impl MirrorSnapState {
    /// Returns true for the states of snapshots taken at the primary.
    pub fn is_primary(self) -> bool {
        matches!(
            self,
            MirrorSnapState::Primary | MirrorSnapState::PrimaryDemoted
        )
    }

    /// Returns true for the states of snapshots taken at a demotion.
    pub fn is_demoted(self) -> bool {
        matches!(
            self,
            MirrorSnapState::PrimaryDemoted | MirrorSnapState::NonPrimaryDemoted
        )
    }
}

/// What a mirror snapshot records (the `mirror` snapshot namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorSnap {
    /// Primary or non-primary, demoted or not.
    pub state: MirrorSnapState,
    /// Peers that have not copied it yet (primary snapshots).
    #[serde(default)]
    pub mirror_peer_uuids: Vec<String>,
    /// False while a non-primary snapshot's delta is being copied.
    pub complete: bool,
    /// Non-primary: the mirror UUID of the primary site.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_mirror_uuid: String,
    /// Non-primary: the id of the primary snapshot it copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_snap_id: Option<u64>,
    /// Non-primary: the objects below this one are copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_copied_object_number: Option<u64>,
}
