//! `rbdx cp` and `rbdx deep cp`: an image copied into a new one, in this cluster or another,
//! with `rbd`'s syntax. The copy is prepared, executed and committed as a migration
//! destination is (see `rbdx_migration::ImageCopyOptions`), so a copy that was cut short is
//! finished by running the same command again.

use rbdx_image::Cluster;
use rbdx_migration::{ExecuteOptions, ImageCopyOptions, Migration};

use crate::args::{CopyArgs, Global};
use crate::commands::create_opts::create_options;
use crate::commands::open::images;
use crate::error::{CliError, CliResult};
use crate::progress::ProgressLine;
use crate::size::parse_size;
use crate::spec::SnapRule;

/// Copies the source of `args` into its destination; `deep` copies every snapshot.
pub async fn run(
    cluster: &Cluster,
    global: &Global,
    args: &CopyArgs,
    deep: bool,
    flatten: bool,
    show_progress: bool,
) -> CliResult {
    let src = args
        .src
        .opts
        .resolve(args.src.spec.as_deref(), SnapRule::Optional)?;
    if let Some(snap) = &src.snap {
        return Err(CliError::with_code(
            format!(
                "copying from a snapshot ({}@{snap}) is not supported; copy the image",
                src.image
            ),
            95,
        ));
    }
    let dest = args
        .dest
        .options()
        .resolve(args.dest.dest_spec.as_deref(), SnapRule::None)?;
    let src_images = images(cluster, &src.pool, &src.namespace).await?;
    let (dst_cluster, source_cluster) = match &args.dest_cluster {
        Some(name) => {
            let store = crate::store::open_other(global, name, None).await?;
            let opener = crate::commands::migration::opener(global, &store)?;
            let there = Cluster::new(store)
                .with_journals(rbdx_journal::opener())
                .with_sources(opener);
            (there, Some(crate::cluster::reference(global)))
        }
        None => (cluster.clone(), None),
    };
    let dst_images = images(&dst_cluster, &dest.pool, &dest.namespace).await?;
    let opener = crate::commands::migration::opener(global, dst_cluster.store())?;
    let migration = Migration::new(dst_cluster.clone(), opener);
    let options = ImageCopyOptions {
        create: create_options(&dst_cluster, 0, &args.create).await?,
        snapshots: deep,
        flatten: flatten || !deep,
        source_cluster,
        head_snap: None,
        dest_parent: None,
    };
    let resumed = migration
        .prepare_copy(&src_images, &src.image, &dst_images, &dest.image, &options)
        .await?;
    if resumed {
        tracing::info!("image {dest} is an unfinished copy of {src}: going on with it");
    }
    let execute = ExecuteOptions {
        concurrency: 0,
        bandwidth_limit: args
            .bandwidth_limit
            .as_deref()
            .map(|b| parse_size(b, 1))
            .transpose()?,
        ..Default::default()
    };
    let title = if deep {
        "Image deep copy"
    } else {
        "Image copy"
    };
    let line = ProgressLine::new(title, show_progress);
    let copied = async {
        migration
            .execute(&dst_images, &dest.image, &execute, &|d, t| {
                line.update(d, t)
            })
            .await?;
        migration
            .commit(&dst_images, &dest.image, false, &|_, _| {})
            .await
    }
    .await;
    line.conclude(copied)
}
