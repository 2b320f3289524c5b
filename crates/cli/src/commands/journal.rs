//! `rbdx journal info|status|inspect|export|import|reset|client disconnect`: the write journal
//! of an image with the journaling feature, in `rbd journal`'s words (`--format json` too).
//!
//! `export` writes the journal's entries, as they are framed in its objects, after the banner
//! `rbdx journal v1\n`; `import` checks such a file whole, then applies its events to an image
//! through the image's own operations (journaled again if it journals): data events, and the
//! operations whose journaled outcome is success.

use std::io::{BufReader, Read, Write as _};

use bytes::{Bytes, BytesMut};
use rbdx_image::{Cluster, Image, OpenOptions};
use rbdx_journal::header::{ClientState, Position};
use rbdx_journal::{Journal, entry, event};
use rbdx_objstore::{ObjectStore, PoolId};
use serde::Serialize;

use crate::args::{ClientCommand, ImageArg, JournalCommand, JournalImportArgs};
use crate::commands::open::resolve;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::spec::SnapRule;

/// Banner of a journal export. Never change.
const EXPORT_BANNER: &[u8] = b"rbdx journal v1\n";

/// Runs a journal command.
pub async fn run(
    cluster: &Cluster,
    command: JournalCommand,
    printer: Printer,
    verbose: bool,
) -> CliResult {
    match command {
        JournalCommand::Info(arg) => info(cluster, &arg, printer).await,
        JournalCommand::Status(arg) => status(cluster, &arg, printer).await,
        JournalCommand::Inspect(image) => inspect(cluster, &image, verbose, printer).await,
        JournalCommand::Export { image, path } => {
            let path = path.ok_or_else(|| {
                CliError::invalid("journal export needs a path (or - for standard output)")
            })?;
            export(cluster, &image, &path).await
        }
        JournalCommand::Import(args) => import(cluster, &args).await,
        JournalCommand::Reset(arg) => reset(cluster, &arg).await,
        JournalCommand::Client {
            command: ClientCommand::Disconnect { image, client_id },
        } => {
            let (_, journal) = open(cluster, &image).await?;
            let ids = match client_id {
                Some(id) => {
                    journal.disconnect_client(&id).await?;
                    vec![id]
                }
                None => journal.disconnect_others().await?,
            };
            for id in ids {
                println!("client {id} disconnected");
            }
            Ok(())
        }
    }
}

/// Empties the journal of the image of `arg` as `rbd journal reset` does: journaling off and
/// on again through the image, under its exclusive lock (see `Image::reset_journal`). The
/// spec may name the journal by its id; a journal whose image is gone is emptied in place,
/// since nothing can write to it.
async fn reset(cluster: &Cluster, arg: &ImageArg) -> CliResult {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let listed = images.list().await?;
    let name = if listed.contains_key(&spec.image) {
        Some(spec.image.clone())
    } else {
        listed
            .into_iter()
            .find_map(|(name, id)| (id == spec.image).then_some(name))
    };
    let Some(name) = name else {
        let io = images.io_ctx().clone();
        let journal = Journal::open(cluster.store().clone(), io, &spec.image)
            .await
            .map_err(|_| {
                rbdx_image::Error::not_found(format!("no image or journal named {}", spec.image))
            })?;
        journal.reset().await?;
        return Ok(());
    };
    let image = images.open(&name, OpenOptions::default()).await?;
    let reset = image.reset_journal().await;
    let closed = image.close().await;
    reset?;
    closed?;
    Ok(())
}

/// Opens the image of `arg` read-only (closed again) and its journal. As with `rbd`, the spec
/// may also name the journal itself (`pool/[namespace/]<journal id>`, the image id).
async fn open(cluster: &Cluster, arg: &ImageArg) -> CliResult<(String, Journal)> {
    let (spec, images) = resolve(cluster, arg, SnapRule::None).await?;
    let image = match images
        .open(&spec.image, OpenOptions::default().with_read_only(true))
        .await
    {
        Ok(image) => image,
        Err(e) if e.kind() == rbdx_image::ErrorKind::NotFound => {
            let io = images.io_ctx().clone();
            return match Journal::open(cluster.store().clone(), io, &spec.image).await {
                Ok(journal) => Ok((spec.image, journal)),
                Err(_) => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let id = image.id().to_owned();
    let io = image.io_ctx().clone();
    image.close().await?;
    let journal = Journal::open(cluster.store().clone(), io, &id)
        .await
        .map_err(|e| {
            if e.kind() == rbdx_image::ErrorKind::NotFound {
                CliError::from(rbdx_image::Error::not_found(format!(
                    "image {} has no journal (the journaling feature is off)",
                    spec.image
                )))
            } else {
                e.into()
            }
        })?;
    Ok((spec.image, journal))
}

#[derive(Serialize)]
struct InfoOut {
    journal_id: String,
    header_oid: String,
    object_oid_prefix: String,
    order: u8,
    object_size: u64,
    splay_width: u64,
    object_pool_id: u64,
    /// The pool of the data objects, when it is not the image's (as `rbd` shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_pool: Option<String>,
}

async fn info(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (_, journal) = open(cluster, arg).await?;
    let meta = journal.meta();
    let object_pool = if meta.pool_id == journal.io_ctx().pool().0 {
        None
    } else {
        Some(cluster.store().pool_by_id(PoolId(meta.pool_id)).await?.name)
    };
    let out = InfoOut {
        journal_id: journal.image_id().to_owned(),
        header_oid: journal.header_oid().to_owned(),
        object_oid_prefix: journal.prefix(),
        order: meta.order,
        object_size: 1 << meta.order,
        splay_width: meta.splay_width,
        object_pool_id: meta.pool_id,
        object_pool,
    };
    printer.print("journal", &out, |o| {
        println!("rbd journal '{}':", o.journal_id);
        println!("\theader_oid: {}", o.header_oid);
        println!("\tobject_oid_prefix: {}", o.object_oid_prefix);
        println!(
            "\torder: {} ({} objects)",
            o.order,
            crate::size::format_size(o.object_size)
        );
        println!("\tsplay_width: {}", o.splay_width);
        if let Some(pool) = &o.object_pool {
            println!("\tobject_pool: {pool}");
        }
    });
    Ok(())
}

#[derive(Serialize)]
struct StatusOut {
    minimum_set: u64,
    active_set: u64,
    registered_clients: Vec<ClientOut>,
}

/// A client as `rbd journal status` shows it.
#[derive(Serialize)]
struct ClientOut {
    id: String,
    description: String,
    commit_position: CommitOut,
    state: ClientState,
}

/// A commit position: the last committed entry of each splay object in use, most recent
/// first (Ceph's `object_positions`).
#[derive(Serialize)]
struct CommitOut {
    object_positions: Vec<Position>,
}

fn positions_text(c: &CommitOut) -> String {
    let items: Vec<String> = c
        .object_positions
        .iter()
        .map(|p| {
            format!(
                "[object_number={}, tag_tid={}, entry_tid={}]",
                p.object_number, p.tag_tid, p.entry_tid
            )
        })
        .collect();
    format!("[positions=[{}]]", items.join(", "))
}

async fn status(cluster: &Cluster, arg: &ImageArg, printer: Printer) -> CliResult {
    let (_, journal) = open(cluster, arg).await?;
    let h = journal.header().await?;
    let mut registered_clients = Vec::new();
    for c in h.clients.into_values() {
        let object_positions = match c.commit_position {
            Some(p) => journal.object_positions(p).await?,
            None => Vec::new(),
        };
        registered_clients.push(ClientOut {
            id: c.id,
            description: c.description,
            commit_position: CommitOut { object_positions },
            state: c.state,
        });
    }
    let out = StatusOut {
        minimum_set: h.sets.minimum_set,
        active_set: h.sets.active_set,
        registered_clients,
    };
    printer.print("status", &out, |o| {
        println!("minimum_set: {}", o.minimum_set);
        println!("active_set: {}", o.active_set);
        println!("registered clients: ");
        for c in &o.registered_clients {
            let state = match c.state {
                ClientState::Connected => "connected",
                ClientState::Disconnected => "disconnected",
            };
            println!(
                "\t[id={}, commit_position={}, state={state}]",
                c.id,
                positions_text(&c.commit_position)
            );
        }
    });
    Ok(())
}

#[derive(Serialize)]
struct InspectOut {
    entries: u64,
    /// Entry ids that are absent: appends that never completed (a writer died with them in
    /// flight, unacknowledged) or were trimmed.
    missing: u64,
    events: std::collections::BTreeMap<&'static str, u64>,
    errors: Vec<String>,
}

async fn inspect(cluster: &Cluster, arg: &ImageArg, verbose: bool, printer: Printer) -> CliResult {
    let (_, journal) = open(cluster, arg).await?;
    let entries = journal.entries_after(None).await?;
    let mut out = InspectOut {
        entries: 0,
        missing: 0,
        events: Default::default(),
        errors: Vec::new(),
    };
    let mut previous: Option<u64> = None;
    for (pos, e) in &entries {
        out.entries += 1;
        if let Some(p) = previous
            && pos.entry_tid > p + 1
        {
            out.missing += pos.entry_tid - p - 1;
        }
        previous = Some(pos.entry_tid);
        match event::decode(&e.data) {
            Ok((ev, _)) => {
                *out.events.entry(event::name(&ev)).or_default() += 1;
                if verbose && printer.is_plain() {
                    println!(
                        "Entry: tag_id={}, commit_tid={}, object={}: {}",
                        pos.tag_tid,
                        pos.entry_tid,
                        pos.object_number,
                        describe(&ev)
                    );
                }
            }
            Err(err) => out.errors.push(format!("entry {}: {err}", pos.entry_tid)),
        }
    }
    printer.print("inspect", &out, |o| {
        println!("Summary:");
        println!(
            "  {} entries inspected, {} errors",
            o.entries,
            o.errors.len()
        );
        for (name, n) in &o.events {
            println!("  {name}: {n}");
        }
        for e in &o.errors {
            println!("  error: {e}");
        }
    });
    if out.errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::with_code(
            format!("the journal has {} errors", out.errors.len()),
            5,
        ))
    }
}

/// A one-line description of an event for `inspect --verbose`.
fn describe(ev: &rbdx_image::journaling::Event) -> String {
    use rbdx_image::journaling::Event;
    match ev {
        Event::Write { offset, data } => format!("AioWrite offset={offset} length={}", data.len()),
        Event::Discard { offset, length } => format!("AioDiscard offset={offset} length={length}"),
        Event::WriteZeroes { offset, length } => {
            format!("AioWriteZeroes offset={offset} length={length}")
        }
        Event::OpFinish { op_tid, result } => format!("OpFinish op_tid={op_tid} r={result}"),
        other => format!("{other:?}"),
    }
}

async fn export(cluster: &Cluster, arg: &ImageArg, path: &std::path::Path) -> CliResult {
    let (_, journal) = open(cluster, arg).await?;
    let entries = journal.entries_after(None).await?;
    let mut out = BytesMut::from(EXPORT_BANNER);
    for (_, e) in &entries {
        e.encode_into(&mut out);
    }
    match crate::commands::create_output(path)? {
        Some(mut f) => f
            .write_all(&out)
            .and_then(|()| f.sync_all())
            .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e)),
        None => crate::commands::bulk_stdout()?
            .write_all(&out)
            .map_err(|e| CliError::io("cannot write to standard output", e)),
    }
}

async fn import(cluster: &Cluster, args: &JournalImportArgs) -> CliResult {
    let mut data = Vec::new();
    let mut input: Box<dyn Read> = if args.path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(BufReader::new(std::fs::File::open(&args.path).map_err(
            |e| CliError::io(format!("cannot open {}", args.path.display()), e),
        )?))
    };
    input
        .read_to_end(&mut data)
        .map_err(|e| CliError::io("cannot read the journal export", e))?;
    let body = data
        .strip_prefix(EXPORT_BANNER)
        .ok_or_else(|| CliError::invalid("not an rbdx journal export (bad banner)"))?;
    let parsed = entry::parse(&Bytes::copy_from_slice(body));
    if parsed.torn {
        return Err(CliError::invalid(format!(
            "the journal export is damaged after byte {}",
            parsed.valid_len + EXPORT_BANNER.len()
        )));
    }
    // Every event is decoded (and so checked) before anything changes.
    let events: Vec<(u64, rbdx_image::journaling::Event)> = parsed
        .entries
        .iter()
        .map(|e| event::decode(&e.data).map(|(ev, _)| (e.entry_tid, ev)))
        .collect::<rbdx_image::Result<_>>()?;
    let (spec, images) = resolve(cluster, &args.image, SnapRule::None).await?;
    let image: Image = images.open(&spec.image, OpenOptions::default()).await?;
    let result = rbdx_journal::apply_events(&image, &events).await;
    let closed = image.close().await;
    let applied = result?;
    closed?;
    eprintln!("rbdx: applied {applied} of {} journal events", events.len());
    Ok(())
}
