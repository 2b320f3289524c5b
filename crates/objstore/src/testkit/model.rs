//! A deliberately simple model of one object (a byte vector, two maps), used as the oracle of
//! the randomized cases. It shares no code with any backend.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::op::{WriteOp, WriteStep};
use crate::{IoCtx, ObjectStore};

/// Everything a client can observe of an object's head, except its version and mtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectImage {
    /// The object exists.
    pub exists: bool,
    /// Its bytes (empty if absent).
    pub data: Vec<u8>,
    /// Its omap.
    pub omap: BTreeMap<String, Bytes>,
    /// Its xattrs.
    pub xattrs: BTreeMap<String, Bytes>,
}

impl ObjectImage {
    /// Applies a batch all-or-nothing; returns false (and leaves the image alone) if a step
    /// fails. Version assertions always fail (the model has no versions; generated batches
    /// only assert impossible versions).
    pub fn apply(&mut self, op: &WriteOp) -> bool {
        let mut work = self.clone();
        for step in op.steps() {
            if !work.apply_step(step) {
                return false;
            }
        }
        *self = work;
        true
    }

    fn apply_step(&mut self, step: &WriteStep) -> bool {
        match step {
            WriteStep::AssertExists => self.exists,
            WriteStep::Create { exclusive } => {
                if self.exists && *exclusive {
                    return false;
                }
                self.exists = true;
                true
            }
            WriteStep::AssertVersion(_) => false,
            WriteStep::CmpXattr { name, op, value } => {
                self.exists
                    && op.holds(
                        self.xattrs.get(name).map(|v| &v[..]).unwrap_or_default(),
                        value,
                    )
            }
            WriteStep::CmpExt { offset, data } => {
                if !self.exists {
                    return false;
                }
                (0..data.len()).all(|i| {
                    let pos = *offset as usize + i;
                    self.data.get(pos).copied().unwrap_or(0) == data[i]
                })
            }
            WriteStep::Write { offset, data } => {
                self.exists = true;
                if !data.is_empty() {
                    let start = *offset as usize;
                    let end = start + data.len();
                    if self.data.len() < end {
                        self.data.resize(end, 0);
                    }
                    self.data[start..end].copy_from_slice(data);
                }
                true
            }
            WriteStep::WriteFull(data) => {
                self.exists = true;
                self.data = data.to_vec();
                true
            }
            WriteStep::Zero { offset, length } => {
                let (start, end) = (*offset as usize, (offset + length) as usize);
                if self.exists && start < self.data.len() {
                    if end >= self.data.len() {
                        self.data.truncate(start);
                    } else {
                        self.data[start..end].fill(0);
                    }
                }
                true
            }
            WriteStep::Truncate(size) => {
                if self.exists {
                    self.data.resize(*size as usize, 0);
                }
                true
            }
            WriteStep::Remove => {
                if !self.exists {
                    return false;
                }
                *self = ObjectImage::default();
                true
            }
            WriteStep::OmapSet(map) => {
                self.exists = true;
                self.omap
                    .extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                true
            }
            WriteStep::OmapRemove(keys) => {
                if !self.exists {
                    return false;
                }
                for key in keys {
                    self.omap.remove(key);
                }
                true
            }
            WriteStep::OmapClear => {
                if !self.exists {
                    return false;
                }
                self.omap.clear();
                true
            }
            WriteStep::XattrSet { name, value } => {
                self.exists = true;
                self.xattrs.insert(name.clone(), value.clone());
                true
            }
            WriteStep::XattrRemove(name) => {
                self.xattrs.remove(name);
                self.exists
            }
        }
    }

    /// Reads what a store holds for `oid` at the head or a snapshot.
    pub async fn load(
        store: &dyn ObjectStore,
        io: &IoCtx,
        oid: &str,
        snap: Option<crate::SnapId>,
    ) -> crate::Result<ObjectImage> {
        let op = crate::ReadOp::new().read(0, None).get_xattrs();
        let mut result = match store.read_op(io, oid, &op, snap).await {
            Ok(result) => result,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                if matches!(e.subject(), crate::Subject::Object { .. }) {
                    return Ok(ObjectImage::default());
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let data = result.take_data(0).unwrap_or_default().to_vec();
        let xattrs = result.take_map(1).unwrap_or_default();
        let mut omap = BTreeMap::new();
        let mut start_after: Option<String> = None;
        loop {
            let op = crate::ReadOp::new().omap_get_vals(start_after.as_deref(), "", 0);
            let mut page = store.read_op(io, oid, &op, snap).await?;
            let (entries, more) = page.take_omap_vals(0).unwrap_or_default();
            start_after = entries.last().map(|(k, _)| k.clone());
            omap.extend(entries);
            if !more || start_after.is_none() {
                break;
            }
        }
        Ok(ObjectImage {
            exists: true,
            data,
            omap,
            xattrs,
        })
    }
}
