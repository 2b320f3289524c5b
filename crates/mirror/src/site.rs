//! The site: its name and its id (fsid), kept in config-keys that peers may read through
//! the gateway.

use std::sync::Arc;

use bytes::Bytes;
use rbdx_image::{Error, Result};
use rbdx_objstore::{ErrorKind as StoreKind, ObjectStore};

/// Config-key of the site name (`rbd mirror pool enable --site-name`).
pub const SITE_NAME_KEY: &str = "rbd/mirror/site_name";
/// Config-key of the site's id, so that a peer reads it through the gateway.
pub const FSID_KEY: &str = "rbd/mirror/fsid";

async fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<String>> {
    match store.config_key_get(key).await {
        Ok(v) => Ok(Some(String::from_utf8_lossy(&v).trim().to_owned())),
        Err(e) if e.kind() == StoreKind::NotFound => Ok(None),
        Err(e) => Err(Error::store(format!("cannot read config-key {key}"), e)),
    }
}

async fn set(store: &Arc<dyn ObjectStore>, key: &str, value: &str) -> Result<()> {
    store
        .config_key_set(key, Bytes::from(value.to_owned()))
        .await
        .map_err(|e| Error::store(format!("cannot set config-key {key}"), e))
}

/// Returns the site's id: the one recorded for mirroring, else the store's own (recorded
/// now), else a new one (recorded now). `record` false only reads (for a peer's store).
pub async fn fsid(store: &Arc<dyn ObjectStore>, record: bool) -> Result<String> {
    if let Some(id) = get(store, FSID_KEY).await? {
        return Ok(id);
    }
    if !record {
        return Err(Error::not_found(
            "the site has no mirroring id; enable mirroring on one of its pools first",
        ));
    }
    let id = match store.fsid() {
        Some(id) => id,
        None => rbdx_image::new_uuid()?,
    };
    set(store, FSID_KEY, &id).await?;
    Ok(id)
}

/// Returns the site name; a site that has none is named by its id.
pub async fn name(store: &Arc<dyn ObjectStore>, record: bool) -> Result<String> {
    match get(store, SITE_NAME_KEY).await? {
        Some(name) if !name.is_empty() => Ok(name),
        _ => fsid(store, record).await,
    }
}

/// Sets the site name.
pub async fn set_name(store: &Arc<dyn ObjectStore>, name: &str) -> Result<()> {
    check_name(name)?;
    set(store, SITE_NAME_KEY, name).await
}

/// Refuses a site name that is empty, too long, or holds characters outside
/// `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::invalid(format!(
            "invalid site name '{name}': use 1 to 128 of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}
