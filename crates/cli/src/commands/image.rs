//! `rbdx create|ls|info|rm|resize|rename|status`: image management with `rbd`'s syntax and
//! outputs.

use rbdx_image::header::{FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID};
use rbdx_image::{Cluster, Header, OpenOptions, Protection};
use rbdx_objstore::ObjectStore;
use serde::Serialize;

use crate::args::{CreateArgs, DestArg, ImageArg, PoolArg};
use crate::commands::create_opts::create_options;
use crate::commands::open::{images, open_view, resolve};
use crate::error::{CliError, CliResult};
use crate::output::{Printer, ctime, print_table};
use crate::progress::ProgressLine;
use crate::size::{format_size, parse_size};
use crate::spec::{SnapRule, resolve_pool};

/// `rbdx create`.
pub async fn create(
    cluster: &Cluster,
    image: &ImageArg,
    size: &str,
    args: &CreateArgs,
) -> CliResult {
    let (spec, images) = resolve(cluster, image, SnapRule::None).await?;
    let size = parse_size(size, 1 << 20)?;
    let opts = create_options(cluster, size, args).await?;
    images.create(&spec.image, &opts).await?;
    rbdx_mirror::image::enable_if_pool_mode(&images, &spec.image).await?;
    Ok(())
}

#[derive(Serialize)]
struct LongEntry {
    image: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_id: Option<u64>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    format: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    protected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_type: Option<String>,
}

/// `rbdx ls [-l]`.
pub async fn ls(cluster: &Cluster, pool: &PoolArg, long: bool, printer: Printer) -> CliResult {
    let (pool_name, namespace) = resolve_pool(pool.spec.as_deref(), &pool.pool, &pool.namespace)?;
    let images = images(cluster, &pool_name, &namespace).await?;
    if !long {
        let names: Vec<String> = images.list().await?.into_keys().collect();
        printer.print("images", &names, |names| {
            for n in names {
                println!("{n}");
            }
        });
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in images.list_long().await? {
        let header = match entry.header {
            Ok(h) => h,
            Err(e) => {
                eprintln!("rbdx: error opening {}: {e}", entry.name);
                continue;
            }
        };
        let locked = cluster
            .store()
            .lock_info(
                images.io_ctx(),
                &rbdx_image::names::header_object(&entry.id),
                "rbd_lock",
            )
            .await
            .map(|info| !info.lockers.is_empty())
            .unwrap_or(false);
        let parent = match &header.parent {
            Some(_) => {
                let image = images
                    .open(&entry.name, OpenOptions::default().with_read_only(true))
                    .await?;
                let info = image.parent_info().await;
                image.close().await?;
                info?.map(|p| format!("{}/{}@{}", p.pool, p.image, p.snapshot))
            }
            None => None,
        };
        entries.push(LongEntry {
            image: entry.name.clone(),
            id: entry.id.clone(),
            snapshot: None,
            snapshot_id: None,
            size: header.size,
            parent,
            format: 2,
            protected: None,
            lock_type: locked.then(|| "exclusive".to_owned()),
        });
        for snap in header.snapshots.values() {
            entries.push(LongEntry {
                image: entry.name.clone(),
                id: entry.id.clone(),
                snapshot: Some(snap.name.clone()),
                snapshot_id: Some(snap.id),
                size: snap.size,
                parent: None,
                format: 2,
                protected: Some((snap.protection == Protection::Protected).to_string()),
                lock_type: None,
            });
        }
    }
    printer.print("images", &entries, |entries| {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let name = match &e.snapshot {
                    Some(s) => format!("{}@{s}", e.image),
                    None => e.image.clone(),
                };
                vec![
                    name,
                    format_size(e.size),
                    e.parent.clone().unwrap_or_default(),
                    e.format.to_string(),
                    if e.protected.as_deref() == Some("true") {
                        "yes".into()
                    } else {
                        String::new()
                    },
                    if e.lock_type.is_some() {
                        "excl".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        if !rows.is_empty() {
            print_table(&["NAME", "SIZE", "PARENT", "FMT", "PROT", "LOCK"], &rows);
        }
    });
    Ok(())
}

#[derive(Serialize)]
struct InfoOut {
    name: String,
    id: String,
    size: u64,
    objects: u64,
    order: u8,
    object_size: u64,
    snapshot_count: usize,
    block_name_prefix: String,
    format: u8,
    features: Vec<&'static str>,
    op_features: Vec<String>,
    flags: Vec<&'static str>,
    create_timestamp: String,
    access_timestamp: String,
    modify_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stripe_unit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stripe_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<ParentOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mirroring: Option<MirroringOut>,
}

/// `rbd info`'s mirroring lines.
#[derive(Serialize)]
struct MirroringOut {
    state: &'static str,
    mode: &'static str,
    global_id: String,
    primary: bool,
}

#[derive(Serialize)]
struct ParentOut {
    pool: String,
    pool_namespace: String,
    image: String,
    id: String,
    snapshot: String,
    trash: bool,
    overlap: u64,
}

fn flag_names(flags: u64) -> Vec<&'static str> {
    let mut out = Vec::new();
    if flags & FLAG_OBJECT_MAP_INVALID != 0 {
        out.push("object map invalid");
    }
    if flags & FLAG_FAST_DIFF_INVALID != 0 {
        out.push("fast diff invalid");
    }
    out
}

/// `rbdx info`.
pub async fn info(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (spec, image) = open_view(cluster, arg).await?;
    let header: Header = image.header();
    let parent = image.parent_info().await;
    image.close().await?;
    let parent = parent?.map(|p| ParentOut {
        pool: p.pool,
        pool_namespace: p.namespace,
        image: p.image,
        id: p.image_id,
        snapshot: p.snapshot,
        trash: false,
        overlap: p.overlap,
    });
    let snap = spec
        .snap
        .as_ref()
        .and_then(|s| header.snapshot_by_name(s).cloned());
    let size = snap.as_ref().map_or(header.size, |s| s.size);
    let layout = header.layout;
    let data_pool = match header.data_pool_id {
        Some(id) => Some(
            cluster
                .store()
                .pool_by_id(rbdx_objstore::PoolId(id))
                .await?
                .name,
        ),
        None => None,
    };
    let created = ctime(header.created());
    let out = InfoOut {
        name: spec.image.clone(),
        id: header.id().to_owned(),
        size,
        objects: layout.num_objects(size),
        order: layout.order(),
        object_size: layout.object_size(),
        snapshot_count: header.snapshots.len(),
        block_name_prefix: header.object_prefix.clone(),
        format: 2,
        features: header.shown_features().names(),
        op_features: header
            .op_features
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        flags: flag_names(snap.as_ref().map_or(header.flags, |s| s.flags)),
        create_timestamp: created.clone(),
        access_timestamp: created.clone(),
        modify_timestamp: created,
        stripe_unit: layout.is_fancy().then(|| layout.stripe_unit()),
        stripe_count: layout.is_fancy().then(|| layout.stripe_count()),
        data_pool,
        protected: snap
            .as_ref()
            .map(|s| (s.protection == Protection::Protected).to_string()),
        parent,
        mirroring: header.mirror.as_ref().map(|m| MirroringOut {
            state: "enabled",
            mode: m.mode.as_str(),
            global_id: m.global_id.clone(),
            primary: m.primary,
        }),
    };
    printer.print("image", &out, |o| {
        println!("rbd image '{}':", o.name);
        println!("\tsize {} in {} objects", format_size(o.size), o.objects);
        println!(
            "\torder {} ({} objects)",
            o.order,
            format_size(o.object_size)
        );
        println!("\tsnapshot_count: {}", o.snapshot_count);
        println!("\tid: {}", o.id);
        if let Some(pool) = &o.data_pool {
            println!("\tdata_pool: {pool}");
        }
        println!("\tblock_name_prefix: {}", o.block_name_prefix);
        println!("\tformat: {}", o.format);
        println!("\tfeatures: {}", o.features.join(", "));
        println!("\top_features: {}", o.op_features.join(", "));
        println!("\tflags: {}", o.flags.join(", "));
        println!("\tcreate_timestamp: {}", o.create_timestamp);
        println!("\taccess_timestamp: {}", o.access_timestamp);
        println!("\tmodify_timestamp: {}", o.modify_timestamp);
        if let (Some(unit), Some(count)) = (o.stripe_unit, o.stripe_count) {
            println!("\tstripe unit: {}", format_size(unit));
            println!("\tstripe count: {count}");
        }
        if let Some(p) = &o.parent {
            let ns = if p.pool_namespace.is_empty() {
                String::new()
            } else {
                format!("{}/", p.pool_namespace)
            };
            println!("\tparent: {}/{ns}{}@{}", p.pool, p.image, p.snapshot);
            println!("\toverlap: {}", format_size(p.overlap));
        }
        if let Some(p) = &o.protected {
            println!(
                "\tprotected: {}",
                if p == "true" { "True" } else { "False" }
            );
        }
        if let Some(m) = &o.mirroring {
            println!("\tmirroring state: {}", m.state);
            println!("\tmirroring mode: {}", m.mode);
            println!("\tmirroring global id: {}", m.global_id);
            println!("\tmirroring primary: {}", m.primary);
        }
    });
    Ok(())
}

/// `rbdx rm`.
pub async fn rm(cluster: &Cluster, arg: &ImageArg, show_progress: bool) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    // A mirrored primary stops being mirrored first (its mirror snapshots go, and peers
    // remove their copies); a non-primary copy is the mirror daemon's to remove.
    if let Ok(id) = images.lookup(&spec.image).await
        && let Some(m) = images.header_by_id(&id, &spec.image).await?.mirror
    {
        if !m.primary {
            return Err(CliError::with_code(
                format!(
                    "image {} is a non-primary mirror copy; it goes when its primary is \
                     removed (or disable its mirroring with --force first)",
                    spec.image
                ),
                30,
            ));
        }
        rbdx_mirror::image::disable(&images, &spec.image, false).await?;
    }
    let progress = ProgressLine::new("Removing image", show_progress);
    let result = images
        .remove(&spec.image, &|done, total| progress.update(done, total))
        .await;
    progress.conclude(result)
}

/// `rbdx resize`.
pub async fn resize(
    cluster: &Cluster,
    arg: &ImageArg,
    size: &str,
    allow_shrink: bool,
    show_progress: bool,
) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let size = parse_size(size, 1 << 20)?;
    let image = images.open(&spec.image, OpenOptions::default()).await?;
    let progress = ProgressLine::new("Resizing image", show_progress);
    let result = image.resize(size, allow_shrink).await;
    let closed = image.close().await;
    progress.conclude(result)?;
    Ok(closed?)
}

/// `rbdx rename`.
pub async fn rename(cluster: &Cluster, src: &ImageArg, dest_arg: &DestArg) -> CliResult {
    let (spec, images) = resolve(cluster, src, SnapRule::None).await?;
    let dest_opts = dest_arg.options();
    let dest_spec = dest_arg.dest_spec.as_deref();
    let dest = dest_opts.resolve(dest_spec, SnapRule::None)?;
    let dest_pool = if dest_spec.is_some_and(|d| d.contains('/')) || dest_opts.pool.is_some() {
        dest.pool.clone()
    } else {
        spec.pool.clone()
    };
    let dest_ns = if dest_spec.is_some_and(|d| d.matches('/').count() == 2)
        || dest_opts.namespace.is_some()
    {
        dest.namespace.clone()
    } else {
        spec.namespace.clone()
    };
    if dest_pool != spec.pool || dest_ns != spec.namespace {
        return Err(CliError::invalid(
            "rename works within a pool and namespace; use `migration prepare` to move an image",
        ));
    }
    images.rename(&spec.image, &dest.image).await?;
    Ok(())
}

#[derive(Serialize)]
struct WatcherOut {
    address: String,
    client: u64,
    cookie: u64,
}

#[derive(Serialize)]
struct StatusOut {
    watchers: Vec<WatcherOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<crate::commands::migration::StatusBlock>,
}

/// `rbdx status`.
pub async fn status(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let ids = images.list().await?;
    let id = ids
        .get(&spec.image)
        .ok_or_else(|| CliError::with_code(format!("image {} does not exist", spec.image), 2))?;
    let watchers = cluster
        .store()
        .list_watchers(images.io_ctx(), &rbdx_image::names::header_object(id))
        .await?;
    let out = StatusOut {
        watchers: watchers
            .into_iter()
            .map(|w| WatcherOut {
                address: w.client.addr,
                client: w.client.id.0,
                cookie: w.cookie,
            })
            .collect(),
        migration: crate::commands::migration::status_block(cluster, &images, &spec.image).await?,
    };
    printer.print("status", &out, |o| {
        if o.watchers.is_empty() {
            println!("Watchers: none");
        } else {
            println!("Watchers:");
            for w in &o.watchers {
                println!(
                    "\twatcher={} client.{} cookie={}",
                    w.address, w.client, w.cookie
                );
            }
        }
        if let Some(b) = &o.migration {
            crate::commands::migration::print_block(b);
        }
    });
    Ok(())
}
