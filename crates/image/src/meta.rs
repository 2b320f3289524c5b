//! Image metadata (`image-meta`): string keys with byte values in the header.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::journaling::Event;

impl Image {
    /// Returns every metadata key and value.
    pub async fn metadata(&self) -> Result<BTreeMap<String, Bytes>> {
        self.inner.refresh().await?;
        Ok(self.inner.header().metadata)
    }

    /// Returns the value of metadata `key`.
    pub async fn metadata_get(&self, key: &str) -> Result<Bytes> {
        self.metadata().await?.remove(key).ok_or_else(|| {
            Error::not_found(format!(
                "image {} has no metadata key '{key}'",
                self.inner.name
            ))
        })
    }

    /// Sets metadata `key` to `value`.
    pub async fn metadata_set(&self, key: &str, value: Bytes) -> Result<()> {
        let event = Event::MetadataSet {
            key: key.into(),
            value: value.clone(),
        };
        self.inner
            .log_op(event, self.metadata_set_now(key, value))
            .await
    }

    async fn metadata_set_now(&self, key: &str, value: Bytes) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("metadata key must not be empty"));
        }
        self.inner.check_writable()?;
        self.inner
            .update_header(|h| {
                h.metadata.insert(key.to_owned(), value.clone());
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Removes metadata `key`; `NotFound` if it is not set.
    pub async fn metadata_remove(&self, key: &str) -> Result<()> {
        let event = Event::MetadataRemove { key: key.into() };
        self.inner
            .log_op(event, self.metadata_remove_now(key))
            .await
    }

    async fn metadata_remove_now(&self, key: &str) -> Result<()> {
        self.inner.check_writable()?;
        let name = self.inner.name.clone();
        self.inner
            .update_header(|h| {
                h.metadata.remove(key).map(|_| ()).ok_or_else(|| {
                    Error::not_found(format!("image {name} has no metadata key '{key}'"))
                })
            })
            .await
            .map(|_| ())
    }
}
