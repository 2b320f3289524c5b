//! What mirroring asks of an image: its mirroring record, mirror snapshots, and a point
//! where every earlier write is applied (demote and promote happen there).

use crate::error::{Error, Result};
use crate::header::{Header, SnapInfo, SnapNamespace};
use crate::image::{Image, Inner};
use crate::journaling::Event;
use crate::mirroring::{ImageMirror, MirrorSnap};

impl Image {
    /// Changes the image's mirroring record (allowed on any handle: it is how a copy is
    /// promoted or demoted); other clients see the change at their next write.
    pub async fn mirror_update(
        &self,
        change: impl Fn(&mut Option<ImageMirror>) -> Result<()>,
    ) -> Result<Header> {
        self.inner.update_header(|h| change(&mut h.mirror)).await
    }

    /// Runs `f` with the exclusive lock held (taken from its owner if need be) and every
    /// write of this handle drained; events `f` journals with [`Image::journal_event`] follow
    /// every earlier write. Snapshot operations may be called inside `f`.
    pub async fn quiesced<T>(&self, f: impl AsyncFnOnce() -> Result<T>) -> Result<T> {
        let inner = &self.inner;
        crate::lock::ensure_lock(inner).await?;
        let gate = inner.quiesce().await;
        let result = if gate.is_some() {
            Inner::inside_quiesce(f()).await
        } else {
            f().await
        };
        drop(gate);
        result
    }

    /// Appends `event` to the image's journal, if this handle has it open, and returns its
    /// entry id. The event changes nothing in the image (a demotion or promotion marker).
    pub async fn journal_event(&self, event: Event) -> Result<Option<u64>> {
        let tid = self.inner.log(|| event).await?;
        self.inner.log_applied(tid).await?;
        Ok(tid)
    }

    /// Releases the exclusive lock if this handle holds it.
    pub async fn release_lock(&self) -> Result<()> {
        crate::lock::release(&self.inner).await
    }

    /// Takes a mirror snapshot named `name` recording `record`.
    pub async fn mirror_snap_create(&self, name: &str, record: MirrorSnap) -> Result<SnapInfo> {
        self.create_snapshot(name, SnapNamespace::Mirror(record))
            .await
    }

    /// Returns the mirror snapshots, oldest first (re-reads the header).
    pub async fn mirror_snapshots(&self) -> Result<Vec<(SnapInfo, MirrorSnap)>> {
        self.inner.refresh().await?;
        Ok(self
            .inner
            .header()
            .snapshots
            .into_values()
            .filter_map(|s| s.namespace.mirror().cloned().map(|m| (s, m)))
            .collect())
    }

    /// Changes the record of mirror snapshot `id`.
    pub async fn mirror_snap_update(
        &self,
        id: u64,
        change: impl Fn(&mut MirrorSnap),
    ) -> Result<()> {
        let name = self.inner.name.clone();
        self.inner
            .update_header(
                |h| match h.snapshots.get_mut(&id).map(|s| &mut s.namespace) {
                    Some(SnapNamespace::Mirror(m)) => {
                        change(m);
                        Ok(())
                    }
                    _ => Err(Error::not_found(format!(
                        "image {name} has no mirror snapshot {id}"
                    ))),
                },
            )
            .await?;
        Ok(())
    }

    /// Removes mirror snapshot `id` (nothing to do if it is gone already).
    pub async fn mirror_snap_remove(&self, id: u64) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _gate = inner.quiesce().await;
        crate::lock::ensure_lock(inner).await?;
        inner.refresh().await?;
        let Some(snap) = inner.header().snapshots.get(&id).cloned() else {
            return Ok(());
        };
        if snap.namespace.mirror().is_none() {
            return Err(Error::invalid(format!(
                "snapshot {} of image {} is not a mirror snapshot",
                snap.name, inner.name
            )));
        }
        self.remove_snapshot(&snap).await
    }
}
