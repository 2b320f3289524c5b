//! `rbdx journal ...`.

use clap::{Args, Subcommand};

use super::common::ImageArg;

/// `rbdx journal ...`
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Show the journal's layout.
    Info(ImageArg),
    /// Show the object sets in use and the registered clients with their positions.
    Status(ImageArg),
    /// Read every entry and check it; count the events by type (`--verbose`: print every
    /// entry).
    Inspect(ImageArg),
    /// Write the journal's entries to a file or standard output.
    Export {
        #[command(flatten)]
        image: ImageArg,
        /// Output file, or `-` for standard output.
        #[arg(value_name = "PATH")]
        path: Option<std::path::PathBuf>,
    },
    /// Append the events of an exported journal to an image's journal, and apply them.
    Import(JournalImportArgs),
    /// Empty the journal as rbd does: journaling off and on again under the image's lock
    /// (pending entries are applied first); the layout stays, other clients are dropped.
    Reset(ImageArg),
    /// Journal clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
}

/// `rbdx journal import`.
#[derive(Debug, Args)]
pub struct JournalImportArgs {
    /// The exported journal, or `-` for standard input.
    #[arg(value_name = "PATH")]
    pub path: std::path::PathBuf,
    #[command(flatten)]
    pub image: ImageArg,
}

/// `rbdx journal client ...`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Mark a client disconnected, so that trimming no longer waits for it.
    Disconnect {
        #[command(flatten)]
        image: ImageArg,
        /// The client id (as `journal status` shows it); without it, every client but the
        /// image's own is disconnected.
        #[arg(long = "client-id", value_name = "ID")]
        client_id: Option<String>,
    },
}
