//! Pools and their self-managed snapshot ids.
//!
//! Pools are created and deleted through librados (the monitors must allow pool deletion).
//! A new pool is tagged with the `rbd` application, as `rbd pool init` does, so the cluster
//! does not warn about a pool without an application.
//!
//! Snapshot ids come from the monitors. RADOS does not refuse a read at a snapshot id that was
//! never allocated (it reads the head), so reads at a snapshot newer than the newest id this
//! session knows of check the pool's `snap_seq` with the monitors first.

use std::sync::Arc;

use rbdx_objstore::{Error, ErrorKind, PoolId, PoolInfo, Result, SnapId, Subject};
use serde_json::json;

use crate::store::{Inner, guard};

impl Inner {
    /// Creates a pool and returns its id.
    pub(crate) async fn pool_create(self: &Arc<Self>, name: &str) -> Result<PoolId> {
        let name = name.to_owned();
        self.run(move |inner| {
            inner.cluster.pool_create(&name)?;
            let id = inner.cluster.pool_lookup(&name)?;
            let tag = json!({
                "prefix": "osd pool application enable",
                "pool": name,
                "app": "rbd",
                "yes_i_really_mean_it": true,
            });
            if let Err(e) = inner
                .cluster
                .mon_command(&tag, &[], || Subject::Pool(name.clone()))
            {
                tracing::warn!("pool '{name}' created, but tagging it for rbd failed: {e}");
            }
            Ok(id)
        })
        .await
    }

    /// Removes a pool with everything in it.
    pub(crate) async fn pool_remove(self: &Arc<Self>, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run(move |inner| {
            let id = inner.cluster.pool_lookup(&name)?;
            inner.cluster.pool_delete(&name)?;
            inner.forget_pool(id);
            guard(&inner.snap_seqs).remove(&id);
            Ok(())
        })
        .await
    }

    /// Lists pools in id order.
    pub(crate) async fn pool_list(self: &Arc<Self>) -> Result<Vec<PoolInfo>> {
        self.run(|inner| {
            let mut pools = Vec::new();
            for name in inner.cluster.pool_names()? {
                match inner.cluster.pool_lookup(&name) {
                    Ok(id) => pools.push(PoolInfo { id, name }),
                    // Removed between the two calls.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            pools.sort_by_key(|p| p.id);
            Ok(pools)
        })
        .await
    }

    /// Allocates a self-managed snapshot id.
    pub(crate) async fn snap_create(self: &Arc<Self>, pool: PoolId) -> Result<SnapId> {
        let io = rbdx_objstore::IoCtx::new(pool);
        let snap = self.io_call(&io, move |h, _| h.snap_create(pool)).await?;
        let mut seqs = guard(&self.snap_seqs);
        let seq = seqs.entry(pool).or_default();
        *seq = (*seq).max(snap);
        Ok(SnapId(snap))
    }

    /// Removes a self-managed snapshot id; the OSDs trim clones in the background.
    pub(crate) async fn snap_remove(self: &Arc<Self>, pool: PoolId, snap: SnapId) -> Result<()> {
        let subject = move || Subject::Snapshot { pool, snap };
        if snap.0 == 0 {
            return Err(Error::not_found(subject()));
        }
        let io = rbdx_objstore::IoCtx::new(pool);
        self.io_call(&io, move |h, _| h.snap_remove(snap.0, subject))
            .await
    }

    /// Fails with `NotFound` naming the snapshot if `snap` was never allocated in `pool`.
    pub(crate) async fn require_snapshot(
        self: &Arc<Self>,
        pool: PoolId,
        snap: SnapId,
    ) -> Result<()> {
        let missing = || Error::not_found(Subject::Snapshot { pool, snap });
        if snap.0 == 0 {
            return Err(missing());
        }
        if guard(&self.snap_seqs)
            .get(&pool)
            .is_some_and(|seq| snap.0 <= *seq)
        {
            return Ok(());
        }
        let seq = self.run(move |inner| inner.pool_snap_seq(pool)).await?;
        let mut seqs = guard(&self.snap_seqs);
        let known = seqs.entry(pool).or_default();
        *known = (*known).max(seq);
        if snap.0 <= *known {
            Ok(())
        } else {
            Err(missing())
        }
    }

    /// Asks the monitors for a pool's newest snapshot id.
    fn pool_snap_seq(&self, pool: PoolId) -> Result<u64> {
        let cmd = json!({"prefix": "osd pool ls", "detail": "detail", "format": "json"});
        let out = self
            .cluster
            .mon_command(&cmd, &[], || Subject::PoolId(pool))?;
        let pools: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            Error::new(ErrorKind::Io, Subject::PoolId(pool))
                .with_detail(format!("unreadable pool listing from the monitors: {e}"))
        })?;
        pools
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["pool_id"].as_u64() == Some(pool.0))
            .and_then(|p| p["snap_seq"].as_u64())
            .ok_or_else(|| Error::not_found(Subject::PoolId(pool)))
    }
}
