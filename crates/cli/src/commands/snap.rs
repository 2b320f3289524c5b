//! `rbdx snap ...`: snapshots with `rbd`'s syntax and outputs.

use rbdx_image::{Cluster, Image, OpenOptions, Protection, SnapNamespace};
use serde::Serialize;

use crate::args::{ImageArg, LimitCommand, SnapCommand};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::{Printer, ctime, print_table};
use crate::progress::ProgressLine;
use crate::size::format_size;
use crate::spec::{ImageSpec, SnapRule};

#[derive(Serialize)]
struct SnapOut {
    id: u64,
    name: String,
    size: u64,
    protected: String,
    timestamp: String,
    /// With `--all`: `{"type": "user"}`, `{"type": "trash", "original_name": ...}` or
    /// `{"type": "mirror", "state": ..., "complete": ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<SnapNamespace>,
}

/// The NAMESPACE column: `user`, `trash (<original name>)`, or `mirror (<state>
/// peer_uuids:[...] ...)` as `rbd` shows it.
fn namespace_text(namespace: &SnapNamespace) -> String {
    match namespace {
        SnapNamespace::User => "user".to_owned(),
        SnapNamespace::Trash { original_name } => format!("trash ({original_name})"),
        SnapNamespace::Mirror(m) => {
            let state = serde_json::to_value(m.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut text = format!(
                "mirror ({state} peer_uuids:[{}]",
                m.mirror_peer_uuids.join(",")
            );
            if let Some(id) = m.primary_snap_id {
                text.push_str(&format!(" {}:{id}", m.primary_mirror_uuid));
                if !m.complete {
                    let copied = m.last_copied_object_number.unwrap_or(0);
                    text.push_str(&format!(" {copied} objects copied"));
                } else {
                    text.push_str(" copied");
                }
            }
            text.push(')');
            text
        }
    }
}

async fn open(cluster: &Cluster, arg: &ImageArg, rule: SnapRule) -> CliResult<(ImageSpec, Image)> {
    let (spec, images) = resolve(cluster, arg, rule).await?;
    let image = images.open(&spec.image, OpenOptions::default()).await?;
    Ok((spec, image))
}

/// Runs `op` on the open image, then closes it whatever happened.
async fn with_image<T>(
    image: Image,
    op: impl AsyncFnOnce(&Image) -> rbdx_image::Result<T>,
) -> CliResult<T> {
    let result = op(&image).await;
    let closed = image.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

fn snap_name(spec: &ImageSpec) -> &str {
    spec.snap.as_deref().unwrap_or_default()
}

/// Runs a snap command.
pub async fn run(
    cluster: &Cluster,
    command: SnapCommand,
    printer: Printer,
    show_progress: bool,
) -> CliResult {
    match command {
        SnapCommand::Create(arg) => {
            let (spec, image) = open(cluster, &arg, SnapRule::Required).await?;
            let progress = ProgressLine::new("Creating snap", show_progress);
            with_image(image, async |i| i.snap_create(snap_name(&spec)).await).await?;
            progress.finish();
        }
        SnapCommand::Ls { image: arg, all } => {
            let (_, image) = open(cluster, &arg, SnapRule::None).await?;
            let snaps = with_image(image, async |i| match all {
                true => i.all_snapshots().await,
                false => i.snapshots().await,
            })
            .await?;
            let out: Vec<SnapOut> = snaps
                .into_iter()
                .map(|s| SnapOut {
                    id: s.id,
                    name: s.name.clone(),
                    size: s.size,
                    protected: (s.protection == Protection::Protected).to_string(),
                    timestamp: ctime(s.time()),
                    namespace: all.then(|| s.namespace.clone()),
                })
                .collect();
            printer.print("snapshots", &out, |out| {
                let rows: Vec<Vec<String>> = out
                    .iter()
                    .map(|s| {
                        let mut row = vec![
                            s.id.to_string(),
                            s.name.clone(),
                            format_size(s.size),
                            if s.protected == "true" {
                                "yes".into()
                            } else {
                                String::new()
                            },
                            s.timestamp.clone(),
                        ];
                        if let Some(ns) = &s.namespace {
                            row.push(namespace_text(ns));
                        }
                        row
                    })
                    .collect();
                let mut columns = vec!["SNAPID", "NAME", "SIZE", "PROTECTED", "TIMESTAMP"];
                if all {
                    columns.push("NAMESPACE");
                }
                if !rows.is_empty() {
                    print_table(&columns, &rows);
                }
            });
        }
        SnapCommand::Rm(arg) => {
            let (spec, image) = open(cluster, &arg, SnapRule::Required).await?;
            let progress = ProgressLine::new("Removing snap", show_progress);
            with_image(image, async |i| i.snap_remove(snap_name(&spec)).await).await?;
            progress.finish();
        }
        SnapCommand::Rename {
            src,
            dest,
            dest_snap,
        } => {
            let (spec, image) = open(cluster, &src, SnapRule::Required).await?;
            let new = match (dest.as_deref(), dest_snap) {
                (Some(d), _) => match d.rsplit_once('@') {
                    Some((img, snap)) => {
                        let same = img == spec.image || img.ends_with(&format!("/{}", spec.image));
                        if !same {
                            return Err(CliError::invalid(
                                "source and destination snapshots must be of the same image",
                            ));
                        }
                        snap.to_owned()
                    }
                    None => d.to_owned(),
                },
                (None, Some(s)) => s,
                (None, None) => {
                    return Err(CliError::invalid(
                        "destination snapshot name was not specified",
                    ));
                }
            };
            with_image(image, async |i| i.snap_rename(snap_name(&spec), &new).await).await?;
        }
        SnapCommand::Rollback(arg) => {
            let (spec, image) = open(cluster, &arg, SnapRule::Required).await?;
            let progress = ProgressLine::new("Rolling back to snapshot", show_progress);
            let result = with_image(image, async |i| {
                i.snap_rollback(snap_name(&spec), &|d, t| progress.update(d, t))
                    .await
            })
            .await;
            progress.conclude(result)?;
        }
        SnapCommand::Protect(arg) => {
            let (spec, image) = open(cluster, &arg, SnapRule::Required).await?;
            with_image(image, async |i| {
                i.snap_set_protection(snap_name(&spec), true).await
            })
            .await?;
        }
        SnapCommand::Unprotect(arg) => {
            let (spec, image) = open(cluster, &arg, SnapRule::Required).await?;
            with_image(image, async |i| {
                i.snap_set_protection(snap_name(&spec), false).await
            })
            .await?;
        }
        SnapCommand::Purge(arg) => {
            let (_, image) = open(cluster, &arg, SnapRule::None).await?;
            let progress = ProgressLine::new("Removing all snapshots", show_progress);
            let result = with_image(image, async |i| {
                let snaps = i.snapshots().await?;
                let total = snaps.len() as u64;
                let mut protected = Vec::new();
                for (n, s) in snaps.iter().enumerate() {
                    if s.protection != Protection::Unprotected {
                        protected.push(s.name.clone());
                        continue;
                    }
                    i.snap_remove(&s.name).await?;
                    progress.update(n as u64 + 1, total);
                }
                Ok(protected)
            })
            .await;
            match result {
                Ok(protected) if protected.is_empty() => progress.finish(),
                Ok(protected) => {
                    progress.fail();
                    return Err(CliError::with_code(
                        format!(
                            "removing snaps failed: protected snapshots remain: {}",
                            protected.join(", ")
                        ),
                        16,
                    ));
                }
                Err(e) => {
                    progress.fail();
                    return Err(e);
                }
            }
        }
        SnapCommand::Limit { command } => match command {
            LimitCommand::Set { image, limit } => {
                let (_, image) = open(cluster, &image, SnapRule::None).await?;
                with_image(image, async |i| i.snap_set_limit(Some(limit)).await).await?;
            }
            LimitCommand::Clear(arg) => {
                let (_, image) = open(cluster, &arg, SnapRule::None).await?;
                with_image(image, async |i| i.snap_set_limit(None).await).await?;
            }
        },
    }
    Ok(())
}
