//! `rbdx pool|config-key|rados ...`: the cluster and its raw objects.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `rbdx pool ...`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Prepare a pool for images.
    Init {
        /// Pool name (default `rbd`).
        name: Option<String>,
    },
    /// Create a pool.
    Create {
        /// Pool name.
        name: String,
    },
    /// List pools with their numeric ids.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a pool and every object in it.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// Pool name.
        name: String,
        /// Confirm that everything in the pool is to be deleted.
        #[arg(long = "yes-i-really-really-mean-it")]
        confirm: bool,
    },
}

/// `rbdx config-key ...`
#[derive(Debug, Subcommand)]
pub enum ConfigKeyCommand {
    /// Set a key to a value given inline or read from a file (`-i FILE`, `-` for stdin).
    Set {
        /// Key.
        key: String,
        /// Value.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(
            short = 'i',
            long = "in-file",
            value_name = "FILE",
            conflicts_with = "value"
        )]
        in_file: Option<PathBuf>,
    },
    /// Print a key's value (or write it to `-o FILE`).
    Get {
        /// Key.
        key: String,
        /// Write the value to this file.
        #[arg(short = 'o', long = "out-file", value_name = "FILE")]
        out_file: Option<PathBuf>,
    },
    /// Remove a key.
    #[command(visible_alias = "del", visible_alias = "remove")]
    Rm {
        /// Key.
        key: String,
    },
    /// List keys.
    #[command(visible_alias = "list")]
    Ls,
    /// Exit 0 if the key exists, 2 if not.
    Exists {
        /// Key.
        key: String,
    },
}

/// `rbdx rados -p POOL ...`
#[derive(Debug, Args)]
pub struct RadosArgs {
    /// Pool.
    #[arg(short = 'p', long = "pool", default_value = "rbd", global = true)]
    pub pool: String,
    /// Namespace inside the pool.
    #[arg(short = 'N', long = "namespace", default_value = "", global = true)]
    pub namespace: String,
    #[command(subcommand)]
    pub command: RadosCommand,
}

/// `rbdx rados ...` object commands.
#[derive(Debug, Subcommand)]
pub enum RadosCommand {
    /// Write an object from a file (`-` for stdin), replacing its content.
    Put {
        /// Object name.
        object: String,
        /// Input file.
        file: PathBuf,
    },
    /// Write an object's content to a file (`-` for stdout).
    Get {
        /// Object name.
        object: String,
        /// Output file.
        file: PathBuf,
    },
    /// Show an object's size, modification time and version.
    Stat {
        /// Object name.
        object: String,
    },
    /// List objects.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove objects.
    #[command(visible_alias = "remove")]
    Rm {
        /// Object names.
        #[arg(required = true)]
        objects: Vec<String>,
    },
    /// Set an omap key of an object.
    Setomapval {
        /// Object name.
        object: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Print an omap value of an object.
    Getomapval {
        /// Object name.
        object: String,
        /// Key.
        key: String,
    },
    /// List the omap of an object.
    Listomapvals {
        /// Object name.
        object: String,
    },
    /// Remove an omap key of an object.
    Rmomapkey {
        /// Object name.
        object: String,
        /// Key.
        key: String,
    },
    /// List the clients watching an object.
    Listwatchers {
        /// Object name.
        object: String,
    },
}
