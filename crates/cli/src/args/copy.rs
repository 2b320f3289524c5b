//! `rbdx cp` and `rbdx deep cp`.

use clap::{Args, Subcommand};

use super::common::{DestArg, ImageArg};
use super::image::CreateArgs;

/// What `cp` and `deep cp` take.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The source image.
    #[command(flatten)]
    pub src: ImageArg,
    /// The copy.
    #[command(flatten)]
    pub dest: DestArg,
    #[command(flatten)]
    pub create: CreateArgs,
    /// Make the copy in this other cluster (named as `--cluster` names one; `--data-dir` and
    /// `RBDX_DATA_DIR` keep naming the source's store).
    #[arg(long = "dest-cluster", value_name = "NAME")]
    pub dest_cluster: Option<String>,
    /// Copy at most this many bytes per second, e.g. `100M`.
    #[arg(long = "bandwidth-limit", value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
}

/// `rbdx deep ...`
#[derive(Debug, Subcommand)]
pub enum DeepCommand {
    /// Copy an image with all its snapshots (and its parent link, unless `--flatten`).
    #[command(visible_alias = "copy")]
    Cp {
        #[command(flatten)]
        args: CopyArgs,
        /// Copy the data the source's parent provides instead of keeping the parent.
        #[arg(long = "flatten")]
        flatten: bool,
    },
}
