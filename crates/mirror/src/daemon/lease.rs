//! Leases: each image is replayed by exactly one daemon of a site. A daemon holds an image's
//! lease (`lease_<global id>` in `rbd_mirroring`) by renewing it; a lease not renewed in time
//! may be taken by another daemon. A daemon restarted under the same id takes its own leases
//! back at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbdx_image::{Error, Result};
use rbdx_objstore::{IoCtx, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::omap::{self, MIRRORING, json, parse, raced};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(15);

/// A lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The daemon holding it.
    pub daemon: String,
    /// When it runs out (milliseconds since the epoch).
    pub expires: u64,
}

/// Returns the time in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Takes or renews the lease of image `global_id` for daemon `daemon`; returns false if
/// another daemon holds it.
pub async fn take(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    global_id: &str,
    daemon: &str,
) -> Result<bool> {
    let key = format!("lease_{global_id}");
    loop {
        let (entries, version) = omap::read(store, io, MIRRORING, &key).await?;
        if let Some(v) = entries.get(&key) {
            let held: Lease = parse(&key, v)?;
            if held.daemon != daemon && held.expires > now_ms() {
                return Ok(false);
            }
        }
        let lease = Lease {
            daemon: daemon.to_owned(),
            expires: now_ms() + LEASE.as_millis() as u64,
        };
        match omap::change(
            store,
            io,
            MIRRORING,
            vec![(key.clone(), json(&lease))],
            Vec::new(),
            Some(version),
        )
        .await
        {
            Ok(()) => return Ok(true),
            Err(e) if raced(&e) => continue,
            Err(e) => return Err(Error::store("cannot write a mirror lease", e)),
        }
    }
}

/// Gives up the lease of image `global_id` if daemon `daemon` holds it.
pub async fn release(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    global_id: &str,
    daemon: &str,
) -> Result<()> {
    let key = format!("lease_{global_id}");
    loop {
        let (entries, version) = omap::read(store, io, MIRRORING, &key).await?;
        let Some(v) = entries.get(&key) else {
            return Ok(());
        };
        let held: Lease = parse(&key, v)?;
        if held.daemon != daemon {
            return Ok(());
        }
        match omap::change(
            store,
            io,
            MIRRORING,
            Vec::new(),
            vec![key.clone()],
            Some(version),
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if raced(&e) => continue,
            Err(e) => return Err(Error::store("cannot release a mirror lease", e)),
        }
    }
}

/// A daemon's heartbeat record (`daemon_<id>`), for `mirror pool status` and for sharing
/// images between daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The daemon's id.
    pub id: String,
    /// Its host.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// When it last wrote (seconds since the epoch).
    pub heartbeat: u64,
}
