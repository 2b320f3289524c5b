//! Write batches ([`WriteOp`]) and compound reads ([`ReadOp`]) on one object.
//!
//! A [`WriteOp`] is applied by [`crate::ObjectStore::operate`] in order and all-or-nothing: if
//! any step fails, no step has any effect. A [`ReadOp`] is evaluated against one version of the
//! object, which [`ReadResult::version`] reports.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::types::{IoCtx, ObjectStat, SnapContext};

/// How [`WriteStep::CmpXattr`] compares the stored value with the given one (bytewise; a
/// missing attribute compares as empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// Stored value equals the given one.
    Eq,
    /// Stored value differs.
    Ne,
    /// Stored value is greater.
    Gt,
    /// Stored value is greater or equal.
    Gte,
    /// Stored value is smaller.
    Lt,
    /// Stored value is smaller or equal.
    Lte,
}

impl CmpOp {
    /// Returns true if `stored` relates to `given` as this operator requires.
    pub fn holds(self, stored: &[u8], given: &[u8]) -> bool {
        let ord = stored.cmp(given);
        match self {
            CmpOp::Eq => ord.is_eq(),
            CmpOp::Ne => ord.is_ne(),
            CmpOp::Gt => ord.is_gt(),
            CmpOp::Gte => ord.is_ge(),
            CmpOp::Lt => ord.is_lt(),
            CmpOp::Lte => ord.is_le(),
        }
    }
}

/// One step of a [`WriteOp`].
///
/// Steps that store something (`Write`, `WriteFull`, `OmapSet`, `XattrSet`, `Create`) create
/// the object if it is absent. `Zero` and `Truncate` on an absent object do nothing; `Zero`
/// never extends an object. `Remove`, `OmapRemove`, `OmapClear` and `XattrRemove` fail with
/// `NotFound` on an absent object. These are RADOS' rules, including its less obvious ones: a
/// `Zero` reaching the end of the object truncates it, and removing a missing xattr succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteStep {
    /// Fails with `NotFound` unless the object exists.
    AssertExists,
    /// Creates an empty object; with `exclusive`, fails with `AlreadyExists` if it exists.
    Create {
        /// Fail if the object exists.
        exclusive: bool,
    },
    /// Fails with `VersionMismatch` unless the object's version is exactly this one.
    AssertVersion(u64),
    /// Fails with `ComparisonFailed` unless the xattr compares as requested.
    CmpXattr {
        /// Attribute name.
        name: String,
        /// Comparison.
        op: CmpOp,
        /// Value compared against.
        value: Bytes,
    },
    /// Fails with `ComparisonFailed` unless the object holds `data` at `offset` (bytes past
    /// the end compare as zeros).
    CmpExt {
        /// First byte compared.
        offset: u64,
        /// Expected bytes.
        data: Bytes,
    },
    /// Writes `data` at `offset`, extending the object if needed.
    Write {
        /// First byte written.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Replaces the whole content with `data`.
    WriteFull(Bytes),
    /// Makes `[offset, offset + length)` read as zeros. A range starting at or past the end
    /// does nothing; a range reaching the end (`offset + length >= size`) truncates the object
    /// to `offset`.
    Zero {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
    /// Sets the size; bytes past the old end read as zeros.
    Truncate(u64),
    /// Removes the object (its data, omap, xattrs, locks and watches).
    Remove,
    /// Sets omap keys.
    OmapSet(BTreeMap<String, Bytes>),
    /// Removes omap keys (missing ones are ignored).
    OmapRemove(Vec<String>),
    /// Removes every omap key.
    OmapClear,
    /// Sets an xattr.
    XattrSet {
        /// Attribute name.
        name: String,
        /// Value.
        value: Bytes,
    },
    /// Removes an xattr; removing one that is not set does nothing.
    XattrRemove(String),
}

impl WriteStep {
    /// Returns true if the step changes the object (rather than only checking it).
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            WriteStep::AssertExists
                | WriteStep::AssertVersion(_)
                | WriteStep::CmpXattr { .. }
                | WriteStep::CmpExt { .. }
        )
    }

    /// Returns true if the step changes object data (rather than metadata only).
    pub fn touches_data(&self) -> bool {
        matches!(
            self,
            WriteStep::Write { .. }
                | WriteStep::WriteFull(_)
                | WriteStep::Zero { .. }
                | WriteStep::Truncate(_)
                | WriteStep::Remove
        )
    }
}

/// An ordered, atomic batch of steps on one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOp {
    steps: Vec<WriteStep>,
}

impl WriteOp {
    /// Returns an empty batch.
    pub fn new() -> Self {
        WriteOp::default()
    }

    /// Returns the steps in order.
    pub fn steps(&self) -> &[WriteStep] {
        &self.steps
    }

    /// Returns true if any step changes the object.
    pub fn mutates(&self) -> bool {
        self.steps.iter().any(WriteStep::is_mutation)
    }

    /// Appends a step.
    pub fn push(mut self, step: WriteStep) -> Self {
        self.steps.push(step);
        self
    }

    /// Appends [`WriteStep::AssertExists`].
    pub fn assert_exists(self) -> Self {
        self.push(WriteStep::AssertExists)
    }

    /// Appends [`WriteStep::Create`].
    pub fn create(self, exclusive: bool) -> Self {
        self.push(WriteStep::Create { exclusive })
    }

    /// Appends [`WriteStep::AssertVersion`].
    pub fn assert_version(self, version: u64) -> Self {
        self.push(WriteStep::AssertVersion(version))
    }

    /// Appends [`WriteStep::CmpXattr`].
    pub fn cmp_xattr(self, name: impl Into<String>, op: CmpOp, value: impl Into<Bytes>) -> Self {
        self.push(WriteStep::CmpXattr {
            name: name.into(),
            op,
            value: value.into(),
        })
    }

    /// Appends [`WriteStep::CmpExt`].
    pub fn cmp_ext(self, offset: u64, data: impl Into<Bytes>) -> Self {
        self.push(WriteStep::CmpExt {
            offset,
            data: data.into(),
        })
    }

    /// Appends [`WriteStep::Write`].
    pub fn write(self, offset: u64, data: impl Into<Bytes>) -> Self {
        self.push(WriteStep::Write {
            offset,
            data: data.into(),
        })
    }

    /// Appends [`WriteStep::WriteFull`].
    pub fn write_full(self, data: impl Into<Bytes>) -> Self {
        self.push(WriteStep::WriteFull(data.into()))
    }

    /// Appends [`WriteStep::Zero`].
    pub fn zero(self, offset: u64, length: u64) -> Self {
        self.push(WriteStep::Zero { offset, length })
    }

    /// Appends [`WriteStep::Truncate`].
    pub fn truncate(self, size: u64) -> Self {
        self.push(WriteStep::Truncate(size))
    }

    /// Appends [`WriteStep::Remove`].
    pub fn remove(self) -> Self {
        self.push(WriteStep::Remove)
    }

    /// Appends [`WriteStep::OmapSet`] with the given pairs.
    pub fn omap_set<K, V>(self, pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<Bytes>,
    {
        let map = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.push(WriteStep::OmapSet(map))
    }

    /// Appends [`WriteStep::OmapRemove`].
    pub fn omap_remove<K: Into<String>>(self, keys: impl IntoIterator<Item = K>) -> Self {
        self.push(WriteStep::OmapRemove(
            keys.into_iter().map(Into::into).collect(),
        ))
    }

    /// Appends [`WriteStep::OmapClear`].
    pub fn omap_clear(self) -> Self {
        self.push(WriteStep::OmapClear)
    }

    /// Appends [`WriteStep::XattrSet`].
    pub fn xattr_set(self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.push(WriteStep::XattrSet {
            name: name.into(),
            value: value.into(),
        })
    }

    /// Appends [`WriteStep::XattrRemove`].
    pub fn xattr_remove(self, name: impl Into<String>) -> Self {
        self.push(WriteStep::XattrRemove(name.into()))
    }
}

/// One step of a [`ReadOp`]; each produces one [`ReadOutput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStep {
    /// Size, mtime and version.
    Stat,
    /// Bytes from `offset`, `length` of them or up to the end; short at the end of the object.
    Read {
        /// First byte.
        offset: u64,
        /// Number of bytes, or `None` for everything up to the end.
        length: Option<u64>,
    },
    /// Extents within a range, in offset order, with their bytes: together they cover every
    /// non-zero byte, and everything outside them reads as zeros. They may include zeros (RADOS
    /// on memstore answers with one extent); whether holes inside an object are left out is
    /// the backend's choice (`dir` and `memory` leave them out, BlueStore does too), so callers
    /// may rely on the extents to skip work, never for what the data is.
    SparseRead {
        /// First byte.
        offset: u64,
        /// Number of bytes, or `None` for everything up to the end.
        length: Option<u64>,
    },
    /// The extents a [`ReadStep::SparseRead`] of the same range would return, without their
    /// bytes: `(offset, length)` in increasing order. Block-status answers and copies use it
    /// to learn where the data lies before reading it.
    Extents {
        /// First byte.
        offset: u64,
        /// Number of bytes, or `None` for everything up to the end.
        length: Option<u64>,
    },
    /// Digests of `length` bytes from `offset`, one per `chunk` bytes (see [`crate::digest`]);
    /// bytes past the end of the object count as zeros. Only the digests leave the store.
    Checksum {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        length: u64,
        /// Bytes per digest.
        chunk: u64,
    },
    /// Omap entries in key order after `start_after`, with keys starting with `prefix`.
    OmapGetVals {
        /// Only keys greater than this one.
        start_after: Option<String>,
        /// Only keys starting with this prefix.
        prefix: String,
        /// At most this many entries; 0 means the listing page limit.
        max: usize,
    },
    /// The omap entries with these keys (missing keys are left out).
    OmapGetByKeys(Vec<String>),
    /// One xattr; `NotFound` if it is not set.
    GetXattr(String),
    /// Every xattr.
    GetXattrs,
}

/// A compound read of one object: every step sees the same version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOp {
    steps: Vec<ReadStep>,
}

impl ReadOp {
    /// Returns an empty read.
    pub fn new() -> Self {
        ReadOp::default()
    }

    /// Returns the steps in order.
    pub fn steps(&self) -> &[ReadStep] {
        &self.steps
    }

    /// Appends a step.
    pub fn push(mut self, step: ReadStep) -> Self {
        self.steps.push(step);
        self
    }

    /// Appends [`ReadStep::Stat`].
    pub fn stat(self) -> Self {
        self.push(ReadStep::Stat)
    }

    /// Appends [`ReadStep::Read`].
    pub fn read(self, offset: u64, length: Option<u64>) -> Self {
        self.push(ReadStep::Read { offset, length })
    }

    /// Appends [`ReadStep::SparseRead`].
    pub fn sparse_read(self, offset: u64, length: Option<u64>) -> Self {
        self.push(ReadStep::SparseRead { offset, length })
    }

    /// Appends [`ReadStep::Extents`].
    pub fn extents(self, offset: u64, length: Option<u64>) -> Self {
        self.push(ReadStep::Extents { offset, length })
    }

    /// Appends [`ReadStep::Checksum`].
    pub fn checksum(self, offset: u64, length: u64, chunk: u64) -> Self {
        self.push(ReadStep::Checksum {
            offset,
            length,
            chunk,
        })
    }

    /// Appends [`ReadStep::OmapGetVals`].
    pub fn omap_get_vals(self, start_after: Option<&str>, prefix: &str, max: usize) -> Self {
        self.push(ReadStep::OmapGetVals {
            start_after: start_after.map(str::to_owned),
            prefix: prefix.to_owned(),
            max,
        })
    }

    /// Appends [`ReadStep::OmapGetByKeys`].
    pub fn omap_get_by_keys<K: Into<String>>(self, keys: impl IntoIterator<Item = K>) -> Self {
        self.push(ReadStep::OmapGetByKeys(
            keys.into_iter().map(Into::into).collect(),
        ))
    }

    /// Appends [`ReadStep::GetXattr`].
    pub fn get_xattr(self, name: impl Into<String>) -> Self {
        self.push(ReadStep::GetXattr(name.into()))
    }

    /// Appends [`ReadStep::GetXattrs`].
    pub fn get_xattrs(self) -> Self {
        self.push(ReadStep::GetXattrs)
    }
}

/// The output of one [`ReadStep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutput {
    /// Output of [`ReadStep::Stat`].
    Stat(ObjectStat),
    /// Output of [`ReadStep::Read`].
    Data(Bytes),
    /// Output of [`ReadStep::SparseRead`]: `(offset, bytes)` in increasing order.
    Sparse(Vec<(u64, Bytes)>),
    /// Output of [`ReadStep::Extents`]: `(offset, length)` in increasing order.
    Extents(Vec<(u64, u64)>),
    /// Output of [`ReadStep::Checksum`]: one digest per chunk.
    Checksums(Vec<u64>),
    /// Output of [`ReadStep::OmapGetVals`]: entries and whether more follow.
    OmapVals {
        /// Entries in key order.
        entries: Vec<(String, Bytes)>,
        /// True if more matching entries follow.
        more: bool,
    },
    /// Output of [`ReadStep::OmapGetByKeys`].
    OmapByKeys(BTreeMap<String, Bytes>),
    /// Output of [`ReadStep::GetXattr`].
    Xattr(Bytes),
    /// Output of [`ReadStep::GetXattrs`].
    Xattrs(BTreeMap<String, Bytes>),
}

/// The outputs of a [`ReadOp`], in step order, and the version they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The object version every output reflects.
    pub version: u64,
    /// One output per step.
    pub outputs: Vec<ReadOutput>,
}

impl ReadResult {
    /// Takes the output of step `index`, leaving a placeholder.
    fn take(&mut self, index: usize) -> Option<ReadOutput> {
        let slot = self.outputs.get_mut(index)?;
        Some(std::mem::replace(slot, ReadOutput::Data(Bytes::new())))
    }

    /// Returns the stat of step `index`, if that step was a [`ReadStep::Stat`].
    pub fn stat(&self, index: usize) -> Option<ObjectStat> {
        match self.outputs.get(index)? {
            ReadOutput::Stat(stat) => Some(*stat),
            _ => None,
        }
    }

    /// Takes the bytes of step `index`, if that step was a [`ReadStep::Read`] or
    /// [`ReadStep::GetXattr`].
    pub fn take_data(&mut self, index: usize) -> Option<Bytes> {
        match self.take(index)? {
            ReadOutput::Data(data) | ReadOutput::Xattr(data) => Some(data),
            _ => None,
        }
    }

    /// Takes the extents of step `index`, if that step was a [`ReadStep::SparseRead`].
    pub fn take_sparse(&mut self, index: usize) -> Option<Vec<(u64, Bytes)>> {
        match self.take(index)? {
            ReadOutput::Sparse(extents) => Some(extents),
            _ => None,
        }
    }

    /// Takes the extents of step `index`, if that step was a [`ReadStep::Extents`].
    pub fn take_extents(&mut self, index: usize) -> Option<Vec<(u64, u64)>> {
        match self.take(index)? {
            ReadOutput::Extents(extents) => Some(extents),
            _ => None,
        }
    }

    /// Takes the digests of step `index`, if that step was a [`ReadStep::Checksum`].
    pub fn take_checksums(&mut self, index: usize) -> Option<Vec<u64>> {
        match self.take(index)? {
            ReadOutput::Checksums(digests) => Some(digests),
            _ => None,
        }
    }

    /// Takes the entries and the `more` flag of step `index`, if that step was a
    /// [`ReadStep::OmapGetVals`].
    pub fn take_omap_vals(&mut self, index: usize) -> Option<(Vec<(String, Bytes)>, bool)> {
        match self.take(index)? {
            ReadOutput::OmapVals { entries, more } => Some((entries, more)),
            _ => None,
        }
    }

    /// Takes the map of step `index`, if that step was a [`ReadStep::OmapGetByKeys`] or
    /// [`ReadStep::GetXattrs`].
    pub fn take_map(&mut self, index: usize) -> Option<BTreeMap<String, Bytes>> {
        match self.take(index)? {
            ReadOutput::OmapByKeys(map) | ReadOutput::Xattrs(map) => Some(map),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmp_op_compares_bytewise() {
        assert!(CmpOp::Eq.holds(b"abc", b"abc"));
        assert!(CmpOp::Gt.holds(b"abd", b"abc"));
        assert!(CmpOp::Lt.holds(b"", b"a"));
        assert!(!CmpOp::Ne.holds(b"x", b"x"));
    }

    #[test]
    fn write_op_without_mutation_reports_so() {
        let op = WriteOp::new().assert_exists().assert_version(3);
        assert!(!op.mutates());
        assert!(op.clone().truncate(0).mutates());
    }
}

/// A write batch for one object, as one of a group (see
/// [`crate::ObjectStore::operate_group`]).
#[derive(Debug, Clone)]
pub struct ObjectWrite {
    /// The object's pool and namespace.
    pub io: IoCtx,
    /// The object's name.
    pub oid: String,
    /// What to do to it.
    pub op: WriteOp,
    /// The snapshot context the write is made under.
    pub snapc: SnapContext,
}
