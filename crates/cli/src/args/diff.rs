//! `rbdx export-diff|import-diff|merge-diff` options.

use std::path::PathBuf;

use clap::Args;

use super::common::ImageArg;

/// `rbdx export-diff` options.
#[derive(Debug, Args)]
pub struct ExportDiffArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Output file, or `-` for standard output.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// The snapshot the diff starts from (default: the image's creation).
    #[arg(long = "from-snap", value_name = "SNAP")]
    pub from_snap: Option<String>,
    /// Diff whole objects (from the object maps alone).
    #[arg(long = "whole-object")]
    pub whole_object: bool,
}

/// `rbdx import-diff` options.
#[derive(Debug, Args)]
pub struct ImportDiffArgs {
    /// The diff file, or `-` for standard input.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub image: ImageArg,
    /// Blocks of this size that are all zeros are zeroed rather than written.
    #[arg(long = "sparse-size", default_value = "4K", value_name = "SIZE")]
    pub sparse_size: String,
}

/// `rbdx merge-diff` options.
#[derive(Debug, Args)]
pub struct MergeDiffArgs {
    /// The first diff (A to B), or `-` for standard input.
    #[arg(value_name = "FIRST")]
    pub first: PathBuf,
    /// The second diff (B to C).
    #[arg(value_name = "SECOND")]
    pub second: PathBuf,
    /// The merged diff (A to C), or `-` for standard output.
    #[arg(value_name = "MERGED")]
    pub merged: PathBuf,
}
