//! `rbdx feature enable|disable`, `rbdx object-map check|rebuild`, `rbdx lock ls|rm`.

use rbdx_image::{Cluster, Features, OpenOptions};
use rbdx_objstore::{ClientId, ObjectStore};
use serde::Serialize;

use crate::args::{FeatureCommand, LockCommand, ObjectMapCommand};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::progress::ProgressLine;
use crate::spec::SnapRule;

/// Runs a feature command.
pub async fn feature(cluster: &Cluster, command: FeatureCommand, show_progress: bool) -> CliResult {
    let (image_arg, names, enable) = match command {
        FeatureCommand::Enable { image, features } => (image, features, true),
        FeatureCommand::Disable { image, features } => (image, features, false),
    };
    let mut features = Features(0);
    for name in &names {
        features = features.with(Features::parse_list(name)?);
    }
    let (spec, images) = resolve(cluster, &image_arg.to_arg(), SnapRule::None).await?;
    let image = images.open(&spec.image, OpenOptions::default()).await?;
    let progress = ProgressLine::new("Object Map Rebuild", show_progress);
    let result = image
        .update_features(features, enable, &|d, t| progress.update(d, t))
        .await;
    let closed = image.close().await;
    result?;
    closed?;
    if enable && features.contains(Features::JOURNALING) {
        rbdx_mirror::image::enable_if_pool_mode(&images, &spec.image).await?;
    }
    Ok(())
}

#[derive(Serialize)]
struct CheckOut {
    valid: bool,
    missing_objects: usize,
    unreadable_maps: usize,
}

/// Runs an object-map command.
pub async fn object_map(
    cluster: &Cluster,
    command: ObjectMapCommand,
    printer: Printer,
    show_progress: bool,
) -> CliResult {
    let (arg, rebuild) = match &command {
        ObjectMapCommand::Rebuild(arg) => (arg, true),
        ObjectMapCommand::Check(arg) => (arg, false),
    };
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let image = images
        .open(&spec.image, OpenOptions::default().with_read_only(!rebuild))
        .await?;
    let label = if rebuild {
        "Object Map Rebuild"
    } else {
        "Object Map Check"
    };
    let progress = ProgressLine::new(label, show_progress);
    let tick = |d, t| progress.update(d, t);
    let result = if rebuild {
        image.object_map_rebuild(&tick).await.map(|()| None)
    } else {
        image.object_map_check(&tick).await.map(Some)
    };
    let closed = image.close().await;
    let check = progress.conclude(result)?;
    closed?;
    if let Some(check) = check {
        let out = CheckOut {
            valid: check.is_valid(),
            missing_objects: check.missing.len(),
            unreadable_maps: check.unreadable.len(),
        };
        printer.print("object_map_check", &out, |o| {
            if !o.valid {
                eprintln!(
                    "rbdx: object map of {} is invalid ({} existing objects marked nonexistent, \
                     {} unreadable maps); it is flagged invalid: run `rbdx object-map rebuild {}`",
                    spec, o.missing_objects, o.unreadable_maps, spec
                );
            }
        });
    }
    Ok(())
}

#[derive(Serialize)]
struct LockOut {
    id: String,
    locker: String,
    address: String,
}

/// Runs a lock command.
pub async fn lock(cluster: &Cluster, command: LockCommand, printer: Printer) -> CliResult {
    let arg = match &command {
        LockCommand::Ls(arg) => arg.clone(),
        LockCommand::Rm { image, .. } => image.to_arg(),
    };
    let (spec, images) = resolve(cluster, &arg, SnapRule::None).await?;
    let id = images
        .list()
        .await?
        .get(&spec.image)
        .cloned()
        .ok_or_else(|| CliError::with_code(format!("image {} does not exist", spec.image), 2))?;
    let header = rbdx_image::names::header_object(&id);
    let io = images.io_ctx();
    match command {
        LockCommand::Ls(_) => {
            let mut out = Vec::new();
            let mut exclusive = true;
            for name in cluster.store().lock_list(io, &header).await? {
                let info = cluster.store().lock_info(io, &header, &name).await?;
                exclusive &= info.kind != Some(rbdx_objstore::LockKind::Shared);
                for l in info.lockers {
                    out.push(LockOut {
                        id: l.cookie,
                        locker: format!("client.{}", l.client.id.0),
                        address: l.client.addr,
                    });
                }
            }
            printer.print("locks", &out, |out| {
                if out.is_empty() {
                    return;
                }
                let kind = if exclusive { "exclusive" } else { "shared" };
                let noun = if out.len() == 1 { "lock" } else { "locks" };
                println!("There is {} {kind} {noun} on this image.", out.len());
                let rows: Vec<Vec<String>> = out
                    .iter()
                    .map(|l| vec![l.locker.clone(), l.id.clone(), l.address.clone()])
                    .collect();
                crate::output::print_table(&["Locker", "ID", "Address"], &rows);
            });
        }
        LockCommand::Rm {
            lock_id, locker, ..
        } => {
            let client: u64 = locker
                .strip_prefix("client.")
                .unwrap_or(&locker)
                .parse()
                .map_err(|_| {
                    CliError::invalid(format!("invalid locker '{locker}' (expected client.N)"))
                })?;
            let mut broken = false;
            for name in cluster.store().lock_list(io, &header).await? {
                let info = cluster.store().lock_info(io, &header, &name).await?;
                if info
                    .lockers
                    .iter()
                    .any(|l| l.client.id.0 == client && l.cookie == lock_id)
                {
                    cluster
                        .store()
                        .lock_break(io, &header, &name, ClientId(client), &lock_id)
                        .await?;
                    broken = true;
                }
            }
            if !broken {
                return Err(CliError::with_code(
                    format!("no lock '{lock_id}' held by {locker} on image {spec}"),
                    2,
                ));
            }
        }
    }
    Ok(())
}
