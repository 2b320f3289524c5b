//! `rbdx pool create|ls|rm`.

use rbdx_objstore::ObjectStore;
use serde::Serialize;

use crate::args::PoolCommand;
use crate::error::{CliError, CliResult};
use crate::output::Printer;

#[derive(Serialize)]
struct PoolEntry {
    pool_id: u64,
    pool_name: String,
}

/// Runs a pool command.
pub async fn run(store: &dyn ObjectStore, command: PoolCommand, printer: Printer) -> CliResult {
    match command {
        PoolCommand::Init { name } => {
            // Marks the pool as holding images (`rbd_info`), as `rbd pool init` does.
            let name = name.unwrap_or_else(|| crate::spec::DEFAULT_POOL.to_owned());
            let info = store.pool_lookup(&name).await?;
            store
                .operate(
                    &rbdx_objstore::IoCtx::new(info.id),
                    rbdx_image::names::INFO,
                    &rbdx_objstore::WriteOp::new().create(false),
                    &rbdx_objstore::SnapContext::empty(),
                )
                .await?;
        }
        PoolCommand::Create { name } => {
            let id = store.pool_create(&name).await?;
            eprintln!("pool '{name}' created (id {id})");
        }
        PoolCommand::Ls => {
            let pools: Vec<PoolEntry> = store
                .pool_list()
                .await?
                .into_iter()
                .map(|p| PoolEntry {
                    pool_id: p.id.0,
                    pool_name: p.name,
                })
                .collect();
            printer.print("pools", &pools, |pools| {
                for p in pools {
                    println!("{} {}", p.pool_id, p.pool_name);
                }
            });
        }
        PoolCommand::Rm { name, confirm } => {
            store.pool_lookup(&name).await?;
            if !confirm {
                return Err(CliError::invalid(format!(
                    "refusing to remove pool '{name}' and everything in it without --yes-i-really-really-mean-it"
                )));
            }
            store.pool_remove(&name).await?;
            eprintln!("pool '{name}' removed");
        }
    }
    Ok(())
}
