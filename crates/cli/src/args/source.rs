//! `rbdx source ...` and the source-spec options.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where a source spec comes from.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct SourceSpecArg {
    /// The source spec as JSON.
    #[arg(long = "source-spec", value_name = "JSON")]
    pub source_spec: Option<String>,
    /// A file holding the source spec, or `-` for standard input.
    #[arg(long = "source-spec-path", value_name = "FILE")]
    pub source_spec_path: Option<PathBuf>,
}

/// `rbdx source ...`
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Open a source and show its format, size, snapshots and allocated bytes.
    Probe {
        #[command(flatten)]
        spec: SourceSpecArg,
    },
    /// Write the raw bytes of a source's head (or one snapshot) to a file or `-`.
    Export {
        #[command(flatten)]
        spec: SourceSpecArg,
        /// The snapshot to export (default: the head).
        #[arg(long = "snap", value_name = "NAME")]
        snap: Option<String>,
        /// Output file, or `-` for standard output.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}
