//! `rbdx du`: provisioned and used space per snapshot and image: what each snapshot (and the
//! head) wrote since the one before, at object granularity (`rbdx_snapdiff::usage`).

use rbdx_image::{Cluster, OpenOptions};
use serde::Serialize;

use crate::commands::open::images;
use crate::error::CliResult;
use crate::output::{Printer, print_table};
use crate::size::format_size;
use crate::spec::{SnapRule, SpecOptions};

#[derive(Serialize)]
struct DuEntry {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_id: Option<u64>,
    id: String,
    provisioned_size: u64,
    used_size: u64,
}

#[derive(Serialize)]
struct DuOut {
    images: Vec<DuEntry>,
    total_provisioned_size: u64,
    total_used_size: u64,
}

/// Runs `du`.
pub async fn run(
    cluster: &Cluster,
    spec: Option<&str>,
    opts: &SpecOptions,
    printer: Printer,
) -> CliResult {
    let (pool, namespace, only, snap) = match spec.or(opts.image.as_deref()) {
        Some(_) => {
            let s = opts.resolve(spec, SnapRule::Optional)?;
            (s.pool, s.namespace, Some(s.image), s.snap)
        }
        None => (
            opts.pool
                .clone()
                .unwrap_or_else(|| crate::spec::DEFAULT_POOL.to_owned()),
            opts.namespace.clone().unwrap_or_default(),
            None,
            None,
        ),
    };
    let images = images(cluster, &pool, &namespace).await?;
    let names: Vec<String> = match only {
        Some(name) => vec![name],
        None => images.list().await?.into_keys().collect(),
    };
    let mut out = DuOut {
        images: Vec::new(),
        total_provisioned_size: 0,
        total_used_size: 0,
    };
    for name in names {
        let image = images
            .open(&name, OpenOptions::default().with_read_only(true))
            .await?;
        let result = rbdx_snapdiff::usage(&image).await;
        let id = image.id().to_owned();
        image.close().await?;
        let (usage, method) = result?;
        if method != rbdx_snapdiff::Method::FastDiff && printer.is_plain() {
            crate::commands::diff::warn_slow(&name);
        }
        for u in usage {
            if let Some(want) = &snap
                && u.snapshot.as_ref().map(|s| &s.name) != Some(want)
            {
                continue;
            }
            out.total_used_size += u.used;
            if u.snapshot.is_none() || snap.is_some() {
                out.total_provisioned_size += u.provisioned;
            }
            out.images.push(DuEntry {
                name: name.clone(),
                snapshot: u.snapshot.as_ref().map(|s| s.name.clone()),
                snapshot_id: u.snapshot.as_ref().map(|s| s.id),
                id: id.clone(),
                provisioned_size: u.provisioned,
                used_size: u.used,
            });
        }
    }
    printer.print("stats", &out, |o| {
        let mut rows: Vec<Vec<String>> = o
            .images
            .iter()
            .map(|e| {
                let name = match &e.snapshot {
                    Some(s) => format!("{}@{s}", e.name),
                    None => e.name.clone(),
                };
                vec![
                    name,
                    format_size(e.provisioned_size),
                    format_size(e.used_size),
                ]
            })
            .collect();
        if o.images.len() > 1 {
            rows.push(vec![
                "<TOTAL>".into(),
                format_size(o.total_provisioned_size),
                format_size(o.total_used_size),
            ]);
        }
        print_table(&["NAME", "PROVISIONED", "USED"], &rows);
    });
    Ok(())
}
