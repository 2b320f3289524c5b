//! Many writes at once, one store operation per object: what the mirror daemon applies from
//! a primary's journal, where thousands of small writes land on a few hundred objects.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::WriteOp;

use crate::error::Result;
use crate::image::Image;
use crate::io::{CONCURRENCY, Effect};

impl Image {
    /// Writes every `(offset, data)` of `writes`, in order where they overlap: the writes to
    /// each object go to the store as one operation. An image whose journal this handle has
    /// open journals them one by one instead.
    pub async fn write_many(&self, writes: Vec<(u64, Bytes)>) -> Result<()> {
        if self.inner.change_log().await.is_some() {
            for (offset, data) in writes {
                self.write(offset, data).await?;
            }
            return Ok(());
        }
        self.inner.check_writable()?;
        let _gate = self.inner.gate.clone().read_owned().await;
        crate::lock::ensure_lock(&self.inner).await?;
        let header = self.inner.header();
        let mut objects: BTreeMap<u64, WriteOp> = BTreeMap::new();
        for (offset, data) in writes {
            self.inner
                .check_range(offset, data.len() as u64, header.size)?;
            for e in header.layout.map(offset, data.len() as u64) {
                let start = e.buffer_offset as usize;
                let piece = data.slice(start..start + e.length as usize);
                let op = objects.remove(&e.objectno).unwrap_or_default();
                objects.insert(e.objectno, op.write(e.offset, piece));
            }
        }
        futures::stream::iter(objects)
            .map(|(objectno, op)| self.inner.object_op(objectno, op, Effect::Write))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}
