//! `rbdx snap ...`.

use clap::Subcommand;

use super::common::ImageArg;

/// `rbdx snap ...`
#[derive(Debug, Subcommand)]
pub enum SnapCommand {
    /// Create a snapshot.
    #[command(visible_alias = "add")]
    Create(ImageArg),
    /// List the snapshots of an image.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        image: ImageArg,
        /// Also list snapshots in the trash namespace (kept for format 2 clones), with a
        /// NAMESPACE column.
        #[arg(short = 'a', long = "all")]
        all: bool,
    },
    /// Remove a snapshot.
    #[command(visible_alias = "remove")]
    Rm(ImageArg),
    /// Rename a snapshot: `snap rename img@old img@new` (or just `new`).
    Rename {
        #[command(flatten)]
        src: ImageArg,
        /// New snapshot spec or name.
        #[arg(value_name = "DEST_SNAP_SPEC")]
        dest: Option<String>,
        /// New snapshot name.
        #[arg(long = "dest-snap", value_name = "SNAP")]
        dest_snap: Option<String>,
    },
    /// Roll the image back to a snapshot.
    #[command(visible_alias = "revert")]
    Rollback(ImageArg),
    /// Protect a snapshot from removal, so that it can be cloned.
    Protect(ImageArg),
    /// Unprotect a snapshot (refused while it has clones).
    Unprotect(ImageArg),
    /// Remove every unprotected snapshot of an image.
    Purge(ImageArg),
    /// Limit the number of snapshots.
    Limit {
        #[command(subcommand)]
        command: LimitCommand,
    },
}

/// `rbdx snap limit ...`
#[derive(Debug, Subcommand)]
pub enum LimitCommand {
    /// Set the maximum number of snapshots.
    Set {
        #[command(flatten)]
        image: ImageArg,
        /// The maximum.
        #[arg(long = "limit", value_name = "N")]
        limit: u64,
    },
    /// Remove the limit.
    Clear(ImageArg),
}
