//! The trash (`rbd_trash`): images moved out of the directory, kept whole (header, data,
//! snapshots) until restored or removed, optionally protected until a deferment time.
//!
//! Its omap maps `id_<id>` to the entry as JSON. Moving an image to the trash adds the entry
//! first and then removes the directory entry, so a crash in between leaves the image both
//! listed and in the trash (visible and recoverable), never in neither.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rbdx_objstore::{ReadOp, SnapContext, WriteOp};
use serde::{Deserialize, Serialize};

use crate::admin::{Images, check_image_name};
use crate::directory;
use crate::error::{Error, ErrorKind, Result, StoreContext};
use crate::names;
use crate::snapshot::Progress;

/// Why an image is in the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrashSource {
    /// `trash mv` by a user.
    User,
    /// Moved by a migration (the source of a live migration).
    Migration,
}

/// An image in the trash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Image id.
    pub id: String,
    /// Image name when it was moved.
    pub name: String,
    /// Why it is there.
    pub source: TrashSource,
    /// When it was moved (seconds since the epoch).
    pub deletion_time: u64,
    /// Until when it may not be removed (seconds since the epoch).
    pub deferment_end_time: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl TrashEntry {
    /// Returns true once the deferment time has passed.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.deferment_end_time <= secs(now)
    }
}

impl Images {
    /// Moves image `name` to the trash; it may not be removed from there before `defer` has
    /// passed. Refused while clients have the image open.
    pub async fn trash_move(
        &self,
        name: &str,
        defer: Duration,
        source: TrashSource,
    ) -> Result<String> {
        let id = directory::lookup(self.store(), self.io_ctx(), name).await?;
        self.ensure_unwatched(name, &id).await?;
        let now = SystemTime::now();
        let entry = TrashEntry {
            id: id.clone(),
            name: name.to_owned(),
            source,
            deletion_time: secs(now),
            deferment_end_time: secs(now + defer),
        };
        let value = Bytes::from(serde_json::to_vec(&entry).unwrap_or_default());
        self.store()
            .operate(
                self.io_ctx(),
                names::TRASH,
                &WriteOp::new().omap_set([(format!("id_{id}"), value)]),
                &SnapContext::empty(),
            )
            .await
            .ctx(|| format!("cannot move image {name} to the trash"))?;
        directory::remove(self.store(), self.io_ctx(), name, &id).await?;
        Ok(id)
    }

    /// Lists the trash.
    pub async fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let op = ReadOp::new().omap_get_vals(after.as_deref(), "id_", 0);
            let mut res = match self
                .store()
                .read_op(self.io_ctx(), names::TRASH, &op, None)
                .await
            {
                Ok(res) => res,
                Err(e) if directory::is_missing_object(&e) => return Ok(out),
                Err(e) => return Err(Error::store("cannot read the trash", e)),
            };
            let (entries, more) = res.take_omap_vals(0).unwrap_or_default();
            after = entries.last().map(|(k, _)| k.clone());
            for (key, value) in entries {
                let entry: TrashEntry = serde_json::from_slice(&value)
                    .map_err(|e| Error::corrupt(format!("trash entry {key}: {e}")))?;
                out.push(entry);
            }
            if !more {
                return Ok(out);
            }
        }
    }

    async fn trash_get(&self, id: &str) -> Result<TrashEntry> {
        let entry = self
            .trash_list()
            .await?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| Error::not_found(format!("image id {id} is not in the trash")))?;
        if entry.source == TrashSource::Migration {
            return Err(Error::busy(format!(
                "image {} ({id}) is the source of a migration; finish it with 'rbdx migration \
                 commit' or undo it with 'rbdx migration abort'",
                entry.name
            )));
        }
        Ok(entry)
    }

    pub(crate) async fn trash_forget_entry(&self, id: &str) -> Result<()> {
        self.store()
            .operate(
                self.io_ctx(),
                names::TRASH,
                &WriteOp::new().omap_remove([format!("id_{id}")]),
                &SnapContext::empty(),
            )
            .await
            .ctx(|| format!("cannot update the trash entry of image id {id}"))?;
        Ok(())
    }

    /// Restores image `id` from the trash, under its old name or `new_name`.
    pub async fn trash_restore(&self, id: &str, new_name: Option<&str>) -> Result<String> {
        let entry = self.trash_get(id).await?;
        let name = new_name.unwrap_or(&entry.name).to_owned();
        check_image_name(&name)?;
        directory::add(self.store(), self.io_ctx(), &name, id).await?;
        self.trash_forget_entry(id).await?;
        Ok(name)
    }

    /// Removes image `id` from the trash with its data; refused before its deferment time
    /// unless `force`.
    pub async fn trash_remove(&self, id: &str, force: bool, progress: Progress<'_>) -> Result<()> {
        let entry = self.trash_get(id).await?;
        if !force && !entry.expired(SystemTime::now()) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "image {} ({id}) may not be removed before its deferment time; use --force",
                    entry.name
                ),
            ));
        }
        self.remove_data(&entry.name, id, progress).await?;
        self.trash_forget_entry(id).await?;
        progress(1, 1);
        Ok(())
    }

    /// Removes every trashed image whose deferment time is before `before`; returns how many
    /// were removed and the first failure, if any (the others are still attempted).
    pub async fn trash_purge(
        &self,
        before: SystemTime,
        progress: Progress<'_>,
    ) -> Result<(usize, Option<Error>)> {
        let entries: Vec<TrashEntry> = self
            .trash_list()
            .await?
            .into_iter()
            .filter(|e| e.expired(before) && e.source != TrashSource::Migration)
            .collect();
        let total = entries.len() as u64;
        let mut removed = 0;
        let mut first_error = None;
        for (n, entry) in entries.iter().enumerate() {
            match self.trash_remove(&entry.id, true, &|_, _| {}).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
            progress(n as u64 + 1, total);
        }
        Ok((removed, first_error))
    }
}
