//! Staged files: the content of a new object, written on the caller's thread before its
//! request reaches the writer.
//!
//! A request that starts the object's data from nothing and then only writes into it (how
//! migrations, imports and copy-ups fill an image) has content that does not depend on
//! anything the store holds. The caller writes those bytes into a private file of its session's spare directory,
//! in parallel with other callers, and the writer, which would otherwise fill every new file
//! itself, only moves the file into place: when the plan for the request is exactly those
//! writes into a new file. In every other case (the object exists, the plan differs, the move
//! fails) the staged file is deleted and the request is planned and filled as if it had never
//! been staged. A staged file that is never committed lies in a directory that the session's
//! close, or the reaping of a dead session, deletes.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::{WriteOp, WriteStep};

use crate::files::{self, Files};
use crate::intent::Action;

/// Requests carrying fewer data bytes are not staged: moving the file costs more than the
/// writer's filling it.
const STAGE_MIN: u64 = 256 << 10;

/// A file written ahead of its request's commit.
#[derive(Debug)]
pub(crate) struct Staged {
    /// Where it lies until taken; `None` once moved into place.
    path: Option<PathBuf>,
    handle: Arc<File>,
    /// (offset, length) of each write, in order.
    pieces: Vec<(u64, u64)>,
}

/// Returns the writes of `op` if the data it leaves does not depend on what the object held:
/// it starts from nothing (an exclusive create, a truncation to zero or a write-full) before
/// its first write, and then only writes data, carrying at least [`STAGE_MIN`] bytes. Steps
/// that only assert something or change the omap or xattrs may come anywhere.
///
/// Overwrites are left to the writer even when they cover the whole object: it fills their
/// new file from a spare whose pages are already in the page cache.
pub(crate) fn stageable(op: &WriteOp) -> Option<Vec<(u64, Bytes)>> {
    let mut empty = false;
    let mut writes: Vec<(u64, Bytes)> = Vec::new();
    for step in op.steps() {
        match step {
            WriteStep::Create { exclusive: true } => empty = true,
            WriteStep::Truncate(0) => {
                empty = true;
                writes.clear();
            }
            WriteStep::WriteFull(data) => {
                empty = true;
                writes = vec![(0, data.clone())];
            }
            WriteStep::Write { offset, data } if empty => writes.push((*offset, data.clone())),
            WriteStep::Create { exclusive: false }
            | WriteStep::AssertExists
            | WriteStep::AssertVersion(_)
            | WriteStep::CmpXattr { .. }
            | WriteStep::CmpExt { .. }
            | WriteStep::OmapSet(_)
            | WriteStep::OmapRemove(_)
            | WriteStep::OmapClear
            | WriteStep::XattrSet { .. }
            | WriteStep::XattrRemove(_) => {}
            WriteStep::Write { .. }
            | WriteStep::Zero { .. }
            | WriteStep::Truncate(_)
            | WriteStep::Remove => return None,
        }
    }
    let bytes: u64 = writes.iter().map(|(_, d)| d.len() as u64).sum();
    (bytes >= STAGE_MIN).then_some(writes)
}

impl Staged {
    /// Writes `writes` into a new private file of the session of `files`.
    pub(crate) fn write(files: &Files, writes: &[(u64, Bytes)]) -> io::Result<Staged> {
        let (path, handle) = files.stage()?;
        let mut staged = Staged {
            path: Some(path),
            handle: Arc::new(handle),
            pieces: Vec::with_capacity(writes.len()),
        };
        for (offset, data) in writes {
            files::write_chunked(&staged.handle, data, *offset)?;
            staged.pieces.push((*offset, data.len() as u64));
        }
        Ok(staged)
    }

    /// True if applying `actions` to an empty file gives exactly this file's content.
    pub(crate) fn matches(&self, actions: &[Action]) -> bool {
        actions.len() == self.pieces.len()
            && actions.iter().zip(&self.pieces).all(|(action, piece)| {
                matches!(action, Action::Write { offset, data }
                    if (*offset, data.len() as u64) == *piece)
            })
    }

    /// Moves the file into place as data file `file` of `pool`.
    pub(crate) fn into_place(
        mut self,
        files: &Files,
        pool: u64,
        file: u64,
    ) -> io::Result<Arc<File>> {
        let from = self.path.take().unwrap_or_default();
        if let Err(e) = files.adopt(pool, file, &from, &self.handle) {
            let _ = std::fs::remove_file(&from);
            return Err(e);
        }
        Ok(self.handle.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use rbdx_objstore::{ErrorKind, IoCtx, ObjectStore, ObjectStoreExt, SnapContext};

    use super::*;
    use crate::DirStore;

    fn data(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn only_content_that_starts_from_nothing_is_staged() {
        let big = data(STAGE_MIN as usize, 1);
        let writes = |op: WriteOp| stageable(&op).map(|w| w.len());
        assert_eq!(
            writes(WriteOp::new().create(true).write(0, big.clone())),
            Some(1)
        );
        assert_eq!(
            writes(
                WriteOp::new()
                    .create(false)
                    .truncate(0)
                    .write(0, big.clone())
                    .xattr_remove("x")
            ),
            Some(1)
        );
        assert_eq!(writes(WriteOp::new().write_full(big.clone())), Some(1));
        assert_eq!(
            writes(WriteOp::new().create(false).write(0, big.clone())),
            None,
            "the old content shows through, or a spare serves better"
        );
        assert_eq!(
            writes(
                WriteOp::new()
                    .create(true)
                    .write(0, big.clone())
                    .zero(0, 10)
            ),
            None
        );
        assert_eq!(
            writes(WriteOp::new().create(true).write(0, data(4096, 1))),
            None,
            "too small to be worth it"
        );
        assert_eq!(
            writes(WriteOp::new().create(true).write(0, big).remove()),
            None
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_files_are_taken_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let io = IoCtx::new(store.pool_create("rbd").await.unwrap());
        let snapc = SnapContext::empty();
        let op = WriteOp::new()
            .create(true)
            .write(0, data(STAGE_MIN as usize, 7))
            .write(1 << 20, data(4096, 8));
        store.operate(&io, "a", &op, &snapc).await.unwrap();
        assert_eq!(
            store.files().adopted(),
            1,
            "the staged file became the object"
        );
        let read = store.read(&io, "a", 0, None).await.unwrap();
        assert_eq!(read.len(), (1 << 20) + 4096);
        assert!(read[..STAGE_MIN as usize].iter().all(|b| *b == 7));
        assert!(read[STAGE_MIN as usize..1 << 20].iter().all(|b| *b == 0));
        assert!(read[1 << 20..].iter().all(|b| *b == 8));

        let again = store.operate(&io, "a", &op, &snapc).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::AlreadyExists);
        assert_eq!(store.files().adopted(), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("spare"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|session| std::fs::read_dir(session.path()).into_iter().flatten())
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "a refused staged file was kept: {left:?}");
        assert_eq!(store.read(&io, "a", 0, Some(1)).await.unwrap()[0], 7);

        // A replacement under a snapshot keeps the old bytes for the snapshot.
        let snap = store.snap_create(io.pool()).await.unwrap();
        let snapc = SnapContext::from_snaps([snap]);
        let replace = WriteOp::new()
            .create(false)
            .truncate(0)
            .write(0, data(STAGE_MIN as usize, 9));
        store.operate(&io, "a", &replace, &snapc).await.unwrap();
        assert_eq!(store.read(&io, "a", 0, Some(1)).await.unwrap()[0], 9);
        let mut old = store
            .read_op(
                &io,
                "a",
                &rbdx_objstore::ReadOp::new().read(0, Some(1)),
                Some(snap),
            )
            .await
            .unwrap();
        assert_eq!(
            old.take_data(0).unwrap()[0],
            7,
            "the snapshot keeps the old content"
        );
    }
}
