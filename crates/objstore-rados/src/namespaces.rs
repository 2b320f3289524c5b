//! Named namespaces of a pool.
//!
//! RADOS namespaces need no creation: any name works in any I/O context. The contract wants
//! them created and removed explicitly, so each pool keeps a registry: the omap of one object
//! in a namespace whose name (`rbdx/registry`) no user namespace can have, since user
//! namespace names may not contain `/`. Changes to the registry are compare-and-swap writes
//! guarded by the registry object's version. Sessions remember for a few seconds that a
//! namespace exists, so writes do not pay a registry read each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rbdx_objstore::{
    Error, ErrorKind, IoCtx, ListOptions, PoolId, ReadOp, Result, SnapContext, Subject, WriteOp,
};

use crate::store::Inner;

/// The namespace holding the registry object.
pub(crate) const REGISTRY_NAMESPACE: &str = "rbdx/registry";

/// The registry object; its omap keys are the namespace names.
pub(crate) const REGISTRY_OBJECT: &str = "rbdx_namespaces";

/// How long a session trusts that a namespace it saw still exists.
const TRUST: Duration = Duration::from_secs(5);

/// Returns the I/O context of a pool's registry.
pub(crate) fn registry(pool: PoolId) -> IoCtx {
    IoCtx::with_namespace(pool, REGISTRY_NAMESPACE)
}

/// Namespaces this session saw recently, with when it saw them.
#[derive(Debug, Default)]
pub(crate) struct SeenNamespaces {
    seen: Mutex<HashMap<(PoolId, String), Instant>>,
}

impl SeenNamespaces {
    /// Returns true if `io`'s namespace was seen to exist less than a few seconds ago.
    pub(crate) fn trusted(&self, io: &IoCtx) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(io.pool(), io.namespace().to_owned()))
            .is_some_and(|at| at.elapsed() < TRUST)
    }

    /// Records that `io`'s namespace exists.
    pub(crate) fn saw(&self, io: &IoCtx) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert((io.pool(), io.namespace().to_owned()), Instant::now());
    }

    /// Forgets `io`'s namespace (it was removed).
    pub(crate) fn forget(&self, io: &IoCtx) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&(io.pool(), io.namespace().to_owned()));
    }

    /// Forgets every namespace of a removed pool.
    pub(crate) fn forget_pool(&self, pool: PoolId) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|(p, _), _| *p != pool);
    }
}

impl Inner {
    /// Reads the registry: its version (0 if absent) and whether `name` is in it.
    async fn registry_lookup(self: &Arc<Self>, pool: PoolId, name: &str) -> Result<(u64, bool)> {
        let op = ReadOp::new().omap_get_by_keys([name]);
        match self.read(&registry(pool), REGISTRY_OBJECT, &op, None).await {
            Ok(mut result) => {
                let found = result.take_map(0).is_some_and(|m| !m.is_empty());
                Ok((result.version, found))
            }
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    && matches!(e.subject(), Subject::Object { .. }) =>
            {
                Ok((0, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Returns true if `ctx`'s namespace is registered.
    pub(crate) async fn namespace_exists(self: &Arc<Self>, ctx: &IoCtx) -> Result<bool> {
        Ok(self.registry_lookup(ctx.pool(), ctx.namespace()).await?.1)
    }

    /// Changes the registry with `change` applied to a batch guarded by the version read.
    /// `decide` sees whether the name is registered and says whether to go on.
    async fn registry_update(
        self: &Arc<Self>,
        ctx: &IoCtx,
        decide: impl Fn(bool) -> Result<()>,
        change: impl Fn(WriteOp) -> WriteOp,
    ) -> Result<()> {
        let pool = ctx.pool();
        loop {
            let (version, found) = self.registry_lookup(pool, ctx.namespace()).await?;
            decide(found)?;
            let guarded = if version == 0 {
                WriteOp::new().create(true)
            } else {
                WriteOp::new().assert_version(version)
            };
            let op = change(guarded);
            let written = self
                .write(&registry(pool), REGISTRY_OBJECT, &op, &SnapContext::empty())
                .await;
            match written {
                Ok(_) => return Ok(()),
                // Another client changed the registry meanwhile: look again.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::VersionMismatch | ErrorKind::AlreadyExists
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Registers `ctx`'s namespace.
    pub(crate) async fn namespace_create(self: &Arc<Self>, ctx: &IoCtx) -> Result<()> {
        let name = ctx.namespace().to_owned();
        self.registry_update(
            ctx,
            |found| {
                if found {
                    Err(Error::new(
                        ErrorKind::AlreadyExists,
                        ctx.namespace_subject(),
                    ))
                } else {
                    Ok(())
                }
            },
            |op| op.omap_set([(name.clone(), Bytes::new())]),
        )
        .await?;
        self.namespaces.saw(ctx);
        Ok(())
    }

    /// Unregisters `ctx`'s namespace, which must hold no objects.
    pub(crate) async fn namespace_remove(self: &Arc<Self>, ctx: &IoCtx) -> Result<()> {
        if !self.namespace_exists(ctx).await? {
            return Err(Error::not_found(ctx.namespace_subject()));
        }
        let page = self
            .list_objects(ctx, &ListOptions::default().with_max(1))
            .await?;
        if !page.names.is_empty() {
            return Err(Error::new(ErrorKind::Busy, ctx.namespace_subject())
                .with_detail("the namespace still holds objects"));
        }
        let name = ctx.namespace().to_owned();
        self.registry_update(
            ctx,
            |found| {
                if found {
                    Ok(())
                } else {
                    Err(Error::not_found(ctx.namespace_subject()))
                }
            },
            |op| op.omap_remove([name.clone()]),
        )
        .await?;
        self.namespaces.forget(ctx);
        Ok(())
    }

    /// Lists a pool's registered namespaces, sorted.
    pub(crate) async fn namespace_list(self: &Arc<Self>, pool: PoolId) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let op = ReadOp::new().omap_get_vals(after.as_deref(), "", 0);
            let result = self.read(&registry(pool), REGISTRY_OBJECT, &op, None).await;
            let (entries, more) = match result {
                Ok(mut result) => result.take_omap_vals(0).unwrap_or_default(),
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        && matches!(e.subject(), Subject::Object { .. }) =>
                {
                    (Vec::new(), false)
                }
                Err(e) => return Err(e),
            };
            after = entries.last().map(|(k, _)| k.clone());
            names.extend(entries.into_iter().map(|(k, _)| k));
            if !more || after.is_none() {
                return Ok(names);
            }
        }
    }
}
