//! `rbdx trash mv|ls|restore|rm|purge`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rbdx_image::{Cluster, TrashSource};
use serde::Serialize;

use crate::args::TrashCommand;
use crate::commands::open::{images, resolve};
use crate::error::{CliError, CliResult};
use crate::output::{Printer, ctime, print_table};
use crate::progress::ProgressLine;
use crate::spec::{SnapRule, resolve_pool};

/// Parses a delay: `30m`, `2h`, `7d`, `45s` or plain seconds.
fn parse_delay(text: &str) -> CliResult<Duration> {
    let bad = || CliError::invalid(format!("invalid delay '{text}' (e.g. 30m, 2h, 7d)"));
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let unit = match &t[split..] {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" | "hours" => 3600,
        "d" | "days" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).map(Duration::from_secs).ok_or_else(bad)
}

#[derive(Serialize)]
struct TrashOut {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

/// Runs a trash command.
pub async fn run(
    cluster: &Cluster,
    command: TrashCommand,
    printer: Printer,
    show_progress: bool,
) -> CliResult {
    match command {
        TrashCommand::Mv { image, expires_at } => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            let defer = match expires_at {
                Some(text) => parse_delay(&text)?,
                None => Duration::ZERO,
            };
            images
                .trash_move(&spec.image, defer, TrashSource::User)
                .await?;
        }
        TrashCommand::Ls { pool, all, long } => {
            let (pool, namespace) =
                resolve_pool(pool.spec.as_deref(), &pool.pool, &pool.namespace)?;
            let images = images(cluster, &pool, &namespace).await?;
            let now = SystemTime::now();
            let out: Vec<TrashOut> = images
                .trash_list()
                .await?
                .into_iter()
                .filter(|e| all || e.source == TrashSource::User)
                .map(|e| {
                    let expired = e.expired(now);
                    TrashOut {
                        id: e.id.clone(),
                        name: e.name.clone(),
                        source: long.then(|| format!("{:?}", e.source).to_uppercase()),
                        deleted_at: long
                            .then(|| ctime(UNIX_EPOCH + Duration::from_secs(e.deletion_time))),
                        status: long.then(|| {
                            if expired {
                                "expired".to_owned()
                            } else {
                                format!(
                                    "protected until {}",
                                    ctime(UNIX_EPOCH + Duration::from_secs(e.deferment_end_time))
                                )
                            }
                        }),
                    }
                })
                .collect();
            printer.print("trash", &out, |out| {
                if long {
                    let rows: Vec<Vec<String>> = out
                        .iter()
                        .map(|e| {
                            vec![
                                e.id.clone(),
                                e.name.clone(),
                                e.source.clone().unwrap_or_default(),
                                e.deleted_at.clone().unwrap_or_default(),
                                e.status.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    if !rows.is_empty() {
                        print_table(&["ID", "NAME", "SOURCE", "DELETED_AT", "STATUS"], &rows);
                    }
                } else {
                    for e in out {
                        println!("{} {}", e.id, e.name);
                    }
                }
            });
        }
        TrashCommand::Restore { image, name } => {
            let id = image.resolve()?;
            let images = images(cluster, &id.pool, &id.namespace).await?;
            images.trash_restore(&id.id, name.as_deref()).await?;
        }
        TrashCommand::Rm { image, force } => {
            let id = image.resolve()?;
            let images = images(cluster, &id.pool, &id.namespace).await?;
            let progress = ProgressLine::new("Removing image", show_progress);
            let result = images
                .trash_remove(&id.id, force, &|d, t| progress.update(d, t))
                .await;
            progress.conclude(result)?;
        }
        TrashCommand::Purge { pool } => {
            let (pool, namespace) =
                resolve_pool(pool.spec.as_deref(), &pool.pool, &pool.namespace)?;
            let images = images(cluster, &pool, &namespace).await?;
            let progress = ProgressLine::new("Removing images", show_progress);
            let (_, failure) = images
                .trash_purge(SystemTime::now(), &|d, t| progress.update(d, t))
                .await?;
            progress.conclude(failure.map_or(Ok(()), Err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_take_units() {
        assert_eq!(parse_delay("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_delay("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_delay("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_delay("soon").is_err());
    }
}
