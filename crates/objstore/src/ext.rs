//! Convenience methods on every [`ObjectStore`], built from its required methods.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::{Error, ErrorKind, Result};
use crate::op::{ReadOp, WriteOp};
use crate::store::ObjectStore;
use crate::types::{IoCtx, ListOptions, ObjectStat, SnapContext, SnapId};

/// Shorthands for single-step reads and writes, and listing as a stream.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Reads `length` bytes (or up to the end) from `offset` of the head.
    async fn read(&self, io: &IoCtx, oid: &str, offset: u64, length: Option<u64>) -> Result<Bytes> {
        self.read_at(io, oid, offset, length, None).await
    }

    /// Reads from the head or a snapshot.
    async fn read_at(
        &self,
        io: &IoCtx,
        oid: &str,
        offset: u64,
        length: Option<u64>,
        snap: Option<SnapId>,
    ) -> Result<Bytes> {
        let mut result = self
            .read_op(io, oid, &ReadOp::new().read(offset, length), snap)
            .await?;
        Ok(result.take_data(0).unwrap_or_default())
    }

    /// Returns the allocated extents of a range of the head or a snapshot, with their bytes.
    async fn sparse_read(
        &self,
        io: &IoCtx,
        oid: &str,
        offset: u64,
        length: Option<u64>,
        snap: Option<SnapId>,
    ) -> Result<Vec<(u64, Bytes)>> {
        let op = ReadOp::new().sparse_read(offset, length);
        let mut result = self.read_op(io, oid, &op, snap).await?;
        Ok(result.take_sparse(0).unwrap_or_default())
    }

    /// Returns size, mtime and version of the head.
    async fn stat(&self, io: &IoCtx, oid: &str) -> Result<ObjectStat> {
        let result = self.read_op(io, oid, &ReadOp::new().stat(), None).await?;
        result
            .stat(0)
            .ok_or_else(|| Error::new(ErrorKind::Io, io.object_subject(oid)))
    }

    /// Returns true if the head exists.
    async fn exists(&self, io: &IoCtx, oid: &str) -> Result<bool> {
        match self.stat(io, oid).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Distinguish an absent object from an unknown pool or namespace.
                if matches!(e.subject(), crate::Subject::Object { .. }) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `data` at `offset` with an empty snapshot context.
    async fn write(&self, io: &IoCtx, oid: &str, offset: u64, data: Bytes) -> Result<u64> {
        self.operate(
            io,
            oid,
            &WriteOp::new().write(offset, data),
            &SnapContext::empty(),
        )
        .await
    }

    /// Replaces the content with `data` with an empty snapshot context.
    async fn write_full(&self, io: &IoCtx, oid: &str, data: Bytes) -> Result<u64> {
        self.operate(
            io,
            oid,
            &WriteOp::new().write_full(data),
            &SnapContext::empty(),
        )
        .await
    }

    /// Removes an object with an empty snapshot context.
    async fn remove(&self, io: &IoCtx, oid: &str) -> Result<u64> {
        self.operate(io, oid, &WriteOp::new().remove(), &SnapContext::empty())
            .await
    }

    /// Returns the omap values of `keys` that are set.
    async fn omap_get_by_keys(
        &self,
        io: &IoCtx,
        oid: &str,
        keys: &[&str],
    ) -> Result<BTreeMap<String, Bytes>> {
        let op = ReadOp::new().omap_get_by_keys(keys.iter().copied());
        let mut result = self.read_op(io, oid, &op, None).await?;
        Ok(result.take_map(0).unwrap_or_default())
    }

    /// Returns every omap entry of the head, following pages to the end.
    async fn omap_get_all(&self, io: &IoCtx, oid: &str) -> Result<Vec<(String, Bytes)>> {
        let mut out = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let op = ReadOp::new().omap_get_vals(start_after.as_deref(), "", 0);
            let mut result = self.read_op(io, oid, &op, None).await?;
            let (entries, more) = result.take_omap_vals(0).unwrap_or_default();
            start_after = entries.last().map(|(k, _)| k.clone());
            out.extend(entries);
            if !more || start_after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Returns every xattr of the head.
    async fn xattrs(&self, io: &IoCtx, oid: &str) -> Result<BTreeMap<String, Bytes>> {
        let mut result = self
            .read_op(io, oid, &ReadOp::new().get_xattrs(), None)
            .await?;
        Ok(result.take_map(0).unwrap_or_default())
    }

    /// Lists every object name starting with `prefix`, page by page.
    fn list_objects<'a>(&'a self, io: &'a IoCtx, prefix: &'a str) -> BoxStream<'a, Result<String>> {
        let pages = stream::try_unfold(Some(None::<String>), move |cursor| async move {
            let Some(cursor) = cursor else {
                return Ok(None);
            };
            let opts = ListOptions::default()
                .with_prefix(prefix)
                .with_cursor(cursor);
            let page = self.list_objects_opts(io, &opts).await?;
            let next = page.next.map(Some);
            Ok::<_, Error>(Some((page.names, next)))
        });
        pages
            .map(|page| match page {
                Ok(names) => stream::iter(names.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => stream::iter(vec![Err(e)]),
            })
            .flatten()
            .boxed()
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}
