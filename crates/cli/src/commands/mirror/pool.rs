//! `rbdx mirror pool enable|disable|info|status|promote|demote` (and `peer ...`).

use rbdx_image::Cluster;
use rbdx_mirror::pool::PoolMode;
use rbdx_mirror::status::now_secs;
use rbdx_mirror::view::{ImageStatus, image_status, live_daemons, summary};
use serde::Serialize;

use super::{PoolTarget, pool_target};
use crate::args::{MirrorPoolCommand, PoolArg};
use crate::error::{CliError, CliResult};
use crate::output::Printer;

/// Runs a `mirror pool` command.
pub async fn run(
    cluster: &Cluster,
    command: MirrorPoolCommand,
    printer: Printer,
    verbose: bool,
) -> CliResult {
    match command {
        MirrorPoolCommand::Enable {
            site_name,
            pool,
            mode,
        } => enable(cluster, &pool.to_pool_arg(), site_name.as_deref(), &mode).await,
        MirrorPoolCommand::Disable(pool) => disable(cluster, &pool).await,
        MirrorPoolCommand::Info { pool, all } => info(cluster, &pool, all, printer).await,
        MirrorPoolCommand::Status { pool } => status(cluster, &pool, verbose, printer).await,
        MirrorPoolCommand::Promote { pool, force } => promote(cluster, &pool, force).await,
        MirrorPoolCommand::Demote(pool) => demote(cluster, &pool).await,
        MirrorPoolCommand::Verify { pool, check } => {
            super::verify::pool(cluster, &pool, &check, printer).await
        }
        MirrorPoolCommand::Peer { command } => super::peer::run(cluster, command, printer).await,
    }
}

async fn enable(
    cluster: &Cluster,
    arg: &PoolArg,
    site_name: Option<&str>,
    mode: &str,
) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let mode = PoolMode::parse(mode)
        .ok_or_else(|| CliError::invalid(format!("unknown mirroring mode '{mode}'")))?;
    let store = cluster.store();
    if let Some(name) = site_name {
        rbdx_mirror::site::set_name(store, name).await?;
    }
    rbdx_mirror::site::fsid(store, true).await?;
    target.mirror.set_mode(mode).await?;
    if mode == PoolMode::Pool {
        enable_journaling_images(&target).await?;
    }
    Ok(())
}

/// In pool mode every image with the journaling feature is mirrored.
async fn enable_journaling_images(target: &PoolTarget) -> CliResult {
    for name in target.images.list().await?.into_keys() {
        let header = target
            .images
            .header_by_id(&target.images.lookup(&name).await?, &name)
            .await?;
        if header.mirror.is_none() && header.features.contains(rbdx_image::Features::JOURNALING) {
            rbdx_mirror::image::enable(
                &target.images,
                &name,
                rbdx_image::mirroring::MirrorMode::Journal,
            )
            .await?;
        }
    }
    Ok(())
}

async fn disable(cluster: &Cluster, arg: &PoolArg) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let config = target.mirror.load().await?;
    if config.mode() == PoolMode::Disabled {
        return Ok(());
    }
    if !config.peers().is_empty() {
        return Err(CliError::invalid(format!(
            "pool {} still has peers; remove them first (mirror pool peer remove)",
            target.label
        )));
    }
    for id in config.images().into_keys() {
        if let Some(name) = name_of(&target, &id).await? {
            rbdx_mirror::image::disable(&target.images, &name, true).await?;
        }
    }
    target.mirror.set_mode(PoolMode::Disabled).await?;
    Ok(())
}

/// Returns the name of image `id` of the pool, if it exists.
pub(super) async fn name_of(target: &PoolTarget, id: &str) -> CliResult<Option<String>> {
    Ok(target
        .images
        .list()
        .await?
        .into_iter()
        .find(|(_, i)| i == id)
        .map(|(n, _)| n))
}

#[derive(Serialize)]
struct PeerOut {
    uuid: String,
    direction: &'static str,
    site_name: String,
    mirror_uuid: String,
    client_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mon_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Serialize)]
struct InfoOut {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    site_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerOut>>,
}

async fn info(cluster: &Cluster, arg: &PoolArg, all: bool, printer: Printer) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let config = target.mirror.adopt().await?;
    let mode = config.mode();
    let mut out = InfoOut {
        mode: mode.as_str(),
        site_name: None,
        peers: None,
    };
    if mode != PoolMode::Disabled {
        out.site_name = Some(rbdx_mirror::site::name(cluster.store(), true).await?);
        let mut peers = Vec::new();
        for p in config.peers() {
            let secret = if all {
                target.mirror.peer_secret(&p.uuid).await?
            } else {
                None
            };
            peers.push(PeerOut {
                uuid: p.uuid,
                direction: p.direction.as_str(),
                site_name: p.site_name,
                mirror_uuid: p.mirror_uuid,
                client_name: p.client_name,
                mon_host: secret.as_ref().map(|s| s.endpoint.clone()),
                fingerprint: secret.as_ref().map(|s| s.fingerprint.clone()),
                key: secret.map(|s| s.key),
            });
        }
        out.peers = Some(peers);
    }
    printer.print("mirror", &out, |o| {
        println!("Mode: {}", o.mode);
        let Some(site) = &o.site_name else {
            return;
        };
        println!("Site Name: {site}");
        println!();
        let peers = o.peers.as_deref().unwrap_or_default();
        if peers.is_empty() {
            println!("Peer Sites: none");
            return;
        }
        println!("Peer Sites: ");
        for p in peers {
            println!();
            println!("UUID: {}", p.uuid);
            println!("Name: {}", p.site_name);
            println!("Mirror UUID: {}", p.mirror_uuid);
            println!("Direction: {}", p.direction);
            println!("Client: {}", p.client_name);
            if let Some(h) = &p.mon_host {
                println!("Endpoint: {h}");
            }
            if let Some(f) = &p.fingerprint {
                println!("Fingerprint: {f}");
            }
            if let Some(k) = &p.key {
                println!("Key: {k}");
            }
        }
    });
    Ok(())
}

/// Returns the statuses of the pool's mirrored images, by name.
pub(super) async fn image_statuses(target: &PoolTarget) -> CliResult<Vec<ImageStatus>> {
    let config = target.mirror.adopt().await?;
    let names = target.images.list().await?;
    let now = now_secs();
    let mut out = Vec::new();
    for (name, id) in names {
        if let Some(record) = config.images().get(&id) {
            out.push(image_status(&config, &name, &record.global_id, now));
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct DaemonOut {
    service_id: String,
    client_id: String,
    hostname: String,
    pid: u32,
    health: &'static str,
}

#[derive(Serialize)]
struct StatusOut {
    summary: rbdx_mirror::view::Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemons: Option<Vec<DaemonOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<Vec<ImageStatus>>,
}

async fn status(cluster: &Cluster, arg: &PoolArg, verbose: bool, printer: Printer) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let config = target.mirror.load().await?;
    if config.mode() == PoolMode::Disabled {
        return Err(CliError::invalid(format!(
            "mirroring is not enabled on pool {}",
            target.label
        )));
    }
    let images = image_statuses(&target).await?;
    let now = now_secs();
    let out = StatusOut {
        summary: summary(&config, &images, now),
        daemons: verbose.then(|| {
            live_daemons(&config, now)
                .into_iter()
                .map(|d| DaemonOut {
                    service_id: d.id.clone(),
                    client_id: d.id,
                    hostname: d.hostname,
                    pid: d.pid,
                    health: "OK",
                })
                .collect()
        }),
        images: verbose.then_some(images),
    };
    printer.print("status", &out, |o| {
        println!("health: {}", o.summary.health);
        println!("daemon health: {}", o.summary.daemon_health);
        println!("image health: {}", o.summary.image_health);
        let total: usize = o.summary.states.values().sum();
        println!("images: {total} total");
        for (state, n) in &o.summary.states {
            println!("    {n} {state}");
        }
        if let Some(daemons) = &o.daemons {
            println!();
            println!("DAEMONS");
            for d in daemons {
                println!("service {}:", d.service_id);
                println!("  client_id: {}", d.client_id);
                println!("  hostname: {}", d.hostname);
                println!("  pid: {}", d.pid);
                println!("  health: {}", d.health);
            }
        }
        if let Some(images) = &o.images {
            println!();
            println!("IMAGES");
            for i in images {
                super::image::print_status(i);
            }
        }
    });
    Ok(())
}

async fn promote(cluster: &Cluster, arg: &PoolArg, force: bool) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let config = target.mirror.load().await?;
    let mut promoted = 0;
    for id in config.images().into_keys() {
        let Some(name) = name_of(&target, &id).await? else {
            continue;
        };
        let header = target.images.header_by_id(&id, &name).await?;
        if header.mirror.is_some_and(|m| m.primary) {
            continue;
        }
        rbdx_mirror::image::promote(
            &target.images,
            &name,
            force,
            rbdx_mirror::image::PROMOTE_WAIT,
        )
        .await?;
        promoted += 1;
    }
    println!("Promoted {promoted} mirrored images");
    Ok(())
}

async fn demote(cluster: &Cluster, arg: &PoolArg) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let config = target.mirror.load().await?;
    let mut demoted = 0;
    for id in config.images().into_keys() {
        let Some(name) = name_of(&target, &id).await? else {
            continue;
        };
        let header = target.images.header_by_id(&id, &name).await?;
        if !header.mirror.is_some_and(|m| m.primary) {
            continue;
        }
        rbdx_mirror::image::demote(&target.images, &name).await?;
        demoted += 1;
    }
    println!("Demoted {demoted} mirrored images");
    Ok(())
}
