//! Planning a write batch: its steps are evaluated in order against the object's current
//! state, producing a [`Change`] that the writer commits in one transaction.
//!
//! Data changes take one of three paths:
//! - **fresh file**: when the batch creates the object, replaces its content (write-full, a
//!   write covering everything), keeps a snapshot clone (the clone keeps the old file, the head
//!   gets a copy), or changes much of it, the new content is built in a new, private file that
//!   the commit switches to. Nothing is written over committed data.
//! - **in place**: small changes to an existing file become a redo [`Intent`], committed with
//!   the metadata and applied afterwards (see [`crate::intent`]).
//! - **append**: writes at or past the end of an existing file, 64 KiB or more together (a
//!   journal's appends, sent as pieces) are written into that file before the commit, past
//!   its committed size, where no reader looks;
//!   the commit only moves the size. A crash before the commit leaves bytes past the size, so
//!   anything that later grows the object in place first cuts the file to its size (a `Shrink`
//!   action), and the next append does the same before it writes.
//!
//! Assertions fail the batch before anything is committed; files made for a failed batch are
//! deleted.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::snapset::{self, CloneMeta};
use rbdx_objstore::{
    Error, ErrorKind, ExtentSet, IoCtx, Result, SnapContext, SnapId, Subject, WriteOp, WriteStep,
};

use crate::files::{self, Files};
use crate::intent::{Action, Intent};
use crate::rows::{CloneRow, HeadRow};
use crate::staged::Staged;

/// In-place changes larger than this (or than a quarter of the object) go to a fresh file.
const IN_PLACE_LIMIT: usize = 256 << 10;
/// Appends at least this large are written before the commit instead of as an intent.
const APPEND_MIN: usize = 64 << 10;

/// A change to the omap or the xattrs, in batch order.
#[derive(Debug, Clone)]
pub(crate) enum MapStep {
    Clear,
    Set(Vec<(String, Bytes)>),
    Remove(Vec<String>),
}

/// What a batch does to an object, ready to commit.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) present: bool,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) file: Option<u64>,
    /// Files made for this change; deleted if it is not committed.
    pub(crate) new_files: Vec<u64>,
    /// The new head file, still to be filled before the commit.
    pub(crate) fresh: Option<Fresh>,
    /// The head's previous file, no longer used by anything after the commit.
    pub(crate) drop_file: Option<u64>,
    pub(crate) intent: Option<Intent>,
    /// Data to write past the end of the committed file before the commit.
    pub(crate) append: Option<Append>,
    /// A clone kept before the change; it takes the head's previous file and metadata.
    pub(crate) clone: Option<CloneMeta>,
    /// New overlap of the newest clone (`None`: the clone made by this change).
    pub(crate) overlap_update: Option<(Option<i64>, ExtentSet)>,
    pub(crate) seq: u64,
    pub(crate) omap: Vec<MapStep>,
    pub(crate) xattrs: Vec<MapStep>,
    /// The head was removed during the batch: its locks and watches go.
    pub(crate) removed: bool,
}

/// The outcome of planning.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The batch only checked things; the object keeps this version.
    Unchanged(u64),
    /// The batch changes the object.
    Change(Box<Change>),
}

/// A new private data file and how to fill it. Filling (copying and writing bytes) is deferred
/// to [`Fresh::materialize`], so the writer can fill the files of a whole batch in parallel.
#[derive(Debug)]
pub(crate) struct Fresh {
    pub(crate) file: u64,
    /// The file, once created by [`Fresh::materialize`].
    handle: Option<Arc<File>>,
    /// A file whose allocated bytes (up to the given length) are copied in first.
    source: Option<(u64, u64)>,
    actions: Vec<Action>,
    /// The object's final size; the file is cut to it.
    size: u64,
    /// The file's content, already written by the caller.
    staged: Option<Staged>,
}

impl Fresh {
    /// Takes `staged` as the file if it holds exactly what filling would write; otherwise
    /// drops it (which deletes it).
    pub(crate) fn adopt(&mut self, staged: Staged) {
        if self.handle.is_none() && self.source.is_none() && staged.matches(&self.actions) {
            self.actions.clear();
            self.staged = Some(staged);
        }
    }

    /// Returns the number of bytes filling will write, to decide whether to fill in parallel.
    pub(crate) fn weight(&self) -> u64 {
        let copy = self.source.map_or(0, |(_, len)| len);
        copy + Intent {
            file: self.file,
            actions: self.actions.clone(),
        }
        .data_len() as u64
    }

    /// Creates the file (reusing a spare when the queued actions define every byte), copies
    /// the source in, applies the queued actions and cuts the file to size.
    pub(crate) fn materialize(&mut self, files: &Files, pool: u64) -> std::io::Result<Arc<File>> {
        if let Some(staged) = self.staged.take() {
            self.handle = Some(staged.into_place(files, pool, self.file)?);
        }
        let handle = match &self.handle {
            Some(handle) => handle.clone(),
            None => {
                let handle = if self.source.is_none() && defines_all(&self.actions, self.size) {
                    files.create_reusing(pool, self.file)?
                } else {
                    files.create(pool, self.file)?
                };
                self.handle = Some(handle.clone());
                handle
            }
        };
        if let Some((source, len)) = self.source.take() {
            let src = files.open(pool, source)?;
            files::copy_sparse(&src, &handle, len)?;
        }
        let actions = std::mem::take(&mut self.actions);
        Intent {
            file: self.file,
            actions,
        }
        .apply(&handle)?;
        trim_to(&handle, self.size)?;
        Ok(handle)
    }
}

/// Writes past the committed end of a file, made before the commit (see the module doc).
#[derive(Debug)]
pub(crate) struct Append {
    /// The file.
    pub(crate) file: u64,
    /// Its committed size: the file is cut to it before the writes.
    pub(crate) base: u64,
    /// (offset, bytes), all at or past `base`.
    pub(crate) writes: Vec<(u64, Bytes)>,
}

impl Append {
    /// Cuts the file to its committed size and writes the data.
    pub(crate) fn fill(&self, files: &Files, pool: u64) -> std::io::Result<()> {
        let handle = files.open(pool, self.file)?;
        if handle.metadata()?.len() > self.base {
            handle.set_len(self.base)?;
        }
        for (offset, data) in &self.writes {
            files::write_chunked(&handle, data, *offset)?;
        }
        Ok(())
    }
}

/// True if applying `actions` to any file defines every byte below `size` (so stale content
/// of a reused file cannot show through).
fn defines_all(actions: &[Action], size: u64) -> bool {
    let mut defined = ExtentSet::new();
    for action in actions {
        match action {
            Action::Write { offset, data } => defined.insert(*offset, data.len() as u64),
            Action::Punch { offset, length } => defined.insert(*offset, *length),
            Action::Shrink { size } => defined.insert(*size, u64::MAX - *size),
        }
    }
    defined.contains_range(0, size)
}

/// The head's data while planning.
#[derive(Debug)]
enum Work {
    /// No data file: the content reads as zeros.
    None,
    /// The committed file, with in-place actions queued.
    InPlace {
        file: u64,
        actions: Vec<Action>,
        bytes: usize,
    },
    /// The committed file now belongs to the new clone; copy it before changing anything.
    Shared { file: u64 },
    /// Writes past the committed end (`base`) of the committed file, made before the commit.
    Append {
        file: u64,
        base: u64,
        writes: Vec<(u64, Bytes)>,
    },
    /// A new private file.
    Fresh(Fresh),
}

/// Everything planning needs from the writer.
pub(crate) struct Planner<'a> {
    pub(crate) files: &'a Files,
    pub(crate) pool: u64,
    pub(crate) io: &'a IoCtx,
    pub(crate) oid: &'a str,
    /// Hands out a fresh file id.
    pub(crate) alloc: &'a mut dyn FnMut() -> Result<u64>,
    /// Reads the head's stored value of an xattr.
    pub(crate) stored_xattr: &'a dyn Fn(&str) -> Result<Option<Bytes>>,
    /// Tells whether a snapshot id was removed.
    pub(crate) removed_snap: &'a dyn Fn(SnapId) -> bool,
}

struct Eval<'p, 'a> {
    p: &'p mut Planner<'a>,
    exists: bool,
    size: u64,
    /// The committed size of the head's file.
    committed: u64,
    work: Work,
    new_files: Vec<u64>,
    changed: ExtentSet,
    truncated_to: Option<u64>,
    omap: Vec<MapStep>,
    xattrs: Vec<MapStep>,
    removed: bool,
}

fn io_err(p: &Planner<'_>, e: std::io::Error) -> Error {
    Error::io(p.io.object_subject(p.oid), e)
}

impl<'p, 'a> Eval<'p, 'a> {
    fn subject(&self) -> Subject {
        self.p.io.object_subject(self.p.oid)
    }

    fn absent(&self) -> Error {
        Error::not_found(self.subject())
    }

    fn cut(&mut self, to: u64) {
        self.truncated_to = Some(self.truncated_to.map_or(to, |t| t.min(to)));
    }

    /// Starts a fresh file, optionally with the content of `from` plus `actions`.
    fn fresh(&mut self, from: Option<(u64, &[Action])>) -> Result<()> {
        let id = (self.p.alloc)()?;
        self.new_files.push(id);
        let (source, actions) = match from {
            Some((source, actions)) => (Some((source, self.size)), actions.to_vec()),
            None => (None, Vec::new()),
        };
        self.discard_fresh();
        self.work = Work::Fresh(Fresh {
            file: id,
            handle: None,
            source,
            actions,
            size: self.size,
            staged: None,
        });
        Ok(())
    }

    /// Deletes the current fresh file, if any, as something newer replaces it.
    fn discard_fresh(&mut self) {
        if let Work::Fresh(Fresh { file, .. }) = self.work {
            let _ = self.p.files.unlink(self.p.pool, file);
            self.new_files.retain(|f| *f != file);
            self.work = Work::None;
        }
    }

    /// Turns pending in-place writes that only grow the committed file (the first pieces of
    /// an append: a journal entry's header before its data) into an append, when a write of
    /// `next` bytes past the end follows and together they are large enough to be one. Only
    /// when the first pending change is the cut to the committed size that growing starts
    /// with, and every other one a write at or past the end of what came before.
    fn append_small_growth(&mut self, next: usize) {
        let Work::InPlace {
            file,
            actions,
            bytes,
        } = &self.work
        else {
            return;
        };
        let Some((Action::Shrink { size: base }, rest)) = actions.split_first() else {
            return;
        };
        if *base != self.committed || bytes + next < APPEND_MIN {
            return;
        }
        let mut end = *base;
        let mut writes = Vec::with_capacity(rest.len() + 1);
        for action in rest {
            match action {
                Action::Write { offset, data } if *offset >= end => {
                    end = offset + data.len() as u64;
                    writes.push((*offset, data.clone()));
                }
                _ => return,
            }
        }
        self.work = Work::Append {
            file: *file,
            base: *base,
            writes,
        };
    }

    /// Turns a pending append into ordinary in-place actions, for a batch that does more.
    fn settle_append(&mut self) {
        if !matches!(self.work, Work::Append { .. }) {
            return;
        }
        if let Work::Append { file, base, writes } = std::mem::replace(&mut self.work, Work::None) {
            let mut actions = vec![Action::Shrink { size: base }];
            let mut bytes = 0;
            for (offset, data) in writes {
                bytes += data.len();
                actions.push(Action::Write { offset, data });
            }
            self.work = Work::InPlace {
                file,
                actions,
                bytes,
            };
        }
    }

    /// Makes the data writable: copies a clone-owned file, or moves a large in-place change to
    /// a fresh file.
    fn writable(&mut self) -> Result<()> {
        self.settle_append();
        match &self.work {
            Work::Shared { file } => {
                let file = *file;
                self.fresh(Some((file, &[])))
            }
            Work::InPlace {
                file,
                actions,
                bytes,
            } if *bytes > IN_PLACE_LIMIT.max(self.size as usize / 4) => {
                let (file, actions) = (*file, actions.clone());
                self.fresh(Some((file, &actions)))
            }
            _ => Ok(()),
        }
    }

    fn apply_fresh(&mut self, action: Action) {
        if let Work::Fresh(fresh) = &mut self.work {
            fresh.actions.push(action);
        }
    }

    fn queue(&mut self, action: Action) -> Result<()> {
        self.writable()?;
        // Growing the object in place: cut off what a crashed append may have left past the
        // committed size first, so the new range reads as zeros where nothing is written.
        let grows = match &action {
            Action::Write { offset, data } => offset + data.len() as u64 > self.size,
            _ => false,
        };
        if grows && let Work::InPlace { actions, .. } = &mut self.work {
            actions.push(Action::Shrink { size: self.size });
        }
        match &mut self.work {
            Work::InPlace { actions, bytes, .. } => {
                if let Action::Write { data, .. } = &action {
                    *bytes += data.len();
                }
                actions.push(action);
                self.writable()
            }
            Work::Fresh(_) => {
                self.apply_fresh(action);
                Ok(())
            }
            Work::None | Work::Shared { .. } | Work::Append { .. } => Ok(()),
        }
    }

    fn current_xattr(&self, name: &str) -> Result<Option<Bytes>> {
        for step in self.xattrs.iter().rev() {
            match step {
                MapStep::Clear => return Ok(None),
                MapStep::Set(pairs) => {
                    if let Some((_, v)) = pairs.iter().rev().find(|(k, _)| k == name) {
                        return Ok(Some(v.clone()));
                    }
                }
                MapStep::Remove(keys) => {
                    if keys.iter().any(|k| k == name) {
                        return Ok(None);
                    }
                }
            }
        }
        (self.p.stored_xattr)(name)
    }

    fn read(&mut self, offset: u64, end: u64) -> Result<Vec<u8>> {
        self.settle_append();
        let clipped = end.min(self.size).max(offset);
        let (files, pool) = (self.p.files, self.p.pool);
        if let Work::Fresh(fresh) = &mut self.work {
            fresh.size = self.size;
            fresh
                .materialize(files, pool)
                .map_err(|e| io_err(self.p, e))?;
            fresh.size = self.size;
        }
        let mut out = match &self.work {
            Work::None => vec![0; (clipped - offset) as usize],
            Work::Fresh(fresh) => files::read_range(fresh.handle.as_deref(), offset, clipped)
                .map_err(|e| io_err(self.p, e))?,
            Work::InPlace { file, .. } | Work::Shared { file } | Work::Append { file, .. } => {
                let handle = self
                    .p
                    .files
                    .open(self.p.pool, *file)
                    .map_err(|e| io_err(self.p, e))?;
                files::read_range(Some(&handle), offset, clipped).map_err(|e| io_err(self.p, e))?
            }
        };
        if let Work::InPlace { file, actions, .. } = &self.work {
            Intent {
                file: *file,
                actions: actions.clone(),
            }
            .overlay(&mut out, offset);
        }
        out.resize((end - offset) as usize, 0);
        Ok(out)
    }

    /// Drops the data (remove, or write-full).
    fn drop_data(&mut self) {
        self.discard_fresh();
        self.work = Work::None;
    }

    fn ensure_exists(&mut self) {
        if !self.exists {
            self.exists = true;
            self.size = 0;
            self.drop_data();
        }
    }

    fn step(&mut self, step: &WriteStep, head_version: u64) -> Result<()> {
        match step {
            WriteStep::AssertExists => {
                if !self.exists {
                    return Err(self.absent());
                }
            }
            WriteStep::Create { exclusive } => {
                if self.exists && *exclusive {
                    return Err(Error::new(ErrorKind::AlreadyExists, self.subject()));
                }
                self.ensure_exists();
            }
            WriteStep::AssertVersion(v) => {
                if !self.exists {
                    return Err(self.absent());
                }
                if head_version != *v {
                    return Err(Error::new(ErrorKind::VersionMismatch, self.subject())
                        .with_detail(format!("expected {v}, found {head_version}")));
                }
            }
            WriteStep::CmpXattr { name, op, value } => {
                if !self.exists {
                    return Err(self.absent());
                }
                let stored = self.current_xattr(name)?.unwrap_or_default();
                if !op.holds(&stored, value) {
                    return Err(Error::new(ErrorKind::ComparisonFailed, self.subject())
                        .with_detail(format!("xattr '{name}' comparison {op:?} does not hold")));
                }
            }
            WriteStep::CmpExt { offset, data } => {
                if !self.exists {
                    return Err(self.absent());
                }
                let stored = self.read(*offset, offset + data.len() as u64)?;
                if let Some(pos) = stored.iter().zip(data.iter()).position(|(a, b)| a != b) {
                    return Err(Error::new(ErrorKind::ComparisonFailed, self.subject())
                        .with_detail(format!("data differs at offset {}", offset + pos as u64)));
                }
            }
            WriteStep::Write { offset, data } => {
                self.ensure_exists();
                if data.is_empty() {
                    return Ok(());
                }
                let covers = *offset == 0 && data.len() as u64 >= self.size;
                if !covers && *offset >= self.size {
                    self.append_small_growth(data.len());
                }
                if let Work::InPlace { file, actions, .. } = &self.work
                    && actions.is_empty()
                    && !covers
                    && *offset >= self.size
                    && data.len() >= APPEND_MIN
                {
                    self.work = Work::Append {
                        file: *file,
                        base: self.size,
                        writes: vec![(*offset, data.clone())],
                    };
                    self.size = offset + data.len() as u64;
                    self.changed.insert(*offset, data.len() as u64);
                    return Ok(());
                }
                // A later write at or past the end joins the append (an entry written from
                // several pieces).
                if let Work::Append { writes, .. } = &mut self.work
                    && *offset >= self.size
                {
                    writes.push((*offset, data.clone()));
                    self.size = offset + data.len() as u64;
                    self.changed.insert(*offset, data.len() as u64);
                    return Ok(());
                }
                if covers || matches!(self.work, Work::None) {
                    self.drop_data();
                    self.fresh(None)?;
                } else if matches!(self.work, Work::Shared { .. } | Work::Append { .. }) {
                    self.writable()?;
                }
                self.queue(Action::Write {
                    offset: *offset,
                    data: data.clone(),
                })?;
                self.size = self.size.max(offset + data.len() as u64);
                self.changed.insert(*offset, data.len() as u64);
            }
            WriteStep::WriteFull(data) => {
                self.exists = true;
                self.drop_data();
                if !data.is_empty() {
                    self.fresh(None)?;
                    self.apply_fresh(Action::Write {
                        offset: 0,
                        data: data.clone(),
                    });
                }
                self.size = data.len() as u64;
                self.cut(0);
            }
            WriteStep::Zero { offset, length } => {
                if self.exists && *offset < self.size {
                    if offset + length >= self.size {
                        self.queue(Action::Shrink { size: *offset })?;
                        self.size = *offset;
                        self.cut(*offset);
                    } else {
                        self.queue(Action::Punch {
                            offset: *offset,
                            length: *length,
                        })?;
                        self.changed.insert(*offset, *length);
                    }
                }
            }
            WriteStep::Truncate(size) => {
                if self.exists {
                    if *size < self.size {
                        self.queue(Action::Shrink { size: *size })?;
                    } else if *size > self.size {
                        // The grown range must read as zeros (see `queue`).
                        self.writable()?;
                        let current = self.size;
                        if let Work::InPlace { actions, .. } = &mut self.work {
                            actions.push(Action::Shrink { size: current });
                        }
                    }
                    self.size = *size;
                    self.cut(*size);
                }
            }
            WriteStep::Remove => {
                if !self.exists {
                    return Err(self.absent());
                }
                self.exists = false;
                self.size = 0;
                self.drop_data();
                self.omap.push(MapStep::Clear);
                self.xattrs.push(MapStep::Clear);
                self.removed = true;
                self.cut(0);
            }
            WriteStep::OmapSet(map) => {
                self.ensure_exists();
                self.omap.push(MapStep::Set(
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                ));
            }
            WriteStep::OmapRemove(keys) => {
                if !self.exists {
                    return Err(self.absent());
                }
                self.omap.push(MapStep::Remove(keys.clone()));
            }
            WriteStep::OmapClear => {
                if !self.exists {
                    return Err(self.absent());
                }
                self.omap.push(MapStep::Clear);
            }
            WriteStep::XattrSet { name, value } => {
                self.ensure_exists();
                self.xattrs
                    .push(MapStep::Set(vec![(name.clone(), value.clone())]));
            }
            WriteStep::XattrRemove(name) => {
                if !self.exists {
                    return Err(self.absent());
                }
                self.xattrs.push(MapStep::Remove(vec![name.clone()]));
            }
        }
        Ok(())
    }
}

impl Planner<'_> {
    /// Plans `op` with `snapc` against the head and clones of the object. On error, every file
    /// made for the plan is gone again.
    pub(crate) fn plan(
        &mut self,
        op: &WriteOp,
        snapc: &SnapContext,
        head: Option<&HeadRow>,
        clones: &[CloneRow],
        mtime: i64,
    ) -> Result<Outcome> {
        let present = head.is_some_and(|h| h.present);
        let head_version = head.filter(|h| h.present).map_or(0, |h| h.version);
        let old_file = head.filter(|h| h.present).and_then(|h| h.file);
        let old_size = head.filter(|h| h.present).map_or(0, |h| h.size);
        let seq = head.map_or(0, |h| h.seq);
        let mutates = op.mutates();
        let new_snaps = if mutates && present {
            snapset::snaps_for_new_clone(seq, snapc, self.removed_snap)
        } else {
            Vec::new()
        };
        let cloning = !new_snaps.is_empty();
        let work = match old_file {
            Some(file) if cloning => Work::Shared { file },
            Some(file) => Work::InPlace {
                file,
                actions: Vec::new(),
                bytes: 0,
            },
            None => Work::None,
        };
        let mut eval = Eval {
            p: self,
            exists: present,
            size: old_size,
            committed: old_size,
            work,
            new_files: Vec::new(),
            changed: ExtentSet::new(),
            truncated_to: None,
            omap: Vec::new(),
            xattrs: Vec::new(),
            removed: false,
        };
        let mut result = Ok(());
        for step in op.steps() {
            result = eval.step(step, head_version);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && !mutates {
            return Ok(Outcome::Unchanged(head_version));
        }
        if result.is_ok() && eval.exists && matches!(eval.work, Work::Shared { .. }) {
            result = eval.writable();
        }
        if let Err(e) = result {
            for file in eval.new_files.drain(..) {
                let _ = eval.p.files.unlink(eval.p.pool, file);
            }
            return Err(e);
        }
        let mut append = None;
        let (file, intent, fresh) = match std::mem::replace(&mut eval.work, Work::None) {
            Work::None | Work::Shared { .. } => (None, None, None),
            Work::Append { file, base, writes } => {
                append = Some(Append { file, base, writes });
                (Some(file), None, None)
            }
            Work::InPlace { file, actions, .. } => (
                Some(file),
                (!actions.is_empty()).then_some(Intent { file, actions }),
                None,
            ),
            Work::Fresh(mut fresh) => {
                fresh.size = eval.size;
                (Some(fresh.file), None, Some(fresh))
            }
        };
        let clone = cloning.then(|| CloneMeta {
            id: SnapId(snapc.seq),
            snaps: new_snaps,
            overlap: ExtentSet::from_range(0, old_size),
            size: old_size,
        });
        let drop_file = match old_file {
            Some(old) if !cloning && file != Some(old) => Some(old),
            _ => None,
        };
        let mut all: Vec<CloneMeta> = clones.iter().map(|c| c.meta.clone()).collect();
        let newest_row = if let Some(c) = &clone {
            all.push(c.clone());
            None
        } else {
            clones.last().map(|c| c.id)
        };
        snapset::note_head_change(&mut all, &eval.changed, eval.truncated_to);
        let overlap_update = match (all.last(), clone.is_some() || !clones.is_empty()) {
            (Some(newest), true) => Some((newest_row, newest.overlap.clone())),
            _ => None,
        };
        Ok(Outcome::Change(Box::new(Change {
            present: eval.exists,
            size: eval.size,
            mtime,
            file: if eval.exists { file } else { None },
            new_files: std::mem::take(&mut eval.new_files),
            fresh: if eval.exists { fresh } else { None },
            drop_file,
            intent: if eval.exists { intent } else { None },
            append: if eval.exists { append } else { None },
            clone,
            overlap_update,
            seq: seq.max(snapc.seq),
            omap: eval.omap,
            xattrs: eval.xattrs,
            removed: eval.removed,
        })))
    }
}

/// Cuts a fresh file to the object's size (bytes past the size must not linger).
fn trim_to(handle: &File, size: u64) -> std::io::Result<()> {
    if handle.metadata()?.len() > size {
        handle.set_len(size)?;
    }
    Ok(())
}
