//! `rbdx mirror snapshot schedule add|remove|ls|status`.

use rbdx_image::mirroring::MirrorMode;
use rbdx_image::{Cluster, Images};
use rbdx_mirror::schedule::{self, Schedule, applying, parse_interval, parse_start};
use rbdx_mirror::status::format_time;
use rbdx_objstore::IoCtx;
use serde::Serialize;

use crate::args::{ScheduleCommand, ScheduleLevel};
use crate::error::{CliError, CliResult};
use crate::output::{Printer, print_table};

/// Runs a `mirror snapshot schedule` command.
pub async fn run(cluster: &Cluster, command: ScheduleCommand, printer: Printer) -> CliResult {
    let store = cluster.store();
    match command {
        ScheduleCommand::Add {
            level,
            interval,
            start,
        } => {
            let (pool, namespace, image) = level_of(cluster, &level).await?;
            parse_interval(&interval)?;
            if let Some(s) = &start {
                parse_start(s)?;
            }
            let mut all = schedule::load(store).await?;
            let new = Schedule {
                pool,
                namespace,
                image,
                interval,
                start_time: start,
            };
            if !all.contains(&new) {
                all.push(new);
                schedule::save(store, &all).await?;
            }
        }
        ScheduleCommand::Remove {
            level,
            interval,
            start,
        } => {
            let (pool, namespace, image) = level_of(cluster, &level).await?;
            let mut all = schedule::load(store).await?;
            let before = all.len();
            all.retain(|s| {
                !(s.pool == pool
                    && s.namespace == namespace
                    && s.image == image
                    && interval.as_ref().is_none_or(|i| *i == s.interval)
                    && start
                        .as_ref()
                        .is_none_or(|t| Some(t) == s.start_time.as_ref()))
            });
            if all.len() == before {
                return Err(CliError::with_code("no such schedule", 2));
            }
            schedule::save(store, &all).await?;
        }
        ScheduleCommand::Ls { level, recursive } => {
            let (pool, namespace, image) = level_of(cluster, &level).await?;
            let shown: Vec<Schedule> = schedule::load(store)
                .await?
                .into_iter()
                .filter(|s| {
                    let exact = s.pool == pool && s.namespace == namespace && s.image == image;
                    let below = (pool.is_empty() || s.pool == pool)
                        && (namespace.is_empty() || s.namespace == namespace)
                        && (image.is_empty() || s.image == image);
                    exact || (recursive && below)
                })
                .collect();
            printer.print("schedules", &shown, |rows| {
                if rows.is_empty() {
                    return;
                }
                let dash = |t: &str| {
                    if t.is_empty() {
                        "-".to_owned()
                    } else {
                        t.to_owned()
                    }
                };
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|s| {
                        vec![
                            dash(&s.pool),
                            dash(&s.namespace),
                            dash(&s.image),
                            s.describe(),
                        ]
                    })
                    .collect();
                print_table(&["POOL", "NAMESPACE", "IMAGE", "SCHEDULE"], &table);
            });
        }
        ScheduleCommand::Status { level } => status(cluster, &level, printer).await?,
    }
    Ok(())
}

/// Resolves a level: (pool, namespace, image), empty for what is not given.
async fn level_of(cluster: &Cluster, level: &ScheduleLevel) -> CliResult<(String, String, String)> {
    let pool = level.pool.clone().unwrap_or_default();
    let namespace = level.namespace.clone().unwrap_or_default();
    let image = level.image.clone().unwrap_or_default();
    if pool.is_empty() && (!namespace.is_empty() || !image.is_empty()) {
        return Err(CliError::invalid("--namespace and --image need --pool"));
    }
    if !pool.is_empty() {
        cluster.store().pool_lookup(&pool).await?;
    }
    Ok((pool, namespace, image))
}

#[derive(Serialize)]
struct Due {
    schedule_time: String,
    image: String,
}

#[derive(Serialize)]
struct StatusOut {
    scheduled_images: Vec<Due>,
}

async fn status(cluster: &Cluster, level: &ScheduleLevel, printer: Printer) -> CliResult {
    let (pool, namespace, image) = level_of(cluster, level).await?;
    let store = cluster.store();
    let schedules = schedule::load(store).await?;
    let now = rbdx_mirror::status::now_secs() as i64;
    let mut due = Vec::new();
    for p in store.pool_list().await? {
        if !pool.is_empty() && p.name != pool {
            continue;
        }
        let images = Images::new(cluster.clone(), IoCtx::with_namespace(p.id, &namespace));
        for (name, id) in images.list().await? {
            if !image.is_empty() && name != image {
                continue;
            }
            let header = images.header_by_id(&id, &name).await?;
            let Some(m) = header.mirror else {
                continue;
            };
            if !m.primary || m.mode != MirrorMode::Snapshot {
                continue;
            }
            let next = applying(&schedules, &p.name, &namespace, &name)
                .iter()
                .filter_map(|s| s.next_due(now).ok())
                .min();
            if let Some(next) = next {
                let spec = if namespace.is_empty() {
                    format!("{}/{name}", p.name)
                } else {
                    format!("{}/{namespace}/{name}", p.name)
                };
                due.push((next, spec));
            }
        }
    }
    due.sort();
    let out = StatusOut {
        scheduled_images: due
            .into_iter()
            .map(|(t, image)| Due {
                schedule_time: format_time(t.max(0) as u64),
                image,
            })
            .collect(),
    };
    printer.print("status", &out, |o| {
        if o.scheduled_images.is_empty() {
            return;
        }
        let rows: Vec<Vec<String>> = o
            .scheduled_images
            .iter()
            .map(|d| vec![d.schedule_time.clone(), d.image.clone()])
            .collect();
        print_table(&["SCHEDULE TIME", "IMAGE"], &rows);
    });
    Ok(())
}
