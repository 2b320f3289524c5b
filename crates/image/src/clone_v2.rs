//! Format 2 clones and the snapshot trash, as Ceph has them since Mimic.
//!
//! A format 1 clone needs its parent snapshot protected, and the snapshot cannot be unprotected
//! or removed while the clone uses it. A format 2 clone needs no protection: removing a
//! snapshot that format 2 clones still use moves it to the *trash namespace* instead (renamed
//! to a UUID, its original name kept in the namespace, hidden from `snap ls`; `snap ls --all`
//! shows it), and it is removed for good when its last clone stops using it (the clone is
//! removed or flattened, or the clone's snapshots that used it are gone).
//!
//! Which clones use a snapshot is the children registry (`rbd_children`); each record says
//! the clone's format. The header's operation features say what an image takes part in: the
//! clone has `clone-child`, the parent `clone-parent` while it has format 2 clones and
//! `snap-trash` while a snapshot waits in the trash. These are recomputed from the registry
//! and the snapshots whenever a clone detaches, so a detach cut short by a crash is put right
//! by the next one.
//!
//! A removal of the last trashed snapshot takes the parent's exclusive lock as any snapshot
//! removal does; if that fails (the parent is read-only, as a migration source is), the
//! snapshot stays in the trash and a warning says so: the clone's own removal has happened.

use std::str::FromStr;
use std::sync::Arc;

use futures::future::BoxFuture;
use rbdx_objstore::{IoCtx, ObjectStore, PoolId};

use crate::children;
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::features::OpFeatures;
use crate::header::{ParentSpec, SnapNamespace};
use crate::image::{Image, OpenOptions, read_header};
use crate::names;

/// The format of a new clone (`rbd_default_clone_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloneFormat {
    /// Format 1, as Ceph chooses for clusters that allow clients older than Mimic.
    #[default]
    Auto,
    /// The parent snapshot must be protected.
    V1,
    /// No protection needed; a removed parent snapshot waits in the trash.
    V2,
}

impl CloneFormat {
    /// Returns the format number a clone gets.
    pub fn number(self) -> u8 {
        match self {
            CloneFormat::V2 => 2,
            CloneFormat::Auto | CloneFormat::V1 => 1,
        }
    }
}

impl FromStr for CloneFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<CloneFormat> {
        match text.trim() {
            "auto" => Ok(CloneFormat::Auto),
            "1" => Ok(CloneFormat::V1),
            "2" => Ok(CloneFormat::V2),
            other => Err(Error::invalid(format!(
                "invalid clone format '{other}' (1, 2 or auto)"
            ))),
        }
    }
}

/// Returns a new random (version 4) UUID, the name of a snapshot moved to the trash.
pub fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorKind::Store(5), format!("cannot draw a UUID: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn parent_io(parent: &ParentSpec) -> IoCtx {
    IoCtx::with_namespace(PoolId(parent.pool_id), parent.namespace.clone())
}

/// Sets or clears operation features of image `id` in `io`.
pub(crate) async fn set_op_features(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
    changes: &[(OpFeatures, bool)],
) -> Result<()> {
    crate::migration_admin::change_header(store, io, id, id, |h| {
        for (feature, on) in changes {
            h.op_features = h.op_features.set(*feature, *on);
        }
        Ok(())
    })
    .await
    .map(|_| ())
}

/// Puts the parent right after a clone stopped using `parent`: removes the parent snapshot if
/// it waits in the trash and has no clone left, then recomputes the parent's operation
/// features. (Boxed: removing the parent snapshot may detach the parent from its own parent.)
pub(crate) fn child_detached<'a>(
    cluster: &'a Cluster,
    parent: &'a ParentSpec,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let store = cluster.store();
        let io = parent_io(parent);
        let oid = names::header_object(&parent.image_id);
        let header = match read_header(store, &io, &oid, &parent.image_id).await {
            Ok(state) => state.header,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if header.op_features == OpFeatures::default() {
            return Ok(());
        }
        let trashed = header
            .snapshots
            .get(&parent.snap_id)
            .is_some_and(|s| !s.namespace.is_user());
        if trashed
            && children::list(store, &io, &parent.image_id, parent.snap_id)
                .await?
                .is_empty()
            && let Err(e) = remove_trashed(cluster, &io, parent).await
        {
            tracing::warn!(
                "snapshot {} of image {} stays in the trash: {e}",
                parent.snap_id,
                parent.image_id
            );
        }
        refresh_parent_op_features(store, &io, &parent.image_id).await
    })
}

async fn remove_trashed(cluster: &Cluster, io: &IoCtx, parent: &ParentSpec) -> Result<()> {
    let name = crate::layering::image_name(cluster.store(), io, &parent.image_id)
        .await
        .unwrap_or_else(|| parent.image_id.clone());
    let image = Image::open_by_id(
        cluster.clone(),
        io.clone(),
        &name,
        &parent.image_id,
        OpenOptions::default(),
    )
    .await?;
    let removed = image.remove_trashed_snapshot(parent.snap_id).await;
    let closed = image.close().await;
    removed.and(closed)
}

/// Sets `clone-parent` and `snap-trash` of image `id` to what its children and snapshots are.
pub(crate) async fn refresh_parent_op_features(
    store: &Arc<dyn ObjectStore>,
    io: &IoCtx,
    id: &str,
) -> Result<()> {
    let has_v2 = children::list_all(store, io, id)
        .await?
        .iter()
        .any(|c| c.clone_format == 2);
    let oid = names::header_object(id);
    let header = read_header(store, io, &oid, id).await?.header;
    let has_trash = header
        .snapshots
        .values()
        .any(|s| s.namespace != SnapNamespace::User);
    let want = header
        .op_features
        .set(OpFeatures::CLONE_PARENT, has_v2)
        .set(OpFeatures::SNAP_TRASH, has_trash);
    if want == header.op_features {
        return Ok(());
    }
    set_op_features(
        store,
        io,
        id,
        &[
            (OpFeatures::CLONE_PARENT, has_v2),
            (OpFeatures::SNAP_TRASH, has_trash),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = new_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, new_uuid().unwrap());
    }

    #[test]
    fn clone_formats_parse_as_rbd_spells_them() {
        assert_eq!("2".parse::<CloneFormat>().unwrap(), CloneFormat::V2);
        assert_eq!("auto".parse::<CloneFormat>().unwrap().number(), 1);
        assert!("3".parse::<CloneFormat>().is_err());
    }
}
