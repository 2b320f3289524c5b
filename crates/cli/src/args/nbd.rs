//! `rbdx nbd ...`.

use clap::{Args, Subcommand};

/// `rbdx nbd ...`
#[derive(Debug, Subcommand)]
pub enum NbdCommand {
    /// Serve images (one export per image spec) until SIGTERM or SIGINT.
    Serve(NbdServeArgs),
}

/// `rbdx nbd serve`.
#[derive(Debug, Args)]
pub struct NbdServeArgs {
    /// Images to serve, `[pool/[namespace/]]image[@snap]`; the export name is the full spec
    /// (`pool/image`, `pool/namespace/image@snap`), and snapshots are served read-only.
    #[arg(value_name = "IMAGE_SPEC", required = true)]
    pub images: Vec<String>,
    /// TCP address to listen on (port 0 picks a free one).
    #[arg(
        long = "bind",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:10809",
        conflicts_with = "socket"
    )]
    pub bind: String,
    /// Listen on this unix socket instead of TCP.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    /// Refuse writes on every export.
    #[arg(long = "read-only")]
    pub read_only: bool,
}
