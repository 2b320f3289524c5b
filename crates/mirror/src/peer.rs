//! Peers: the other sites a pool mirrors with, and how to reach them.
//!
//! A peer record (`peer_<uuid>` in `rbd_mirroring`) says who the peer is and which way images
//! go; how to reach it (gateway endpoint, certificate fingerprint, key) is a secret kept in
//! the config-key `rbd/mirror/peer/<pool id>/<uuid>`, which no peer key may read. A peer
//! announces itself by writing a registration under its own key name (`peer.<owner>`), the
//! only record its `mirror-peer` key may write here; this site adopts registrations into peer
//! records the next time it reads its configuration.

use serde::{Deserialize, Serialize};

/// Which way images go between this site and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// This site receives from the peer.
    #[serde(rename = "rx-only")]
    RxOnly,
    /// This site sends to the peer (the peer's daemon pulls).
    #[serde(rename = "tx-only")]
    TxOnly,
    /// Both ways.
    #[serde(rename = "rx-tx")]
    RxTx,
}

impl Direction {
    /// Parses `rx-only`, `tx-only` or `rx-tx`.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "rx-only" => Some(Direction::RxOnly),
            "tx-only" => Some(Direction::TxOnly),
            "rx-tx" => Some(Direction::RxTx),
            _ => None,
        }
    }

    /// Returns the name `rbd` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::RxOnly => "rx-only",
            Direction::TxOnly => "tx-only",
            Direction::RxTx => "rx-tx",
        }
    }

    /// Returns true if this site receives images from the peer.
    pub fn receives(self) -> bool {
        matches!(self, Direction::RxOnly | Direction::RxTx)
    }
}

/// A peer site of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// This site's id for the peer.
    pub uuid: String,
    /// The peer's site name.
    pub site_name: String,
    /// The mirror UUID of the peer's pool, once known.
    #[serde(default)]
    pub mirror_uuid: String,
    /// Which way images go.
    pub direction: Direction,
    /// The key this site uses at the peer (`client.<name>`).
    #[serde(default)]
    pub client_name: String,
    /// The peer's site id, once known.
    #[serde(default)]
    pub fsid: String,
}

/// How to reach a peer's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSecret {
    /// `HOST:PORT` of the peer's gateway.
    pub endpoint: String,
    /// The fingerprint of its certificate.
    pub fingerprint: String,
    /// The secret of the key named in the peer record.
    pub key: String,
}

/// What a peer wrote about itself at this site (`peer.<owner>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The peer's site name.
    pub site_name: String,
    /// The peer's site id.
    pub fsid: String,
    /// The mirror UUID of the peer's pool.
    pub mirror_uuid: String,
    /// The direction as this site should record it.
    pub direction: Direction,
    /// For a two-way import: the key (name) this site uses at the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// For a two-way import: how to reach the peer; removed once adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<PeerSecret>,
    /// When the peer last wrote it (seconds since the epoch).
    #[serde(default)]
    pub updated: u64,
}

/// Config-key holding the secret of peer `uuid` of pool `pool_id`.
pub fn secret_key(pool_id: u64, uuid: &str) -> String {
    format!("rbd/mirror/peer/{pool_id}/{uuid}")
}
