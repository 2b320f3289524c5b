//! Mirror image status: what a daemon reports about each copy it keeps or serves, written to
//! `rbd_mirroring` at its own site (`status_<global id>`) and at the site it reads from
//! (`status.<owner>.<global id>`, under the key it uses there).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long a status counts as current: a daemon refreshes its statuses every few seconds;
/// one not refreshed for this long shows as `down+...`.
pub const STALE_SECS: u64 = 20;

/// The state of a copy, as `rbd mirror image status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// Nothing is known.
    Unknown,
    /// Replay stopped on an error (the description says which, e.g. split-brain).
    Error,
    /// The initial copy or a resync is running.
    Syncing,
    /// Replay is starting.
    StartingReplay,
    /// The copy follows its primary.
    Replaying,
    /// Replay is stopping.
    StoppingReplay,
    /// Nothing to replay: the local copy is primary.
    Stopped,
}

impl StatusState {
    /// Returns the name `rbd` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Unknown => "unknown",
            StatusState::Error => "error",
            StatusState::Syncing => "syncing",
            StatusState::StartingReplay => "starting_replay",
            StatusState::Replaying => "replaying",
            StatusState::StoppingReplay => "stopping_replay",
            StatusState::Stopped => "stopped",
        }
    }
}

/// One daemon's report about one copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The state.
    pub state: StatusState,
    /// What the daemon says about it (`replaying, {...}` with figures as JSON).
    pub description: String,
    /// When it was written (seconds since the epoch).
    pub last_update: u64,
    /// The daemon, as `<id> on <host>`.
    #[serde(default)]
    pub service: String,
    /// The site whose copy this describes.
    #[serde(default)]
    pub site_name: String,
    /// Snapshot mode: the primary mirror snapshot (by id at the primary) this copy holds;
    /// the primary keeps it when it prunes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<u64>,
}

/// Returns the primary snapshot a peer's copy holds, as its status says.
pub fn synced_snap_of(status: &Status) -> Option<u64> {
    status.synced
}

/// Returns the time in seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Status {
    /// Returns true while the status is current.
    pub fn is_up(&self, now: u64) -> bool {
        now.saturating_sub(self.last_update) <= STALE_SECS
    }

    /// Returns the state as shown: `up+<state>` or `down+<state>`.
    pub fn shown_state(&self, now: u64) -> String {
        let side = if self.is_up(now) { "up" } else { "down" };
        format!("{side}+{}", self.state.as_str())
    }
}

/// Formats a time as `rbd` prints `last_update`: `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rbd_prints_them() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_796_523_783), "2026-12-06 02:23:03");
    }

    #[test]
    fn a_status_goes_down_when_not_refreshed() {
        let s = Status {
            state: StatusState::Replaying,
            description: "replaying".into(),
            last_update: 100,
            service: String::new(),
            site_name: String::new(),
            synced: None,
        };
        assert_eq!(s.shown_state(100 + STALE_SECS), "up+replaying");
        assert_eq!(s.shown_state(101 + STALE_SECS), "down+replaying");
    }
}
