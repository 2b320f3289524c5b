//! The [`ObjectStore`] trait: the part of librados that the image layer needs.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::lock::{LockInfo, LockOptions};
use crate::op::{ObjectWrite, ReadOp, ReadResult, WriteOp};
use crate::snapset::SnapSet;
use crate::types::{
    ClientId, ClientInfo, IoCtx, ListOptions, ListPage, PoolId, PoolInfo, SnapContext, SnapId,
};
use crate::watch::{NotifyResult, Watch, WatcherInfo};

/// A cluster of pools of objects, as seen by one client session.
///
/// # Contract
///
/// - **Pools** have unique names and numeric ids that are never reused. A pool holds
///   **namespaces**: the default one (empty name) always exists; others are created and removed
///   explicitly and must be empty to be removed. Operations naming an unknown pool or namespace
///   fail with `NotFound` naming it.
/// - **Objects** are byte arrays (at most [`crate::limits::MAX_OBJECT_SIZE`]) with an omap
///   (sorted string keys) and xattrs, named by (pool, namespace, name).
/// - **Atomicity**: [`ObjectStore::operate`] applies a [`WriteOp`] in order, all or nothing,
///   and that stays true if the process is killed at any instant: afterwards the object is
///   exactly as before the batch or exactly as after it. A failing step (an assertion, a
///   comparison, a step on an absent object) leaves the object untouched.
/// - **Versions**: an object's version increases with every batch that changes it, and a
///   removed and recreated object never shows a version it had before, so an assert-version
///   step can never be fooled by a removal in between. Versions of different objects are not
///   related. A batch that changes nothing returns the current version (0 for an absent
///   object).
/// - **Consistency**: a [`ReadOp`] sees one version of one object; all its outputs and
///   [`ReadResult::version`] agree. A completed `operate` is visible to every client.
/// - **Durability**: [`ObjectStore::flush`] makes every operation this client completed before
///   it durable across power loss.
/// - **Not found**: reads, `list_snaps`, `watch` and `notify` on an absent object fail with
///   `NotFound` naming the object; reads at a snapshot where the object did not exist fail the
///   same way; reads at a snapshot id that was never allocated fail with `NotFound` naming the
///   snapshot, and so do reads at a removed snapshot once it is trimmed (a backend that cannot
///   tell a removed snapshot from one where the object was absent names the object).
/// - **Sparse reads** return extents that cover every non-zero byte of the range; they may
///   include zeros, so a hole is a hint for speed, not a fact to build on (see
///   [`crate::ReadStep::SparseRead`]).
/// - **Listing** returns every object that exists for the whole listing exactly once, in an
///   order of the backend's choosing; objects created or removed meanwhile may or may not
///   appear.
/// - **Snapshots** are self-managed as in RADOS: see [`crate::snapset`]. Removing a snapshot
///   trims the clones that served only it either at once or in the background (RADOS); until
///   the trim is done, `list_snaps` may still show them.
/// - **Watchers and lock holders** are client sessions; a session whose process is gone stops
///   being listed as a watcher. A lock holder is reported `alive` while its session watches the
///   locked object, as librbd's exclusive lock does (a backend that tracks sessions itself may
///   also report a holder alive that does not watch); once a gone session's watches have
///   lapsed, its holds are reported with `alive == false` so that they can be broken.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug + 'static {
    /// Returns this session's identity, as other clients see it in watcher and lock listings.
    fn client(&self) -> ClientInfo;

    /// Returns the id of the cluster or store this session reaches, if it has one of its own
    /// (a Ceph cluster's fsid, an embedded store's id).
    fn fsid(&self) -> Option<String> {
        None
    }

    /// Creates a pool and returns its id; `AlreadyExists` if the name is taken.
    async fn pool_create(&self, name: &str) -> Result<PoolId>;

    /// Removes a pool with everything in it.
    async fn pool_remove(&self, name: &str) -> Result<()>;

    /// Lists pools in id order.
    async fn pool_list(&self) -> Result<Vec<PoolInfo>>;

    /// Looks a pool up by name.
    async fn pool_lookup(&self, name: &str) -> Result<PoolInfo>;

    /// Looks a pool up by id.
    async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo>;

    /// Creates the namespace of `io`; `AlreadyExists` if it exists.
    async fn namespace_create(&self, io: &IoCtx) -> Result<()>;

    /// Removes the namespace of `io`; `Busy` if it still holds objects.
    async fn namespace_remove(&self, io: &IoCtx) -> Result<()>;

    /// Lists the named namespaces of a pool, sorted (the default namespace is not listed).
    async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>>;

    /// Reads a config-key value.
    async fn config_key_get(&self, key: &str) -> Result<Bytes>;

    /// Sets a config-key value.
    async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()>;

    /// Removes a config-key; `NotFound` if it is not set.
    async fn config_key_remove(&self, key: &str) -> Result<()>;

    /// Lists config-key names, sorted.
    async fn config_key_list(&self) -> Result<Vec<String>>;

    /// Allocates a self-managed snapshot id in a pool.
    async fn snap_create(&self, pool: PoolId) -> Result<SnapId>;

    /// Removes a self-managed snapshot: clones no longer serving any snapshot are trimmed.
    /// Removing a removed snapshot again succeeds (a retry is harmless); an id that was never
    /// allocated fails with `NotFound`.
    async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()>;

    /// Evaluates a compound read of one object at the head (`snap == None`) or a snapshot.
    async fn read_op(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &ReadOp,
        snap: Option<SnapId>,
    ) -> Result<ReadResult>;

    /// Applies a write batch to one object, atomically; returns the object's new version.
    async fn operate(
        &self,
        io: &IoCtx,
        oid: &str,
        op: &WriteOp,
        snapc: &SnapContext,
    ) -> Result<u64>;

    /// Applies write batches to several objects, in order: each as [`ObjectStore::operate`]
    /// would, and none after one that fails (their outcome is then an error too). Returns
    /// each batch's outcome, the new version or the error. A store that
    /// [`commits groups`](ObjectStore::commits_groups) commits the whole group at once when it
    /// can, all or none; it never commits a batch without the ones before it.
    async fn operate_group(&self, writes: &[ObjectWrite]) -> Vec<Result<u64>> {
        operate_in_turn(self, writes).await
    }

    /// True if [`ObjectStore::operate_group`] commits a group in one step, so that it costs
    /// about what one [`ObjectStore::operate`] does; false if it applies the batches one after
    /// another.
    fn commits_groups(&self) -> bool {
        false
    }

    /// Lists one page of object names.
    async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage>;

    /// Returns an object's clones and head, with each clone's snapshots, size and overlap.
    async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet>;

    /// Starts watching an existing object.
    async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch>;

    /// Stops a watch of this client; `NotFound` if there is no such watch.
    async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()>;

    /// Sends `payload` to every watcher of an object and waits up to `timeout` for answers.
    async fn notify(
        &self,
        io: &IoCtx,
        oid: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<NotifyResult>;

    /// Lists the watchers of an object.
    async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>>;

    /// Takes an advisory lock; creates the object if it is absent, as `cls_lock` does.
    async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()>;

    /// Releases this client's hold with `cookie`.
    async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()>;

    /// Describes a lock and its holders; an unheld lock has no lockers.
    async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo>;

    /// Lists the names of the locks held on an object.
    async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>>;

    /// Removes another client's hold.
    async fn lock_break(
        &self,
        io: &IoCtx,
        oid: &str,
        name: &str,
        client: ClientId,
        cookie: &str,
    ) -> Result<()>;

    /// Makes everything this client completed so far durable.
    async fn flush(&self) -> Result<()>;
}

/// Applies `writes` one after another with [`ObjectStore::operate`], none after one that
/// fails: [`ObjectStore::operate_group`] for a store that does not commit groups at once.
pub async fn operate_in_turn<S: ObjectStore + ?Sized>(
    store: &S,
    writes: &[ObjectWrite],
) -> Vec<Result<u64>> {
    let mut outcomes: Vec<Result<u64>> = Vec::with_capacity(writes.len());
    for w in writes {
        let outcome = match outcomes.last() {
            Some(Err(e)) => Err(not_applied(w, e.kind())),
            _ => store.operate(&w.io, &w.oid, &w.op, &w.snapc).await,
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// The outcome of batch `w` of a group, not applied because an earlier one failed with
/// `kind`.
pub fn not_applied(w: &ObjectWrite, kind: crate::ErrorKind) -> crate::Error {
    crate::Error::new(kind, w.io.object_subject(&w.oid))
        .with_detail("not applied: an earlier write of its group failed")
}

macro_rules! forward_object_store {
    ($wrapper:ty) => {
        #[deny(clippy::missing_trait_methods)]
        #[async_trait]
        impl<T: ObjectStore + ?Sized> ObjectStore for $wrapper {
            fn client(&self) -> ClientInfo {
                (**self).client()
            }
            fn fsid(&self) -> Option<String> {
                (**self).fsid()
            }
            async fn pool_create(&self, name: &str) -> Result<PoolId> {
                (**self).pool_create(name).await
            }
            async fn pool_remove(&self, name: &str) -> Result<()> {
                (**self).pool_remove(name).await
            }
            async fn pool_list(&self) -> Result<Vec<PoolInfo>> {
                (**self).pool_list().await
            }
            async fn pool_lookup(&self, name: &str) -> Result<PoolInfo> {
                (**self).pool_lookup(name).await
            }
            async fn pool_by_id(&self, id: PoolId) -> Result<PoolInfo> {
                (**self).pool_by_id(id).await
            }
            async fn namespace_create(&self, io: &IoCtx) -> Result<()> {
                (**self).namespace_create(io).await
            }
            async fn namespace_remove(&self, io: &IoCtx) -> Result<()> {
                (**self).namespace_remove(io).await
            }
            async fn namespace_list(&self, pool: PoolId) -> Result<Vec<String>> {
                (**self).namespace_list(pool).await
            }
            async fn config_key_get(&self, key: &str) -> Result<Bytes> {
                (**self).config_key_get(key).await
            }
            async fn config_key_set(&self, key: &str, value: Bytes) -> Result<()> {
                (**self).config_key_set(key, value).await
            }
            async fn config_key_remove(&self, key: &str) -> Result<()> {
                (**self).config_key_remove(key).await
            }
            async fn config_key_list(&self) -> Result<Vec<String>> {
                (**self).config_key_list().await
            }
            async fn snap_create(&self, pool: PoolId) -> Result<SnapId> {
                (**self).snap_create(pool).await
            }
            async fn snap_remove(&self, pool: PoolId, snap: SnapId) -> Result<()> {
                (**self).snap_remove(pool, snap).await
            }
            async fn read_op(
                &self,
                io: &IoCtx,
                oid: &str,
                op: &ReadOp,
                snap: Option<SnapId>,
            ) -> Result<ReadResult> {
                (**self).read_op(io, oid, op, snap).await
            }
            async fn operate(
                &self,
                io: &IoCtx,
                oid: &str,
                op: &WriteOp,
                snapc: &SnapContext,
            ) -> Result<u64> {
                (**self).operate(io, oid, op, snapc).await
            }
            async fn operate_group(&self, writes: &[ObjectWrite]) -> Vec<Result<u64>> {
                (**self).operate_group(writes).await
            }
            fn commits_groups(&self) -> bool {
                (**self).commits_groups()
            }
            async fn list_objects_opts(&self, io: &IoCtx, opts: &ListOptions) -> Result<ListPage> {
                (**self).list_objects_opts(io, opts).await
            }
            async fn list_snaps(&self, io: &IoCtx, oid: &str) -> Result<SnapSet> {
                (**self).list_snaps(io, oid).await
            }
            async fn watch(&self, io: &IoCtx, oid: &str) -> Result<Watch> {
                (**self).watch(io, oid).await
            }
            async fn unwatch(&self, io: &IoCtx, oid: &str, cookie: u64) -> Result<()> {
                (**self).unwatch(io, oid, cookie).await
            }
            async fn notify(
                &self,
                io: &IoCtx,
                oid: &str,
                payload: Bytes,
                timeout: Duration,
            ) -> Result<NotifyResult> {
                (**self).notify(io, oid, payload, timeout).await
            }
            async fn list_watchers(&self, io: &IoCtx, oid: &str) -> Result<Vec<WatcherInfo>> {
                (**self).list_watchers(io, oid).await
            }
            async fn lock_opts(&self, io: &IoCtx, oid: &str, opts: &LockOptions) -> Result<()> {
                (**self).lock_opts(io, oid, opts).await
            }
            async fn unlock(&self, io: &IoCtx, oid: &str, name: &str, cookie: &str) -> Result<()> {
                (**self).unlock(io, oid, name, cookie).await
            }
            async fn lock_info(&self, io: &IoCtx, oid: &str, name: &str) -> Result<LockInfo> {
                (**self).lock_info(io, oid, name).await
            }
            async fn lock_list(&self, io: &IoCtx, oid: &str) -> Result<Vec<String>> {
                (**self).lock_list(io, oid).await
            }
            async fn lock_break(
                &self,
                io: &IoCtx,
                oid: &str,
                name: &str,
                client: ClientId,
                cookie: &str,
            ) -> Result<()> {
                (**self).lock_break(io, oid, name, client, cookie).await
            }
            async fn flush(&self) -> Result<()> {
                (**self).flush().await
            }
        }
    };
}

forward_object_store!(std::sync::Arc<T>);
forward_object_store!(Box<T>);
