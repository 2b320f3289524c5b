//! The layout, feature, journal and clone options of `create`, `clone`, `import` and
//! `migration prepare`, as the image layer takes them.

use rbdx_image::layout::{MAX_ORDER, MIN_ORDER};
use rbdx_image::{Cluster, CreateOptions, Features};

use crate::args::CreateArgs;
use crate::error::{CliError, CliResult};
use crate::size::parse_size;

/// Turns `create` options into image-layer options.
pub async fn create_options(
    cluster: &Cluster,
    size: u64,
    args: &CreateArgs,
) -> CliResult<CreateOptions> {
    let mut opts = CreateOptions::new(size);
    if let Some(order) = args.order {
        if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
            return Err(CliError::invalid(format!(
                "order must be between {MIN_ORDER} and {MAX_ORDER}, not {order}"
            )));
        }
        opts.order = Some(order);
    }
    if let Some(text) = &args.object_size {
        let bytes = parse_size(text, 1)?;
        if !bytes.is_power_of_two() {
            return Err(CliError::invalid(format!(
                "object size {text} is not a power of two"
            )));
        }
        let order = bytes.trailing_zeros() as u8;
        if !(MIN_ORDER..=MAX_ORDER).contains(&order) {
            return Err(CliError::invalid(format!(
                "object size must be between 4K and 32M, not {text}"
            )));
        }
        opts.order = Some(order);
    }
    if !args.image_feature.is_empty() {
        let mut features = Features(0);
        for item in &args.image_feature {
            features = features.with(Features::parse_list(item)?);
        }
        opts.features = Some(features);
    }
    if let Some(unit) = &args.stripe_unit {
        opts.stripe_unit = Some(parse_size(unit, 1)?);
    }
    opts.stripe_count = args.stripe_count;
    if let Some(pool) = &args.data_pool {
        opts.data_pool = Some(cluster.store().pool_lookup(pool).await?.id.0);
    }
    if let Some(text) = &args.journal_object_size {
        let bytes = parse_size(text, 1)?;
        let order = bytes.trailing_zeros() as u8;
        if !bytes.is_power_of_two() || !(12..=26).contains(&order) {
            return Err(CliError::invalid(format!(
                "journal object size must be a power of two between 4K and 64M, not {text}"
            )));
        }
        opts.journal.order = Some(order);
    }
    if let Some(width) = args.journal_splay_width {
        if !(1..=255).contains(&width) {
            return Err(CliError::invalid(format!(
                "journal splay width must be between 1 and 255, not {width}"
            )));
        }
        opts.journal.splay_width = Some(width);
    }
    if let Some(pool) = &args.journal_pool {
        opts.journal.pool = Some(cluster.store().pool_lookup(pool).await?.id.0);
    }
    Ok(opts)
}
