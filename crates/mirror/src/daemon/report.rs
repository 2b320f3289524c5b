//! Writes a replayer's status at both sites, at most once a second unless the state
//! changes, and at least every few seconds while the replayer runs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::omap::{self, MIRRORING, json};
use crate::status::{Status, StatusState, now_secs};

use super::site::{Remote, Side};

/// How often an unchanged status is written again.
pub const REFRESH: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Last {
    state: Option<StatusState>,
    written: Option<Instant>,
}

/// The status writer of one image.
#[derive(Debug)]
pub struct Reporter {
    local: Side,
    remote: Remote,
    global_id: String,
    service: String,
    site_name: String,
    last: Mutex<Last>,
}

impl Reporter {
    /// Writes the status of image `global_id` at `local` and at `remote`.
    pub fn new(
        local: Side,
        remote: Remote,
        global_id: String,
        service: String,
        site_name: String,
    ) -> Reporter {
        Reporter {
            local,
            remote,
            global_id,
            service,
            site_name,
            last: Mutex::new(Last::default()),
        }
    }

    /// Reports `state` with `description`; skipped if the same state was written less than a
    /// second ago.
    pub async fn report(&self, state: StatusState, description: &str, synced: Option<u64>) {
        {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.state == Some(state)
                && last
                    .written
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return;
            }
        }
        self.write(state, description, synced).await;
    }

    /// Returns true once the status is due to be written again.
    pub fn due(&self) -> bool {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.written.is_none_or(|t| t.elapsed() >= REFRESH)
    }

    /// Writes the status now.
    pub async fn write(&self, state: StatusState, description: &str, synced: Option<u64>) {
        let status = Status {
            state,
            description: description.to_owned(),
            last_update: now_secs(),
            service: self.service.clone(),
            site_name: self.site_name.clone(),
            synced,
        };
        if let Err(e) = self
            .local
            .mirror()
            .put_status(&self.global_id, &status)
            .await
        {
            tracing::warn!("cannot write the status of image {}: {e}", self.global_id);
        }
        let key = format!("status.{}.{}", self.remote.owner, self.global_id);
        if let Err(e) = omap::change(
            self.remote.side.store(),
            &self.remote.side.io,
            MIRRORING,
            vec![(key, json(&status))],
            Vec::new(),
            None,
        )
        .await
        {
            tracing::debug!(
                "cannot write the status of image {} at site {}: {e}",
                self.global_id,
                self.remote.peer.site_name
            );
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.state = Some(state);
        last.written = Some(Instant::now());
    }
}
