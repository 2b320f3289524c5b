//! Opening what a command names: the images of a pool namespace, an image spec resolved with
//! its options, a read-only view of an image or snapshot. Every command group uses these.

use rbdx_image::{Cluster, Images, OpenOptions};
use rbdx_objstore::IoCtx;

use crate::args::ImageArg;
use crate::error::CliResult;
use crate::spec::{ImageSpec, SnapRule};

/// Returns the images of a pool namespace, checking that the pool exists.
pub async fn images(cluster: &Cluster, pool: &str, namespace: &str) -> CliResult<Images> {
    let info = cluster.store().pool_lookup(pool).await?;
    Ok(Images::new(
        cluster.clone(),
        IoCtx::with_namespace(info.id, namespace),
    ))
}

/// Resolves an image argument and returns its pool's images.
pub async fn resolve(
    cluster: &Cluster,
    arg: &ImageArg,
    rule: SnapRule,
) -> CliResult<(ImageSpec, Images)> {
    let spec = arg.opts.resolve(arg.spec.as_deref(), rule)?;
    let images = images(cluster, &spec.pool, &spec.namespace).await?;
    Ok((spec, images))
}

/// Resolves an image argument (a snapshot allowed) and opens that view read-only.
pub async fn open_view(
    cluster: &Cluster,
    arg: &ImageArg,
) -> CliResult<(ImageSpec, rbdx_image::Image)> {
    let (spec, images) = resolve(cluster, arg, SnapRule::Optional).await?;
    let image = images
        .open(
            &spec.image,
            OpenOptions::default()
                .with_snap(spec.snap.clone())
                .with_read_only(true),
        )
        .await?;
    Ok((spec, image))
}
