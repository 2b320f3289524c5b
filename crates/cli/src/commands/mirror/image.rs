//! `rbdx mirror image enable|disable|promote|demote|resync|status|snapshot`.

use std::time::Duration;

use rbdx_image::mirroring::MirrorMode;
use rbdx_image::{Cluster, Images};
use rbdx_mirror::daemon::site::Side;
use rbdx_mirror::resync::Plan;
use rbdx_mirror::status::now_secs;
use rbdx_mirror::view::{ImageStatus, image_status};

use crate::args::{ImageArg, MirrorImageCommand};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::spec::SnapRule;

/// Runs a `mirror image` command.
pub async fn run(cluster: &Cluster, command: MirrorImageCommand, printer: Printer) -> CliResult {
    match command {
        MirrorImageCommand::Enable { image, mode } => {
            let mode = match mode.as_deref() {
                None | Some("journal") => MirrorMode::Journal,
                Some("snapshot") => MirrorMode::Snapshot,
                Some(other) => {
                    return Err(CliError::invalid(format!("unknown mirror mode '{other}'")));
                }
            };
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            let enabled = rbdx_mirror::image::enable(&images, &spec.image, mode).await?;
            for parent in &enabled.parents {
                eprintln!("Mirroring enabled on parent image {parent}");
            }
            println!("Mirroring enabled");
        }
        MirrorImageCommand::Disable { image, force } => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            rbdx_mirror::image::disable(&images, &spec.image, force).await?;
            println!("Mirroring disabled");
        }
        MirrorImageCommand::Promote {
            image,
            force,
            timeout,
        } => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            rbdx_mirror::image::promote(&images, &spec.image, force, Duration::from_secs(timeout))
                .await?;
            println!("Image promoted to primary");
        }
        MirrorImageCommand::Demote(image) => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            rbdx_mirror::image::demote(&images, &spec.image).await?;
            println!("Image demoted to non-primary");
        }
        MirrorImageCommand::Resync { image, full } => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            rbdx_mirror::image::resync(&images, &spec.image, full).await?;
            println!("Flagged image for resync from primary");
            if !full {
                println!(
                    "{}",
                    resync_plan(cluster, &images, &spec.pool, &spec.image).await
                );
            }
        }
        MirrorImageCommand::Verify(args) => super::verify::image(cluster, &args, printer).await?,
        MirrorImageCommand::Status(image) => status(cluster, &image, printer).await?,
        MirrorImageCommand::Snapshot { image, .. } => {
            let (spec, images) = resolve(cluster, &image, SnapRule::None).await?;
            let id = rbdx_mirror::image::snapshot(&images, &spec.image).await?;
            println!("Snapshot ID: {id}");
        }
    }
    Ok(())
}

/// What the daemon will copy for a resync, as far as this site can tell now.
async fn resync_plan(cluster: &Cluster, images: &Images, pool: &str, name: &str) -> String {
    let local = Side {
        cluster: cluster.clone(),
        io: images.io_ctx().clone(),
        pool_name: pool.to_owned(),
    };
    let planned = async {
        let remote = rbdx_mirror::daemon::connect_peer(&local, None).await?;
        rbdx_mirror::resync::plan_for(&local, &remote.side, name).await
    }
    .await;
    match planned {
        Ok(Plan::Delta(delta)) => format!("Delta resync: {}", delta.describe()),
        Ok(Plan::Full(why)) => format!("Full resync: {why}; the whole image will be copied"),
        Err(e) => format!(
            "The peer cannot be asked now ({e}); the mirror daemon chooses between a delta and \
             a full copy when it reaches it"
        ),
    }
}

async fn status(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let id = images.lookup(&spec.image).await?;
    let header = images.header_by_id(&id, &spec.image).await?;
    let record = header.mirror.ok_or_else(|| {
        CliError::invalid(format!("mirroring is not enabled on image {}", spec.image))
    })?;
    let mirror =
        rbdx_mirror::pool::PoolMirror::new(cluster.store().clone(), images.io_ctx().clone());
    let config = mirror.adopt().await?;
    let out = image_status(&config, &spec.image, &record.global_id, now_secs());
    printer.print("image", &out, print_status);
    Ok(())
}

/// Prints an image's status as `rbd mirror image status` does.
pub fn print_status(s: &ImageStatus) {
    println!("{}:", s.name);
    println!("  global_id:   {}", s.global_id);
    println!("  state:       {}", s.state);
    println!("  description: {}", s.description);
    if !s.service.is_empty() {
        println!("  service:     {}", s.service);
    }
    println!("  last_update: {}", s.last_update);
    if s.peer_sites.is_empty() {
        return;
    }
    println!("  peer_sites:");
    for (i, p) in s.peer_sites.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("    name: {}", p.site_name);
        println!("    state: {}", p.state);
        println!("    description: {}", p.description);
        println!("    last_update: {}", p.last_update);
    }
}
