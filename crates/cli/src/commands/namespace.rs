//! `rbdx namespace create|ls|rm`.

use rbdx_image::Cluster;
use rbdx_objstore::{IoCtx, ObjectStore, SnapContext, WriteOp};
use serde::Serialize;

use crate::args::{NamespaceCommand, PoolArg};
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::spec::resolve_pool;

#[derive(Serialize)]
struct NamespaceOut {
    name: String,
}

fn pool_and_namespace(arg: &PoolArg, need_namespace: bool) -> CliResult<(String, String)> {
    let (pool, namespace) = resolve_pool(arg.spec.as_deref(), &arg.pool, &arg.namespace)?;
    if need_namespace && namespace.is_empty() {
        return Err(CliError::invalid("namespace name was not specified"));
    }
    Ok((pool, namespace))
}

/// Runs a namespace command.
pub async fn run(cluster: &Cluster, command: NamespaceCommand, printer: Printer) -> CliResult {
    match command {
        NamespaceCommand::Create(arg) => {
            let (pool, namespace) = pool_and_namespace(&arg, true)?;
            let info = cluster.store().pool_lookup(&pool).await?;
            cluster
                .store()
                .namespace_create(&IoCtx::with_namespace(info.id, namespace))
                .await?;
        }
        NamespaceCommand::Ls(arg) => {
            let (pool, _) = pool_and_namespace(&arg, false)?;
            let info = cluster.store().pool_lookup(&pool).await?;
            let names: Vec<NamespaceOut> = cluster
                .store()
                .namespace_list(info.id)
                .await?
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(|name| NamespaceOut { name })
                .collect();
            printer.print("namespaces", &names, |names| {
                if !names.is_empty() {
                    println!("NAME");
                }
                for n in names {
                    println!("{}", n.name);
                }
            });
        }
        NamespaceCommand::Rm(arg) => {
            let (pool, namespace) = pool_and_namespace(&arg, true)?;
            let info = cluster.store().pool_lookup(&pool).await?;
            let io = IoCtx::with_namespace(info.id, namespace.clone());
            let images = rbdx_image::Images::new(cluster.clone(), io.clone());
            if !images.list().await?.is_empty() {
                return Err(CliError::with_code(
                    format!("namespace {pool}/{namespace} still contains images"),
                    16,
                ));
            }
            // The empty image directory is ours to remove; anything else keeps it busy.
            let _ = cluster
                .store()
                .operate(
                    &io,
                    rbdx_image::names::DIRECTORY,
                    &WriteOp::new().remove(),
                    &SnapContext::empty(),
                )
                .await;
            cluster.store().namespace_remove(&io).await?;
        }
    }
    Ok(())
}
