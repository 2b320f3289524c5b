//! `rbdx migration ...`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::ImageArg;
use super::image::CreateArgs;

/// `rbdx migration prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The source image spec (`pool/[namespace/]image`; with `--import-only`,
    /// `pool/image@snap` of a native source, or the destination when a source spec is given).
    #[arg(value_name = "SOURCE_IMAGE_SPEC")]
    pub source: Option<String>,
    /// The destination image spec (default: the source's, to change only the layout).
    #[arg(value_name = "DEST_IMAGE_SPEC")]
    pub dest: Option<String>,
    /// Import from an external source (`--source-spec`, or a native image at a snapshot).
    #[arg(long = "import-only")]
    pub import_only: bool,
    /// The source spec as JSON (with `--import-only`).
    #[arg(
        long = "source-spec",
        value_name = "JSON",
        conflicts_with = "source_spec_path"
    )]
    pub source_spec: Option<String>,
    /// A file holding the source spec, or `-` for standard input (with `--import-only`).
    #[arg(long = "source-spec-path", value_name = "FILE")]
    pub source_spec_path: Option<PathBuf>,
    /// Copy the source's parent data instead of keeping the parent.
    #[arg(long = "flatten")]
    pub flatten: bool,
    /// Print what would be created and change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Create the destination in this other cluster (another site, reached through its
    /// gateway): a live migration between sites.
    #[arg(
        long = "dest-cluster",
        value_name = "NAME",
        conflicts_with = "source_cluster"
    )]
    pub dest_cluster: Option<String>,
    /// The source is in this other cluster (another site): a live migration between sites,
    /// prepared where the destination is.
    #[arg(long = "source-cluster", value_name = "NAME")]
    pub source_cluster: Option<String>,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `rbdx migration ...`
#[derive(Debug, Subcommand)]
pub enum MigrationCommand {
    /// Create the destination, linked to the source (usable at once).
    Prepare(PrepareArgs),
    /// Copy every block to the destination in the background (resumable).
    Execute {
        #[command(flatten)]
        image: ImageArg,
        /// At most this many bytes per second, e.g. `100M`.
        #[arg(long = "bandwidth-limit", value_name = "BYTES")]
        bandwidth_limit: Option<String>,
        /// Objects copied at once.
        #[arg(long = "concurrency", value_name = "N")]
        concurrency: Option<usize>,
    },
    /// Finish the migration: unlink and delete the source.
    Commit {
        #[command(flatten)]
        image: ImageArg,
        /// Proceed even if the source has clones (they move to the destination).
        #[arg(long = "force")]
        force: bool,
    },
    /// Undo the migration: delete the destination and restore the source.
    Abort {
        #[command(flatten)]
        image: ImageArg,
    },
    /// Compare the destination with its source at the head and every snapshot.
    Verify {
        #[command(flatten)]
        image: ImageArg,
    },
}
