//! `rbdx migration prepare|execute|commit|abort|verify`, and the `Migration:` block of
//! `rbdx status`.

use std::sync::Arc;

use rbdx_image::Cluster;
use rbdx_image::migration::MigrationState;
use rbdx_migration::{ExecuteOptions, Migration, MigrationStatus, Opener, PrepareOptions};
use rbdx_objstore::ObjectStore;
use serde::Serialize;

use crate::args::Global;
use crate::args::{ImageArg, MigrationCommand, PrepareArgs};
use crate::commands::create_opts::create_options;
use crate::commands::open::{images, resolve};
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::progress::ProgressLine;
use crate::size::{format_size, parse_size};
use crate::spec::{SnapRule, SpecOptions};

/// Returns the opener of migration sources for this command line: the source drivers, with
/// the cluster's secrets and access to the clusters native sources name.
pub fn opener(global: &Global, store: &Arc<dyn ObjectStore>) -> CliResult<Arc<Opener>> {
    let ctx = crate::commands::source::context_for_store(global, store.clone())?;
    Ok(Arc::new(Opener::new(ctx)))
}

#[derive(Serialize)]
struct PrepareOut {
    source: String,
    destination: String,
    size: u64,
    snapshots: Vec<SnapOut>,
    allocated: u64,
    space_needed: u64,
    dry_run: bool,
}

#[derive(Serialize)]
struct SnapOut {
    name: String,
    size: u64,
}

/// Runs a migration command.
pub async fn run(
    global: &Global,
    cluster: &Cluster,
    opener: Arc<Opener>,
    command: MigrationCommand,
    printer: Printer,
    progress: bool,
) -> CliResult {
    let migration = Migration::new(cluster.clone(), opener);
    match command {
        MigrationCommand::Prepare(args)
            if args.dest_cluster.is_some() || args.source_cluster.is_some() =>
        {
            prepare_across(global, cluster, &args, printer).await
        }
        MigrationCommand::Prepare(args) => prepare(&migration, cluster, &args, printer).await,
        MigrationCommand::Execute {
            image,
            bandwidth_limit,
            concurrency,
        } => {
            let (spec, dst) = resolve(cluster, &image, SnapRule::None).await?;
            let options = ExecuteOptions {
                concurrency: concurrency.unwrap_or(0),
                bandwidth_limit: bandwidth_limit
                    .as_deref()
                    .map(|b| parse_size(b, 1))
                    .transpose()?,
                ..Default::default()
            };
            let line = ProgressLine::new("Image migration", progress);
            line.conclude(
                migration
                    .execute(&dst, &spec.image, &options, &|d, t| line.update(d, t))
                    .await,
            )
        }
        MigrationCommand::Commit { image, force } => {
            let (spec, dst) = resolve(cluster, &image, SnapRule::None).await?;
            let line = ProgressLine::new("Commit image migration", progress);
            line.conclude(
                migration
                    .commit(&dst, &spec.image, force, &|d, t| line.update(d, t))
                    .await,
            )
        }
        MigrationCommand::Abort { image } => {
            let (spec, dst) = resolve(cluster, &image, SnapRule::None).await?;
            let line = ProgressLine::new("Abort image migration", progress);
            line.conclude(
                migration
                    .abort(&dst, &spec.image, &|d, t| line.update(d, t))
                    .await,
            )
        }
        MigrationCommand::Verify { image } => {
            verify(&migration, cluster, &image, printer, progress).await
        }
    }
}

/// Prepares a live migration between this cluster and another one (`--dest-cluster` or
/// `--source-cluster`); the steps after it run where the destination is.
async fn prepare_across(
    global: &Global,
    cluster: &Cluster,
    args: &PrepareArgs,
    printer: Printer,
) -> CliResult {
    if args.import_only || args.source_spec.is_some() || args.source_spec_path.is_some() {
        return Err(CliError::invalid(
            "--dest-cluster and --source-cluster prepare a live migration; an import-only one \
             names its remote source in the source spec (cluster_name)",
        ));
    }
    let src = SpecOptions::default().resolve(args.source.as_deref(), SnapRule::None)?;
    let dest = match &args.dest {
        Some(d) => SpecOptions::default().resolve(Some(d), SnapRule::None)?,
        None => src.clone(),
    };
    let here = crate::cluster::reference(global);
    let open = async |name: &str| -> CliResult<Cluster> {
        let store = crate::store::open_other(global, name, None).await?;
        let sources = opener(global, &store)?;
        Ok(Cluster::new(store)
            .with_journals(rbdx_journal::opener())
            .with_sources(sources))
    };
    // (source cluster, its name as the destination's tools know it, destination cluster,
    // its name as the source's tools know it)
    let (src_cluster, src_name, dst_cluster, dst_name) =
        match (&args.dest_cluster, &args.source_cluster) {
            (Some(there), _) => (cluster.clone(), here, open(there).await?, there.clone()),
            (None, Some(there)) => (open(there).await?, there.clone(), cluster.clone(), here),
            (None, None) => return Err(CliError::invalid("no other cluster named")),
        };
    let mut create = create_options(&dst_cluster, 0, &args.create).await?;
    if args.create.order.is_none() && args.create.object_size.is_none() {
        create.order = None;
    }
    let options = PrepareOptions {
        create,
        flatten: args.flatten,
        dry_run: args.dry_run,
    };
    let src_images = images(&src_cluster, &src.pool, &src.namespace).await?;
    let dst_images = images(&dst_cluster, &dest.pool, &dest.namespace).await?;
    let runner = Migration::new(dst_cluster.clone(), opener(global, dst_cluster.store())?);
    let report = runner
        .prepare_live_across(
            &src_images,
            &src.image,
            &src_name,
            &dst_images,
            &dest.image,
            &dst_name,
            &options,
        )
        .await?;
    if report.dry_run {
        print_dry_run(report, printer);
    }
    Ok(())
}

async fn prepare(
    migration: &Migration,
    cluster: &Cluster,
    args: &PrepareArgs,
    printer: Printer,
) -> CliResult {
    let mut create = create_options(cluster, 0, &args.create).await?;
    if args.create.order.is_none() && args.create.object_size.is_none() {
        create.order = None;
    }
    let options = PrepareOptions {
        create,
        flatten: args.flatten,
        dry_run: args.dry_run,
    };
    let given_spec = args.source_spec.is_some() || args.source_spec_path.is_some();
    let report = if args.import_only {
        let (json, shown, dest) = if given_spec {
            if args.dest.is_some() {
                return Err(CliError::invalid(
                    "give either a source spec or a source image, not both",
                ));
            }
            let spec = crate::commands::source::read_spec(&crate::args::SourceSpecArg {
                source_spec: args.source_spec.clone(),
                source_spec_path: args.source_spec_path.clone(),
            })?;
            let json = serde_json::to_string(&spec.object)
                .map_err(|e| CliError::invalid(format!("source spec: {e}")))?;
            let shown = serde_json::to_string(&spec.redacted()).unwrap_or_default();
            (json, shown, args.source.clone())
        } else {
            let Some(src) = &args.source else {
                return Err(CliError::invalid(
                    "give --source-spec, --source-spec-path or a source image@snapshot",
                ));
            };
            let s = SpecOptions::default().resolve(Some(src), SnapRule::Required)?;
            let mut value = serde_json::json!({
                "type": "native",
                "pool_name": s.pool,
                "image_name": s.image,
                "snap_name": s.snap,
            });
            if !s.namespace.is_empty() {
                value["pool_namespace"] = serde_json::Value::String(s.namespace.clone());
            }
            let json = value.to_string();
            (json.clone(), json, args.dest.clone())
        };
        let dest = SpecOptions::default().resolve(dest.as_deref(), SnapRule::None)?;
        let dst = images(cluster, &dest.pool, &dest.namespace).await?;
        migration
            .prepare_import(&json, shown, &dst, &dest.image, &options)
            .await?
    } else {
        if given_spec {
            return Err(CliError::invalid("--source-spec needs --import-only"));
        }
        let src = SpecOptions::default().resolve(args.source.as_deref(), SnapRule::None)?;
        let dest = match &args.dest {
            Some(d) => SpecOptions::default().resolve(Some(d), SnapRule::None)?,
            None => src.clone(),
        };
        let src_images = images(cluster, &src.pool, &src.namespace).await?;
        let dst_images = images(cluster, &dest.pool, &dest.namespace).await?;
        migration
            .prepare_live(&src_images, &src.image, &dst_images, &dest.image, &options)
            .await?
    };
    if report.dry_run {
        print_dry_run(report, printer);
    }
    Ok(())
}

/// Prints what a `prepare --dry-run` would do.
fn print_dry_run(report: rbdx_migration::PrepareReport, printer: Printer) {
    let out = PrepareOut {
        source: report.source,
        destination: report.destination,
        size: report.size,
        snapshots: report
            .snapshots
            .into_iter()
            .map(|(name, size)| SnapOut { name, size })
            .collect(),
        allocated: report.allocated,
        space_needed: report.space_needed,
        dry_run: true,
    };
    printer.print("migration", &out, |o| {
        println!("dry run: nothing was changed");
        println!("source: {}", o.source);
        println!("destination: {}", o.destination);
        println!("size: {} ({} bytes)", format_size(o.size), o.size);
        println!("snapshots: {}", o.snapshots.len());
        for s in &o.snapshots {
            println!("\t{}  {}", s.name, format_size(s.size));
        }
        println!(
            "data to copy: {} ({} bytes)",
            format_size(o.allocated),
            o.allocated
        );
        println!(
            "space needed in the destination pool: at most {} ({} bytes)",
            format_size(o.space_needed),
            o.space_needed
        );
    });
}

#[derive(Serialize)]
struct MismatchOut {
    snapshot: Option<String>,
    offset: u64,
    length: u64,
}

async fn verify(
    migration: &Migration,
    cluster: &Cluster,
    image: &ImageArg,
    printer: Printer,
    progress: bool,
) -> CliResult {
    let (spec, dst) = resolve(cluster, image, SnapRule::None).await?;
    let line = ProgressLine::new("Verifying image migration", progress);
    let found = line.conclude(
        migration
            .verify(&dst, &spec.image, &|d, t| line.update(d, t))
            .await,
    )?;
    let out: Vec<MismatchOut> = found
        .iter()
        .map(|m| MismatchOut {
            snapshot: m.snapshot.clone(),
            offset: m.offset,
            length: m.length,
        })
        .collect();
    printer.print("mismatches", &out, |o| {
        if o.is_empty() {
            println!("OK");
        } else {
            println!("{:<10} {:<20} {:<10}", "Snapshot", "Offset", "Length");
            for m in o {
                println!(
                    "{:<10} {:<20} {:<10}",
                    m.snapshot.as_deref().unwrap_or("-"),
                    m.offset,
                    m.length
                );
            }
        }
    });
    if found.is_empty() {
        Ok(())
    } else {
        Err(CliError::with_code(
            format!(
                "image {} differs from its source in {} range(s)",
                spec.image,
                found.len()
            ),
            1,
        ))
    }
}

/// The `Migration:` block of `status`.
#[derive(Serialize)]
pub struct StatusBlock {
    source: String,
    destination: String,
    state: String,
    state_description: String,
    bytes_copied: u64,
    bytes_total: u64,
    rate_bytes_per_sec: f64,
    eta_secs: Option<u64>,
}

/// Returns the `Migration:` block of image `name`, if it is a migration destination.
pub async fn status_block(
    cluster: &Cluster,
    dst: &rbdx_image::Images,
    name: &str,
) -> CliResult<Option<StatusBlock>> {
    let Some(st) = rbdx_migration::status(cluster.store(), dst, name).await? else {
        return Ok(None);
    };
    Ok(Some(block(cluster, &st).await))
}

async fn block(cluster: &Cluster, st: &MigrationStatus) -> StatusBlock {
    let source = match &st.spec.source_spec {
        Some(json) => rbdx_source::SourceSpec::parse(json)
            .map(|s| serde_json::to_string(&s.redacted()).unwrap_or_default())
            .unwrap_or_else(|_| "<unreadable source spec>".into()),
        None => match st.spec.copy.as_ref().and_then(|c| c.cluster.as_deref()) {
            // A copy from another cluster: its pool is known there by id only.
            Some(other) => format!(
                "{other}: pool id {}{}/{} ({})",
                st.spec.pool_id,
                if st.spec.namespace.is_empty() {
                    String::new()
                } else {
                    format!("/{}", st.spec.namespace)
                },
                st.spec.image_name,
                st.spec.image_id
            ),
            None => format!(
                "{} ({})",
                rbdx_migration::image_path(cluster.store(), &st.spec.io_ctx(), &st.spec.image_name)
                    .await,
                st.spec.image_id
            ),
        },
    };
    let p = st.progress.clone().unwrap_or_default();
    let state = match st.spec.state {
        MigrationState::Executing => format!("executing ({}% complete)", p.percent()),
        other => other.name().to_owned(),
    };
    StatusBlock {
        source,
        destination: format!("{} ({})", st.destination, st.destination_id),
        state,
        state_description: st.spec.state_description.clone(),
        bytes_copied: p.copied_bytes,
        bytes_total: p.total_bytes,
        rate_bytes_per_sec: p.rate,
        eta_secs: if st.spec.state == MigrationState::Executing {
            p.eta_secs()
        } else {
            None
        },
    }
}

/// Prints the block as `rbd status` does, plus copy figures.
pub fn print_block(b: &StatusBlock) {
    println!("Migration:");
    println!("\tsource: {}", b.source);
    println!("\tdestination: {}", b.destination);
    println!("\tstate: {}", b.state);
    if !b.state_description.is_empty() {
        println!("\tstate description: {}", b.state_description);
    }
    if b.bytes_total > 0 {
        println!(
            "\tcopied: {} of {}",
            format_size(b.bytes_copied),
            format_size(b.bytes_total)
        );
    }
    if b.rate_bytes_per_sec > 0.0 {
        println!("\trate: {}/s", format_size(b.rate_bytes_per_sec as u64));
    }
    if let Some(eta) = b.eta_secs {
        println!("\teta: {eta}s");
    }
}
