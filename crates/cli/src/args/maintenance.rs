//! `rbdx image-meta|namespace|feature|object-map|lock ...`.

use clap::Subcommand;

use super::common::{ImageArg, PoolArg, RequiredImageArg};

/// `rbdx image-meta ...`
#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Set a metadata key.
    Set {
        #[command(flatten)]
        image: RequiredImageArg,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Print a metadata value.
    Get {
        #[command(flatten)]
        image: RequiredImageArg,
        /// Key.
        key: String,
    },
    /// List metadata.
    #[command(visible_alias = "list")]
    Ls(ImageArg),
    /// Remove a metadata key.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        image: RequiredImageArg,
        /// Key.
        key: String,
    },
}

/// `rbdx namespace ...`
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace in a pool.
    Create(PoolArg),
    /// List the namespaces of a pool.
    #[command(visible_alias = "list")]
    Ls(PoolArg),
    /// Remove an empty namespace.
    #[command(visible_alias = "remove")]
    Rm(PoolArg),
}

/// `rbdx feature ...`
#[derive(Debug, Subcommand)]
pub enum FeatureCommand {
    /// Enable features.
    Enable {
        #[command(flatten)]
        image: RequiredImageArg,
        /// Features (exclusive-lock, object-map, fast-diff).
        #[arg(required = true, value_name = "FEATURE")]
        features: Vec<String>,
    },
    /// Disable features.
    Disable {
        #[command(flatten)]
        image: RequiredImageArg,
        /// Features (exclusive-lock, object-map, fast-diff, deep-flatten).
        #[arg(required = true, value_name = "FEATURE")]
        features: Vec<String>,
    },
}

/// `rbdx object-map ...`
#[derive(Debug, Subcommand)]
pub enum ObjectMapCommand {
    /// Rebuild the object maps from the data objects.
    Rebuild(ImageArg),
    /// Verify the object maps; flags them invalid if they are wrong.
    Check(ImageArg),
}

/// `rbdx lock ...`
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// List the locks held on an image.
    #[command(visible_alias = "list")]
    Ls(ImageArg),
    /// Break another client's lock.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        image: RequiredImageArg,
        /// The lock id (cookie), as `lock ls` shows it.
        #[arg(value_name = "LOCK_ID")]
        lock_id: String,
        /// The locker, e.g. `client.4123`.
        #[arg(value_name = "LOCKER")]
        locker: String,
    },
}
