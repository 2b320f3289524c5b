//! `rbdx image-meta set|get|ls|rm`.

use std::collections::BTreeMap;

use bytes::Bytes;
use rbdx_image::{Cluster, OpenOptions};

use crate::args::MetaCommand;
use crate::commands::open::resolve;
use crate::error::CliResult;
use crate::output::{Printer, show_bytes};
use crate::spec::SnapRule;

/// Runs an image-meta command.
pub async fn run(cluster: &Cluster, command: MetaCommand, printer: Printer) -> CliResult {
    let (arg, read_only) = match &command {
        MetaCommand::Set { image, .. } | MetaCommand::Rm { image, .. } => (image.to_arg(), false),
        MetaCommand::Get { image, .. } => (image.to_arg(), true),
        MetaCommand::Ls(image) => (image.clone(), true),
    };
    let (spec, images) = resolve(cluster, &arg, SnapRule::None).await?;
    let image = images
        .open(
            &spec.image,
            OpenOptions::default().with_read_only(read_only),
        )
        .await?;
    let result = match &command {
        MetaCommand::Set { key, value, .. } => {
            image.metadata_set(key, Bytes::from(value.clone())).await
        }
        MetaCommand::Rm { key, .. } => image.metadata_remove(key).await,
        MetaCommand::Get { key, .. } => image.metadata_get(key).await.map(|v| {
            println!("{}", show_bytes(&v));
        }),
        MetaCommand::Ls(_) => image.metadata().await.map(|all| {
            let shown: BTreeMap<String, String> = all
                .iter()
                .map(|(k, v)| (k.clone(), show_bytes(v)))
                .collect();
            printer.print("metadatas", &shown, |m| {
                if m.is_empty() {
                    println!("There are 0 metadata on this image.");
                    return;
                }
                println!("There are {} metadata on this image:\n", m.len());
                let rows: Vec<Vec<String>> =
                    m.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
                crate::output::print_table(&["Key", "Value"], &rows);
            });
        }),
    };
    let closed = image.close().await;
    result?;
    closed?;
    Ok(())
}
