//! `rbdx mirror image verify` and `rbdx mirror pool verify`: the copies of mirrored images
//! compared by digests computed at each site.

use rbdx_image::Cluster;
use rbdx_mirror::daemon::site::Side;
use rbdx_mirror::verify::{Verified, verify_image};

use super::{PoolTarget, pool_target};
use crate::args::{MirrorVerifyArgs, PoolArg, VerifyOptions};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::spec::SnapRule;

fn side(cluster: &Cluster, target: &PoolTarget) -> Side {
    Side {
        cluster: cluster.clone(),
        io: target.images.io_ctx().clone(),
        pool_name: target.pool.clone(),
    }
}

/// Verifies one image.
pub async fn image(cluster: &Cluster, args: &MirrorVerifyArgs, printer: Printer) -> CliResult {
    let (spec, images) = resolve(cluster, &args.image, SnapRule::Optional).await?;
    let local = Side {
        cluster: cluster.clone(),
        io: images.io_ctx().clone(),
        pool_name: spec.pool.clone(),
    };
    let id = images.lookup(&spec.image).await?;
    if images
        .header_by_id(&id, &spec.image)
        .await?
        .mirror
        .is_none()
    {
        return Err(CliError::invalid(format!(
            "image {} is not mirrored",
            spec.image
        )));
    }
    let remote = rbdx_mirror::daemon::connect_peer(&local, args.check.peer.as_deref()).await?;
    let verified = verify_image(
        &local,
        &remote.side,
        &spec.image,
        spec.snap.as_deref(),
        args.check.repair,
    )
    .await?;
    printer.print("verify", &verified, print);
    conclude(std::slice::from_ref(&verified))
}

/// Verifies every mirrored image of a pool.
pub async fn pool(
    cluster: &Cluster,
    arg: &PoolArg,
    check: &VerifyOptions,
    printer: Printer,
) -> CliResult {
    let target = pool_target(cluster, arg).await?;
    let local = side(cluster, &target);
    let remote = rbdx_mirror::daemon::connect_peer(&local, check.peer.as_deref()).await?;
    let config = target.mirror.load().await?;
    let mut results = Vec::new();
    for id in config.images().into_keys() {
        let Some(name) = local.image_name(&id).await? else {
            continue;
        };
        match verify_image(&local, &remote.side, &name, None, check.repair).await {
            Ok(v) => results.push(v),
            Err(e) if rbdx_mirror::verify::skippable(&e) => {
                eprintln!("rbdx: image {name} skipped: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    printer.print("images", &results, |all| {
        for v in all {
            print(v);
        }
        println!("{} images checked", all.len());
    });
    conclude(&results)
}

fn print(v: &Verified) {
    let at = v.snapshot.as_deref().unwrap_or("the heads");
    if v.mismatches.is_empty() {
        println!(
            "{}: equal at {at} ({} objects checked{})",
            v.image,
            v.objects_checked,
            if v.repaired > 0 {
                format!(", {} ranges repaired", v.repaired)
            } else {
                String::new()
            }
        );
        return;
    }
    println!(
        "{}: {} ranges differ at {at} ({} objects checked)",
        v.image,
        v.mismatches.len(),
        v.objects_checked
    );
    for m in &v.mismatches {
        println!(
            "\tobject {} offset {} length {}",
            m.object_no, m.offset, m.length
        );
    }
}

/// Exit 1 when a copy differs.
fn conclude(results: &[Verified]) -> CliResult {
    let differing: Vec<&str> = results
        .iter()
        .filter(|v| !v.mismatches.is_empty())
        .map(|v| v.image.as_str())
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(CliError::with_code(
        format!(
            "the copies differ: {} (run again with --repair at the non-primary site)",
            differing.join(", ")
        ),
        1,
    ))
}
