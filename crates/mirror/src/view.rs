//! What `mirror image status` and `mirror pool status` show, from one site's
//! `rbd_mirroring`: this site's status of each image and the statuses peers wrote here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lease::DaemonRecord;
use crate::pool::PoolConfig;
use crate::status::{STALE_SECS, Status, format_time};

/// One site's status of an image.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    /// The site's name.
    pub site_name: String,
    /// The mirror UUID of the site's pool.
    pub mirror_uuids: String,
    /// `up+<state>` or `down+<state>`.
    pub state: String,
    /// What its daemon says.
    pub description: String,
    /// When its daemon last wrote (empty if never).
    pub last_update: String,
}

/// An image's status at this site and at its peers.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    /// The image name.
    pub name: String,
    /// Its global id.
    pub global_id: String,
    /// This site's state.
    pub state: String,
    /// What this site's daemon says.
    pub description: String,
    /// The daemon that wrote it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// When it wrote (empty if never).
    pub last_update: String,
    /// The peers' statuses.
    pub peer_sites: Vec<SiteStatus>,
}

fn shown(status: Option<&Status>, now: u64) -> (String, String, String, String) {
    match status {
        Some(s) => (
            s.shown_state(now),
            s.description.clone(),
            s.service.clone(),
            format_time(s.last_update),
        ),
        None => (
            "down+unknown".into(),
            "status not found".into(),
            String::new(),
            String::new(),
        ),
    }
}

/// Returns the status of image `name` (global id `global_id`) as this site sees it.
pub fn image_status(config: &PoolConfig, name: &str, global_id: &str, now: u64) -> ImageStatus {
    let statuses = config.statuses();
    let (state, description, service, last_update) = shown(statuses.get(global_id), now);
    let registrations = config.registrations();
    let peer_statuses = config.peer_statuses();
    let peer_sites = config
        .peers()
        .into_iter()
        .map(|peer| {
            let status = registrations
                .iter()
                .filter(|(_, r)| {
                    (!peer.fsid.is_empty() && r.fsid == peer.fsid) || r.site_name == peer.site_name
                })
                .filter_map(|(owner, _)| peer_statuses.get(&(owner.clone(), global_id.to_owned())))
                .max_by_key(|s| s.last_update);
            let (state, description, _, last_update) = shown(status, now);
            SiteStatus {
                site_name: peer.site_name,
                mirror_uuids: peer.mirror_uuid,
                state,
                description,
                last_update,
            }
        })
        .collect();
    ImageStatus {
        name: name.to_owned(),
        global_id: global_id.to_owned(),
        state,
        description,
        service,
        last_update,
        peer_sites,
    }
}

/// The health summary of a pool's mirroring.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The worst of the two below.
    pub health: String,
    /// Whether a mirror daemon of this site reports.
    pub daemon_health: String,
    /// Whether the images replay.
    pub image_health: String,
    /// Images by state.
    pub states: BTreeMap<String, usize>,
}

/// Returns the daemons of this site that reported recently.
pub fn live_daemons(config: &PoolConfig, now: u64) -> Vec<DaemonRecord> {
    config
        .records::<DaemonRecord>("daemon_")
        .into_values()
        .filter(|d| now.saturating_sub(d.heartbeat) <= STALE_SECS)
        .collect()
}

fn rank(health: &str) -> u8 {
    match health {
        "OK" => 0,
        "UNKNOWN" => 1,
        "WARNING" => 2,
        _ => 3,
    }
}

/// Summarizes the statuses of a pool's images.
pub fn summary(config: &PoolConfig, images: &[ImageStatus], now: u64) -> Summary {
    let mut states = BTreeMap::new();
    let mut image_health = "OK";
    for image in images {
        let state = image.state.split_once('+').map_or("unknown", |(_, s)| s);
        *states.entry(state.to_owned()).or_insert(0) += 1;
        let health = match (image.state.starts_with("up+"), state) {
            (_, "error") => "ERROR",
            (true, "replaying" | "stopped") => "OK",
            _ => "WARNING",
        };
        if rank(health) > rank(image_health) {
            image_health = health;
        }
    }
    let daemon_health = if live_daemons(config, now).is_empty() {
        "UNKNOWN"
    } else {
        "OK"
    };
    let health = if rank(daemon_health) > rank(image_health) {
        daemon_health
    } else {
        image_health
    };
    let health = if health == "UNKNOWN" {
        "WARNING"
    } else {
        health
    };
    Summary {
        health: health.to_owned(),
        daemon_health: daemon_health.to_owned(),
        image_health: image_health.to_owned(),
        states,
    }
}
