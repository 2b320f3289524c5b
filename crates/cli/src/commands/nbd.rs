//! `rbdx nbd serve`: serves images over NBD until SIGTERM or SIGINT.
//!
//! On start it prints where it listens and what it serves (one JSON line with
//! `--format json`, for scripts that start it with `--bind 127.0.0.1:0`); while running it
//! logs connections and refused requests on standard error (`RBDX_LOG` sets the filter, e.g.
//! `RBDX_LOG=debug`); on a signal it finishes the requests in flight, flushes and closes
//! every image.

use rbdx_image::{Cluster, OpenOptions};
use rbdx_nbd::{Export, Exports, Listener, Server};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{NbdCommand, NbdServeArgs};
use crate::commands::open::images;
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::spec::{SnapRule, SpecOptions};

#[derive(Serialize)]
struct Started {
    address: String,
    exports: Vec<ExportOut>,
}

#[derive(Serialize)]
struct ExportOut {
    name: String,
    uri: String,
    size: u64,
    read_only: bool,
}

/// Runs an `nbd` command.
pub async fn run(cluster: &Cluster, command: NbdCommand, printer: Printer) -> CliResult {
    match command {
        NbdCommand::Serve(args) => serve(cluster, args, printer).await,
    }
}

async fn serve(cluster: &Cluster, args: NbdServeArgs, printer: Printer) -> CliResult {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| CliError::io("cannot handle SIGTERM", e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CliError::io("cannot handle SIGINT", e))?;
    let mut exports = Vec::new();
    let opened = open_all(cluster, &args, &mut exports).await;
    let exports = match opened.and_then(|()| Exports::new(exports).map_err(nbd_error)) {
        Ok(e) => e,
        Err(e) => return Err(e),
    };
    let server = Server::new(exports);
    let listener = match &args.socket {
        Some(path) => Listener::bind_unix(path),
        None => Listener::bind_tcp(&args.bind).await,
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = server.close().await;
            return Err(nbd_error(e));
        }
    };
    let started = Started {
        address: listener.address(),
        exports: server
            .exports()
            .iter()
            .map(|e| ExportOut {
                name: e.name().to_owned(),
                uri: listener.uri(e.name()),
                size: e.size(),
                read_only: e.read_only(),
            })
            .collect(),
    };
    printer.print("nbd_server", &started, |s| {
        for e in &s.exports {
            let ro = if e.read_only { " (read-only)" } else { "" };
            println!("serving {} ({} bytes){ro} at {}", e.name, e.size, e.uri);
        }
    });
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("nbd: stopping: finishing requests in flight, then flushing");
    };
    let served = server.serve(listener, stop).await;
    let closed = server.close().await;
    served.and(closed).map_err(nbd_error)
}

/// Opens every image named on the command line; on failure, closes those already open.
async fn open_all(cluster: &Cluster, args: &NbdServeArgs, out: &mut Vec<Export>) -> CliResult {
    for text in &args.images {
        let opened = async {
            let spec = SpecOptions::default().resolve(Some(text), SnapRule::Optional)?;
            let image = images(cluster, &spec.pool, &spec.namespace)
                .await?
                .open(
                    &spec.image,
                    OpenOptions::default()
                        .with_snap(spec.snap.clone())
                        .with_read_only(args.read_only),
                )
                .await?;
            // A non-primary mirror copy is served read-only: the mirror daemon writes it.
            let read_only =
                args.read_only || image.header().mirror.as_ref().is_some_and(|m| !m.primary);
            if read_only && !args.read_only {
                tracing::info!("{spec} is a non-primary mirror copy: serving it read-only");
            }
            // A journaling image is brought up to date with its journal before it is served
            // (taking the lock replays what a crash left unapplied).
            if !read_only
                && !image.is_read_only()
                && image
                    .header()
                    .features
                    .contains(rbdx_image::Features::JOURNALING)
                && let Err(e) = image.acquire_exclusive_lock().await
            {
                let _ = image.clone().close().await;
                return Err(e.into());
            }
            CliResult::Ok(Export::new(spec.to_string(), image, read_only))
        }
        .await;
        match opened {
            Ok(export) => out.push(export),
            Err(e) => {
                for export in out.drain(..) {
                    let _ = export.image().clone().close().await;
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

fn nbd_error(e: rbdx_nbd::Error) -> CliError {
    match e {
        rbdx_nbd::Error::Image(e) => e.into(),
        rbdx_nbd::Error::Bind(what, io) => CliError::io(format!("cannot listen on {what}"), io),
        rbdx_nbd::Error::DuplicateExport(name) => {
            CliError::invalid(format!("image {name} is named twice"))
        }
        other => CliError::with_code(other.to_string(), 5),
    }
}
