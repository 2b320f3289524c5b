//! `rbdx mirror ...`: mirroring between two sites with `rbd mirror`'s commands and
//! outputs, and the mirror daemon.

mod daemon;
mod image;
mod peer;
mod pool;
mod schedule;
mod verify;

use rbdx_image::{Cluster, Images};
use rbdx_mirror::pool::PoolMirror;
use rbdx_objstore::IoCtx;

use crate::args::{Global, MirrorCommand, MirrorSnapshotCommand, PoolArg};
use crate::error::CliResult;
use crate::output::Printer;
use crate::spec::resolve_pool;

/// Runs a `mirror` command.
pub async fn run(
    global: &Global,
    cluster: &Cluster,
    command: MirrorCommand,
    printer: Printer,
) -> CliResult {
    match command {
        MirrorCommand::Pool { command } => {
            pool::run(cluster, command, printer, global.verbose > 0).await
        }
        MirrorCommand::Image { command } => image::run(cluster, command, printer).await,
        MirrorCommand::Snapshot {
            command: MirrorSnapshotCommand::Schedule { command },
        } => schedule::run(cluster, command, printer).await,
        MirrorCommand::Daemon(args) => daemon::run(global, cluster, &args, printer).await,
    }
}

/// A pool namespace named by a pool argument.
pub(super) struct PoolTarget {
    /// `pool` or `pool/namespace`.
    pub label: String,
    /// The pool's name.
    pub pool: String,
    /// Its images.
    pub images: Images,
    /// Its mirroring configuration.
    pub mirror: PoolMirror,
}

/// Resolves a pool argument.
pub(super) async fn pool_target(cluster: &Cluster, arg: &PoolArg) -> CliResult<PoolTarget> {
    let (pool, namespace) = resolve_pool(arg.spec.as_deref(), &arg.pool, &arg.namespace)?;
    let info = cluster.store().pool_lookup(&pool).await?;
    let io = IoCtx::with_namespace(info.id, &namespace);
    let label = if namespace.is_empty() {
        pool.clone()
    } else {
        format!("{pool}/{namespace}")
    };
    Ok(PoolTarget {
        label,
        pool,
        images: Images::new(cluster.clone(), io.clone()),
        mirror: PoolMirror::new(cluster.store().clone(), io),
    })
}
