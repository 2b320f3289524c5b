//! `rbdx gateway ...`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `rbdx gateway ...`
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve the store the global options select to other sites, on one TLS port, until
    /// SIGTERM or SIGINT.
    Serve(GatewayServeArgs),
    /// Manage the keys that clients of the gateway authenticate with.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// `rbdx gateway serve`.
#[derive(Debug, Args)]
pub struct GatewayServeArgs {
    /// TCP address to listen on (port 0 picks a free one).
    #[arg(
        long = "bind",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:7000"
    )]
    pub bind: String,
    /// Certificate chain to present (PEM); without it the gateway makes a self-signed
    /// certificate once and keeps it in the store.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `--tls-cert` (PEM).
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most bytes per second sent to each client, e.g. `100M`.
    #[arg(long = "bandwidth-limit", value_name = "BYTES")]
    pub bandwidth_limit: Option<String>,
    /// Seconds a session whose connection dropped is kept for its client to resume.
    #[arg(long = "session-grace", value_name = "SECONDS", default_value_t = 30)]
    pub session_grace: u64,
}

/// `rbdx gateway key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a key and print a client config file that uses it.
    Create {
        /// The key's name (`client.` is added if it has no dot).
        #[arg(value_name = "NAME")]
        name: String,
        /// What the key may do.
        #[arg(long = "profile", value_name = "PROFILE", value_parser = ["rw", "ro", "mirror-peer"])]
        profile: String,
        /// Limit the key to this pool (repeat for several).
        #[arg(long = "pool", value_name = "POOL")]
        pools: Vec<String>,
        /// The address clients reach the gateway at (default: where it last served).
        #[arg(long = "endpoint", value_name = "HOST:PORT")]
        endpoint: Option<String>,
    },
    /// List the keys (never their secrets).
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a key; its open sessions are cut.
    #[command(visible_alias = "remove")]
    Rm {
        /// The key's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}
