//! `rbdx mirror daemon`: runs this site's mirror daemon until SIGTERM or SIGINT.

use std::sync::Arc;

use rbdx_image::Cluster;
use rbdx_mirror::daemon::{Daemon, DaemonOptions, GatewayConnector};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{Global, MirrorDaemonArgs};
use crate::error::{CliError, CliResult};
use crate::output::Printer;

#[derive(Serialize)]
struct Started {
    daemon_id: String,
    site_name: String,
    pid: u32,
}

/// Runs the daemon.
pub async fn run(
    _global: &Global,
    cluster: &Cluster,
    args: &MirrorDaemonArgs,
    printer: Printer,
) -> CliResult {
    let mut options = DaemonOptions {
        max_concurrent_syncs: args.max_concurrent_syncs,
        ..DaemonOptions::default()
    };
    if let Some(id) = &args.daemon_id {
        options.id = id.clone();
    }
    let store = cluster.store().clone();
    let site_name = rbdx_mirror::site::name(&store, true).await?;
    let started = Started {
        daemon_id: options.id.clone(),
        site_name,
        pid: std::process::id(),
    };
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| CliError::io("cannot handle SIGTERM", e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CliError::io("cannot handle SIGINT", e))?;
    let daemon = Daemon::new(cluster.clone(), options, Arc::new(GatewayConnector));
    printer.print("daemon", &started, |s| {
        println!(
            "mirror daemon {} running at site {} (pid {})",
            s.daemon_id, s.site_name, s.pid
        )
    });
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("mirror daemon: stopping: finishing what is being applied");
    };
    daemon.run(stop).await?;
    Ok(())
}
