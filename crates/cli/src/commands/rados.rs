//! `rbdx rados`: raw object access for inspecting a store, with the syntax of Ceph's `rados`.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures::TryStreamExt;
use rbdx_objstore::{IoCtx, ObjectStore, ObjectStoreExt, ReadOp, SnapContext, WriteOp};
use serde::Serialize;

use crate::args::{RadosArgs, RadosCommand};
use crate::commands::{read_input, write_output};
use crate::error::{CliError, CliResult};
use crate::output::{Printer, show_bytes, utc};

#[derive(Serialize)]
struct StatOut {
    pool: String,
    namespace: String,
    name: String,
    size: u64,
    mtime: f64,
    version: u64,
}

#[derive(Serialize)]
struct WatcherOut {
    watcher: String,
    client: String,
    cookie: u64,
}

/// Runs a rados command.
pub async fn run(store: &dyn ObjectStore, args: RadosArgs, printer: Printer) -> CliResult {
    let pool = store.pool_lookup(&args.pool).await?;
    let io = IoCtx::with_namespace(pool.id, args.namespace.clone());
    let snapc = SnapContext::empty();
    match args.command {
        RadosCommand::Put { object, file } => {
            let data = read_input(&file)?;
            store
                .operate(
                    &io,
                    &object,
                    &WriteOp::new().write_full(Bytes::from(data)),
                    &snapc,
                )
                .await?;
        }
        RadosCommand::Get { object, file } => {
            let data = store.read(&io, &object, 0, None).await?;
            write_output(&file, &data)?;
        }
        RadosCommand::Stat { object } => {
            let stat = store.stat(&io, &object).await?;
            let mtime = stat
                .mtime
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let out = StatOut {
                pool: args.pool.clone(),
                namespace: args.namespace.clone(),
                name: object,
                size: stat.size,
                mtime,
                version: stat.version,
            };
            printer.print("object", &out, |o| {
                println!(
                    "{}/{} mtime {}, size {}, version {}",
                    o.pool,
                    o.name,
                    utc(stat.mtime),
                    o.size,
                    o.version
                )
            });
        }
        RadosCommand::Ls => {
            let names: Vec<String> = store.list_objects(&io, "").try_collect().await?;
            printer.print("objects", &names, |names| {
                for n in names {
                    println!("{n}");
                }
            });
        }
        RadosCommand::Rm { objects } => {
            for object in objects {
                store
                    .operate(&io, &object, &WriteOp::new().remove(), &snapc)
                    .await?;
            }
        }
        RadosCommand::Setomapval { object, key, value } => {
            let op = WriteOp::new().omap_set([(key, Bytes::from(value))]);
            store.operate(&io, &object, &op, &snapc).await?;
        }
        RadosCommand::Getomapval { object, key } => {
            let op = ReadOp::new().omap_get_by_keys([key.clone()]);
            let mut result = store.read_op(&io, &object, &op, None).await?;
            let map = result.take_map(0).unwrap_or_default();
            let value = map.get(&key).ok_or_else(|| {
                CliError::from(rbdx_objstore::Error::not_found(
                    rbdx_objstore::Subject::OmapKey {
                        oid: object.clone(),
                        key: key.clone(),
                    },
                ))
            })?;
            let shown = show_bytes(value);
            printer.print("value", &shown, |v| println!("{v}"));
        }
        RadosCommand::Listomapvals { object } => {
            let entries: BTreeMap<String, String> = store
                .omap_get_all(&io, &object)
                .await?
                .into_iter()
                .map(|(k, v)| (k, show_bytes(&v)))
                .collect();
            printer.print("entries", &entries, |entries| {
                for (k, v) in entries {
                    println!("{k}\n{v}");
                }
            });
        }
        RadosCommand::Rmomapkey { object, key } => {
            store
                .operate(&io, &object, &WriteOp::new().omap_remove([key]), &snapc)
                .await?;
        }
        RadosCommand::Listwatchers { object } => {
            let watchers: Vec<WatcherOut> = store
                .list_watchers(&io, &object)
                .await?
                .into_iter()
                .map(|w| WatcherOut {
                    watcher: w.client.addr,
                    client: w.client.id.to_string(),
                    cookie: w.cookie,
                })
                .collect();
            printer.print("watchers", &watchers, |ws| {
                for w in ws {
                    println!("watcher={} {} cookie={}", w.watcher, w.client, w.cookie);
                }
            });
        }
    }
    Ok(())
}
