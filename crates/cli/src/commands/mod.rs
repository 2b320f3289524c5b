//! Command dispatch: one module per command group.

mod bench;
mod blocking_file;
mod config_key;
mod copy;
mod create_opts;
mod diff;
mod du;
mod exchange;
mod gateway;
mod image;
pub mod journal;
mod layering;
mod maintenance;
mod meta;
mod migration;
mod mirror;
mod namespace;
mod nbd;
mod open;
mod pool;
mod rados;
mod snap;
mod source;
mod transfer;
mod trash;

use rbdx_image::Cluster;

use crate::args::{Cli, Command, DeepCommand};
use crate::error::CliResult;
use crate::output::Printer;
use crate::store;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let printer = Printer {
        format: cli.global.format,
        pretty: cli.global.pretty_format,
    };
    // Source commands open the store only if a config:// value needs it.
    if let Command::Source { command } = cli.command {
        return source::run(&cli.global, command, printer, !cli.global.no_progress).await;
    }
    let store = store::open(&cli.global).await?;
    // Images with the journaling feature log their changes through rbdx journals; images
    // under import-only migration read their source through the source drivers.
    let opener = migration::opener(&cli.global, &store)?;
    let cluster = Cluster::new(store)
        .with_journals(rbdx_journal::opener())
        .with_sources(opener.clone());
    let progress = !cli.global.no_progress;
    match cli.command {
        Command::Create {
            image: arg,
            size,
            create,
        } => image::create(&cluster, &arg, &size, &create).await,
        Command::Ls { pool, long } => image::ls(&cluster, &pool, long, printer).await,
        Command::Info(arg) => image::info(&cluster, &arg, printer).await,
        Command::Rm(arg) => image::rm(&cluster, &arg, progress).await,
        Command::Resize {
            image: arg,
            size,
            allow_shrink,
        } => image::resize(&cluster, &arg, &size, allow_shrink, progress).await,
        Command::Rename { src, dest } => image::rename(&cluster, &src, &dest).await,
        Command::Status(arg) => image::status(&cluster, &arg, printer).await,
        Command::Clone {
            parent,
            dest,
            create,
            clone_format,
        } => {
            let format = match clone_format {
                Some(text) => Some(text),
                None => crate::cluster::client_setting(&cli.global, "rbd_default_clone_format")?,
            };
            layering::clone(&cluster, &parent, &dest, &create, format.as_deref()).await
        }
        Command::Flatten(arg) => layering::flatten(&cluster, &arg, progress).await,
        Command::Cp(args) => copy::run(&cluster, &cli.global, &args, false, true, progress).await,
        Command::Deep {
            command: DeepCommand::Cp { args, flatten },
        } => copy::run(&cluster, &cli.global, &args, true, flatten, progress).await,
        Command::Children(arg) => layering::children(&cluster, &arg, printer).await,
        Command::Feature { command } => maintenance::feature(&cluster, command, progress).await,
        Command::ObjectMap { command } => {
            maintenance::object_map(&cluster, command, printer, progress).await
        }
        Command::Lock { command } => maintenance::lock(&cluster, command, printer).await,
        Command::Migration { command } => {
            migration::run(&cli.global, &cluster, opener, command, printer, progress).await
        }
        Command::Journal { command } => {
            journal::run(&cluster, command, printer, cli.global.verbose > 0).await
        }
        Command::Nbd { command } => nbd::run(&cluster, command, printer).await,
        Command::Mirror { command } => mirror::run(&cli.global, &cluster, command, printer).await,
        Command::Gateway { command } => {
            gateway::run(&cli.global, cluster.store().clone(), command, printer).await
        }
        Command::Trash { command } => trash::run(&cluster, command, printer, progress).await,
        Command::Source { .. } => Ok(()),
        Command::Diff {
            image: arg,
            from_snap,
            whole_object,
        } => diff::run(&cluster, &arg, from_snap, whole_object, printer).await,
        Command::Du { spec, opts } => du::run(&cluster, spec.as_deref(), &opts, printer).await,
        Command::Snap { command } => snap::run(&cluster, command, printer, progress).await,
        Command::ImageMeta { command } => meta::run(&cluster, command, printer).await,
        Command::Export(args) => transfer::export(&cluster, args, progress).await,
        Command::Import(args) => transfer::import(&cluster, args, progress).await,
        Command::ExportDiff(args) => exchange::export_diff(&cluster, args, progress).await,
        Command::ImportDiff(args) => exchange::import_diff(&cluster, args, progress).await,
        Command::MergeDiff(args) => exchange::merge_diff(args).await,
        Command::Bench(args) => bench::run(&cluster, args, printer).await,
        Command::Namespace { command } => namespace::run(&cluster, command, printer).await,
        Command::Pool { command } => pool::run(&**cluster.store(), command, printer).await,
        Command::ConfigKey { command } => {
            config_key::run(&**cluster.store(), command, printer).await
        }
        Command::Rados(args) => rados::run(&**cluster.store(), args, printer).await,
    }
}

/// Reads a whole file, or standard input for `-`.
pub fn read_input(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)?;
        Ok(data)
    } else {
        std::fs::read(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Creates a new output file, refusing to overwrite one; `None` for `-` (standard output).
pub fn create_output(path: &std::path::Path) -> crate::error::CliResult<Option<std::fs::File>> {
    if path.as_os_str() == "-" {
        return Ok(None);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(Some)
        .map_err(|e| crate::error::CliError::io(format!("cannot create {}", path.display()), e))
}

/// Returns standard output as a plain file, for bulk data: `std::io::Stdout` scans every
/// write for a newline, which costs more than the write itself for megabytes of zeros.
pub fn bulk_stdout() -> crate::error::CliResult<std::fs::File> {
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    let stdout = std::io::stdout();
    let _ = stdout.lock().flush();
    stdout
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(|e| crate::error::CliError::io("cannot use standard output", e))
}

/// Writes `data` to a file, or standard output for `-`.
pub fn write_output(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if path.as_os_str() == "-" {
        std::io::Write::write_all(&mut std::io::stdout(), data)
    } else {
        std::fs::write(path, data)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}
