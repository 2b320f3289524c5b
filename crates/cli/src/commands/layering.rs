//! `rbdx clone|flatten|children`.

use rbdx_image::{Cluster, OpenOptions};
use serde::Serialize;

use crate::args::{CreateArgs, DestArg, ImageArg};
use crate::commands::create_opts::create_options;
use crate::commands::open::{images, resolve};
use crate::error::CliResult;
use crate::output::Printer;
use crate::progress::ProgressLine;
use crate::spec::SnapRule;

/// `rbdx clone`.
pub async fn clone(
    cluster: &Cluster,
    parent_arg: &ImageArg,
    dest_arg: &DestArg,
    create: &CreateArgs,
    clone_format: Option<&str>,
) -> CliResult {
    let clone_format = match clone_format {
        Some(text) => text.parse::<rbdx_image::CloneFormat>()?,
        None => rbdx_image::CloneFormat::Auto,
    };
    let (spec, parent_images) = resolve(cluster, parent_arg, SnapRule::Required).await?;
    let dest = dest_arg
        .options()
        .resolve(dest_arg.dest_spec.as_deref(), SnapRule::None)?;
    let parent = parent_images
        .open(&spec.image, OpenOptions::default().with_read_only(true))
        .await?;
    let result = async {
        let child_images = images(cluster, &dest.pool, &dest.namespace).await?;
        let mut opts = create_options(cluster, 0, create).await?;
        opts.clone_format = clone_format;
        child_images
            .clone_from(
                &parent,
                spec.snap.as_deref().unwrap_or_default(),
                &dest.image,
                &opts,
            )
            .await?;
        rbdx_mirror::image::enable_if_pool_mode(&child_images, &dest.image).await?;
        Ok::<(), crate::error::CliError>(())
    }
    .await;
    let closed = parent.close().await;
    result?;
    closed?;
    Ok(())
}

/// `rbdx flatten`.
pub async fn flatten(cluster: &Cluster, arg: &ImageArg, show_progress: bool) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let image = images.open(&spec.image, OpenOptions::default()).await?;
    let progress = ProgressLine::new("Image flatten", show_progress);
    let result = image.flatten(&|d, t| progress.update(d, t)).await;
    let closed = image.close().await;
    progress.conclude(result)?;
    Ok(closed?)
}

#[derive(Serialize)]
struct ChildOut {
    pool: String,
    pool_namespace: String,
    image: String,
}

/// `rbdx children`.
pub async fn children(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::Required).await?;
    let image = images
        .open(&spec.image, OpenOptions::default().with_read_only(true))
        .await?;
    let result = image
        .children(spec.snap.as_deref().unwrap_or_default())
        .await;
    image.close().await?;
    let out: Vec<ChildOut> = result?
        .into_iter()
        .map(|c| ChildOut {
            pool: c.pool,
            pool_namespace: c.namespace,
            image: c.image,
        })
        .collect();
    printer.print("children", &out, |out| {
        for c in out {
            if c.pool_namespace.is_empty() {
                println!("{}/{}", c.pool, c.image);
            } else {
                println!("{}/{}/{}", c.pool, c.pool_namespace, c.image);
            }
        }
    });
    Ok(())
}
