//! One object of the memory backend: head, clones, locks; applying batches and reads to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use bytes::Bytes;

use super::blocks::Blocks;
use crate::error::{Error, ErrorKind, Result, Subject};
use crate::extents::ExtentSet;
use crate::lock::LockState;
use crate::op::{ReadOp, ReadOutput, ReadResult, ReadStep, WriteOp, WriteStep};
use crate::snapset::{self, CloneMeta, ReadTarget, SnapSet};
use crate::types::{ObjectStat, SnapContext, SnapId, limits};

/// One version of an object: its bytes, size, omap, xattrs, version and mtime.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    pub(crate) data: Blocks,
    pub(crate) size: u64,
    pub(crate) omap: BTreeMap<String, Bytes>,
    pub(crate) xattrs: BTreeMap<String, Bytes>,
    pub(crate) version: u64,
    pub(crate) mtime: SystemTime,
}

impl Content {
    pub(crate) fn empty() -> Self {
        Content {
            data: Blocks::default(),
            size: 0,
            omap: BTreeMap::new(),
            xattrs: BTreeMap::new(),
            version: 0,
            mtime: SystemTime::now(),
        }
    }
}

/// An object: head (absent if removed), snapshot sequence, clones and locks.
#[derive(Debug, Default)]
pub(crate) struct Object {
    pub(crate) head: Option<Content>,
    pub(crate) seq: u64,
    pub(crate) clones: Vec<CloneMeta>,
    pub(crate) clone_content: BTreeMap<SnapId, Content>,
    pub(crate) locks: BTreeMap<String, LockState>,
}

impl Object {
    /// True if neither head nor clones remain.
    pub(crate) fn is_gone(&self) -> bool {
        self.head.is_none() && self.clones.is_empty()
    }

    /// Returns the content a read at `snap` sees, or `NotFound`.
    pub(crate) fn content_at(&self, snap: Option<SnapId>, subject: &Subject) -> Result<&Content> {
        let target = match snap {
            None => ReadTarget::Head,
            Some(snap) => snapset::resolve_read(self.seq, &self.clones, self.head.is_some(), snap),
        };
        let found = match target {
            ReadTarget::Head => self.head.as_ref(),
            ReadTarget::Clone(index) => self.clone_content.get(&self.clones[index].id),
            ReadTarget::Absent => None,
        };
        found.ok_or_else(|| Error::not_found(subject.clone()))
    }

    /// Returns the snapshot history.
    pub(crate) fn snap_set(&self) -> SnapSet {
        SnapSet {
            seq: self.seq,
            clones: self.clones.iter().map(CloneMeta::info).collect(),
            head_size: self.head.as_ref().map(|h| h.size),
        }
    }

    /// Drops `snap` from every clone, freeing clones that serve no snapshot any more.
    pub(crate) fn trim(&mut self, snap: SnapId) {
        for id in snapset::trim_snap(&mut self.clones, snap) {
            self.clone_content.remove(&id);
        }
    }

    /// Applies a validated batch. `next_version` is called once if the batch changes the
    /// object. Returns the resulting version.
    pub(crate) fn apply(
        &mut self,
        op: &WriteOp,
        snapc: &SnapContext,
        removed_snaps: &BTreeSet<u64>,
        subject: &Subject,
        next_version: impl FnOnce() -> u64,
    ) -> Result<u64> {
        let mut work = self.head.clone();
        let mut changes = HeadChanges::default();
        for step in op.steps() {
            apply_step(step, &mut work, &mut changes, subject)?;
        }
        if !op.mutates() {
            return Ok(self.head.as_ref().map_or(0, |h| h.version));
        }
        let version = next_version();
        let new_snaps =
            snapset::snaps_for_new_clone(self.seq, snapc, |s| removed_snaps.contains(&s.0));
        if let Some(old) = &self.head
            && !new_snaps.is_empty()
        {
            let id = SnapId(snapc.seq);
            self.clones.push(CloneMeta {
                id,
                snaps: new_snaps,
                overlap: ExtentSet::from_range(0, old.size),
                size: old.size,
            });
            self.clone_content.insert(id, old.clone());
        }
        self.seq = self.seq.max(snapc.seq);
        snapset::note_head_change(&mut self.clones, &changes.changed, changes.truncated_to);
        if let Some(head) = &mut work {
            head.version = version;
            head.mtime = SystemTime::now();
        } else {
            self.locks.clear();
        }
        self.head = work;
        Ok(version)
    }
}

/// What a batch changed in the head's data, for clone overlaps.
#[derive(Default)]
struct HeadChanges {
    changed: ExtentSet,
    truncated_to: Option<u64>,
}

impl HeadChanges {
    fn cut(&mut self, to: u64) {
        self.truncated_to = Some(self.truncated_to.map_or(to, |t| t.min(to)));
    }
}

fn absent(subject: &Subject) -> Error {
    Error::not_found(subject.clone())
}

fn apply_step(
    step: &WriteStep,
    work: &mut Option<Content>,
    changes: &mut HeadChanges,
    subject: &Subject,
) -> Result<()> {
    match step {
        WriteStep::AssertExists => {
            work.as_ref().ok_or_else(|| absent(subject))?;
        }
        WriteStep::Create { exclusive } => {
            if work.is_some() && *exclusive {
                return Err(Error::new(ErrorKind::AlreadyExists, subject.clone()));
            }
            work.get_or_insert_with(Content::empty);
        }
        WriteStep::AssertVersion(v) => {
            let head = work.as_ref().ok_or_else(|| absent(subject))?;
            if head.version != *v {
                return Err(Error::new(ErrorKind::VersionMismatch, subject.clone())
                    .with_detail(format!("expected {v}, found {}", head.version)));
            }
        }
        WriteStep::CmpXattr { name, op, value } => {
            let head = work.as_ref().ok_or_else(|| absent(subject))?;
            let stored = head.xattrs.get(name).map(|v| &v[..]).unwrap_or_default();
            if !op.holds(stored, value) {
                return Err(Error::new(ErrorKind::ComparisonFailed, subject.clone())
                    .with_detail(format!("xattr '{name}' comparison {op:?} does not hold")));
            }
        }
        WriteStep::CmpExt { offset, data } => {
            let head = work.as_ref().ok_or_else(|| absent(subject))?;
            let end = offset + data.len() as u64;
            let stored = head.data.read(*offset, end.min(head.size).max(*offset));
            let mut stored = stored;
            stored.resize(data.len(), 0);
            if let Some(pos) = stored.iter().zip(data.iter()).position(|(a, b)| a != b) {
                return Err(Error::new(ErrorKind::ComparisonFailed, subject.clone())
                    .with_detail(format!("data differs at offset {}", offset + pos as u64)));
            }
        }
        WriteStep::Write { offset, data } => {
            let head = work.get_or_insert_with(Content::empty);
            head.data.write(*offset, data);
            if !data.is_empty() {
                head.size = head.size.max(offset + data.len() as u64);
            }
            changes.changed.insert(*offset, data.len() as u64);
        }
        WriteStep::WriteFull(data) => {
            let head = work.get_or_insert_with(Content::empty);
            head.data = Blocks::default();
            head.data.write(0, data);
            head.size = data.len() as u64;
            changes.cut(0);
        }
        WriteStep::Zero { offset, length } => {
            if let Some(head) = work.as_mut().filter(|h| *offset < h.size) {
                if offset + length >= head.size {
                    head.data.truncate(*offset);
                    head.size = *offset;
                    changes.cut(*offset);
                } else {
                    head.data.zero(*offset, *length);
                    changes.changed.insert(*offset, *length);
                }
            }
        }
        WriteStep::Truncate(size) => {
            if let Some(head) = work.as_mut() {
                if *size < head.size {
                    head.data.truncate(*size);
                }
                head.size = *size;
                changes.cut(*size);
            }
        }
        WriteStep::Remove => {
            work.take().ok_or_else(|| absent(subject))?;
            changes.cut(0);
        }
        WriteStep::OmapSet(map) => {
            let head = work.get_or_insert_with(Content::empty);
            head.omap
                .extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        WriteStep::OmapRemove(keys) => {
            let head = work.as_mut().ok_or_else(|| absent(subject))?;
            for key in keys {
                head.omap.remove(key);
            }
        }
        WriteStep::OmapClear => {
            work.as_mut().ok_or_else(|| absent(subject))?.omap.clear();
        }
        WriteStep::XattrSet { name, value } => {
            let head = work.get_or_insert_with(Content::empty);
            head.xattrs.insert(name.clone(), value.clone());
        }
        WriteStep::XattrRemove(name) => {
            work.as_mut()
                .ok_or_else(|| absent(subject))?
                .xattrs
                .remove(name);
        }
    }
    Ok(())
}

fn object_name(subject: &Subject) -> String {
    match subject {
        Subject::Object { oid, .. } => oid.clone(),
        other => other.to_string(),
    }
}

fn range_end(size: u64, offset: u64, length: Option<u64>) -> u64 {
    match length {
        Some(len) => (offset + len).min(size),
        None => size,
    }
    .max(offset)
}

/// Evaluates a compound read against one content.
pub(crate) fn evaluate_read(
    content: &Content,
    op: &ReadOp,
    subject: &Subject,
) -> Result<ReadResult> {
    let mut outputs = Vec::with_capacity(op.steps().len());
    for step in op.steps() {
        let output = match step {
            ReadStep::Stat => ReadOutput::Stat(ObjectStat {
                size: content.size,
                mtime: content.mtime,
                version: content.version,
            }),
            ReadStep::Read { offset, length } => {
                let end = range_end(content.size, *offset, *length);
                ReadOutput::Data(Bytes::from(content.data.read(*offset, end)))
            }
            ReadStep::SparseRead { offset, length } => {
                let end = range_end(content.size, *offset, *length);
                let extents = content
                    .data
                    .allocated(*offset, end)
                    .into_iter()
                    .map(|(lo, hi)| (lo, Bytes::from(content.data.read(lo, hi))))
                    .collect();
                ReadOutput::Sparse(extents)
            }
            ReadStep::Extents { offset, length } => {
                let end = range_end(content.size, *offset, *length);
                let extents = content
                    .data
                    .allocated(*offset, end)
                    .into_iter()
                    .map(|(lo, hi)| (lo, hi - lo))
                    .collect();
                ReadOutput::Extents(extents)
            }
            ReadStep::Checksum {
                offset,
                length,
                chunk,
            } => {
                let end = range_end(content.size, *offset, Some(*length));
                let data = content.data.read(*offset, end);
                ReadOutput::Checksums(crate::digest::chunk_digests(&data, *length, *chunk))
            }
            ReadStep::OmapGetVals {
                start_after,
                prefix,
                max,
            } => {
                let max = limits::page_len(*max);
                let mut iter = content
                    .omap
                    .iter()
                    .filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s))
                    .filter(|(k, _)| k.starts_with(prefix.as_str()));
                let entries: Vec<(String, Bytes)> = iter
                    .by_ref()
                    .take(max)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let more = iter.next().is_some();
                ReadOutput::OmapVals { entries, more }
            }
            ReadStep::OmapGetByKeys(keys) => ReadOutput::OmapByKeys(
                keys.iter()
                    .filter_map(|k| content.omap.get(k).map(|v| (k.clone(), v.clone())))
                    .collect(),
            ),
            ReadStep::GetXattr(name) => match content.xattrs.get(name) {
                Some(value) => ReadOutput::Xattr(value.clone()),
                None => {
                    return Err(Error::not_found(Subject::Xattr {
                        oid: object_name(subject),
                        name: name.clone(),
                    }));
                }
            },
            ReadStep::GetXattrs => ReadOutput::Xattrs(content.xattrs.clone()),
        };
        outputs.push(output);
    }
    Ok(ReadResult {
        version: content.version,
        outputs,
    })
}
