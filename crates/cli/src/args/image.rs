//! `rbdx create|clone|import|export|bench` options.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::common::ImageArg;

/// Layout and feature options of `create` (and `import`).
#[derive(Debug, Clone, Default, Args)]
pub struct CreateArgs {
    /// Object size (4K to 32M, a power of two), e.g. `4M`.
    #[arg(long = "object-size", value_name = "SIZE", conflicts_with = "order")]
    pub object_size: Option<String>,
    /// Object order: objects are 2^ORDER bytes (12 to 25).
    #[arg(long = "order", value_name = "ORDER")]
    pub order: Option<u8>,
    /// Image features, repeated or comma-separated (layering, exclusive-lock, object-map,
    /// fast-diff, deep-flatten).
    #[arg(long = "image-feature", value_name = "FEATURE")]
    pub image_feature: Vec<String>,
    /// Pool for the data objects.
    #[arg(long = "data-pool", value_name = "POOL")]
    pub data_pool: Option<String>,
    /// Stripe unit, e.g. `64K`.
    #[arg(long = "stripe-unit", value_name = "SIZE")]
    pub stripe_unit: Option<String>,
    /// Stripe count.
    #[arg(long = "stripe-count", value_name = "COUNT")]
    pub stripe_count: Option<u64>,
    /// Size of the journal's data objects (4K to 64M, a power of two), with journaling.
    #[arg(long = "journal-object-size", value_name = "SIZE")]
    pub journal_object_size: Option<String>,
    /// Number of journal data objects written round-robin, with journaling.
    #[arg(long = "journal-splay-width", value_name = "COUNT")]
    pub journal_splay_width: Option<u64>,
    /// Pool for the journal's data objects, with journaling.
    #[arg(long = "journal-pool", value_name = "POOL")]
    pub journal_pool: Option<String>,
}

/// What `bench` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoType {
    /// Reads only.
    Read,
    /// Writes only.
    Write,
    /// Both, by `--rw-mix-read` percent.
    Readwrite,
    /// Both (as `readwrite`).
    Rw,
}

/// The order of `bench` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoPattern {
    /// Sequential.
    Seq,
    /// Random.
    Rand,
}

/// `rbdx bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// What to do.
    #[arg(long = "io-type", value_enum)]
    pub io_type: IoType,
    /// Size of each operation.
    #[arg(long = "io-size", default_value = "4K", value_name = "SIZE")]
    pub io_size: String,
    /// Operations in flight.
    #[arg(long = "io-threads", default_value_t = 16, value_name = "N")]
    pub io_threads: usize,
    /// Total bytes to transfer.
    #[arg(long = "io-total", default_value = "1G", value_name = "SIZE")]
    pub io_total: String,
    /// Sequential or random offsets.
    #[arg(long = "io-pattern", value_enum, default_value = "seq")]
    pub io_pattern: IoPattern,
    /// Percent of reads for `readwrite`.
    #[arg(long = "rw-mix-read", default_value_t = 50, value_name = "PERCENT")]
    pub rw_mix_read: u8,
}

/// `rbdx export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Output file, or `-` for standard output.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Export format (1: the raw bytes; 2: layout, metadata and every snapshot).
    #[arg(long = "export-format", default_value_t = 1)]
    pub export_format: u8,
}

/// `rbdx import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Input file, or `-` for standard input.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Image spec of the new image (default: the file name).
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: Option<String>,
    /// Pool of the new image.
    #[arg(
        short = 'p',
        long = "pool",
        visible_alias = "dest-pool",
        value_name = "POOL"
    )]
    pub pool: Option<String>,
    /// Namespace of the new image.
    #[arg(
        long = "namespace",
        visible_alias = "dest-namespace",
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,
    /// Name of the new image.
    #[arg(long = "image", visible_alias = "dest", value_name = "IMAGE")]
    pub image: Option<String>,
    #[command(flatten)]
    pub create: CreateArgs,
    /// Import format (1: the raw bytes; 2: what `export --export-format 2` writes).
    #[arg(long = "export-format", default_value_t = 1)]
    pub export_format: u8,
    /// Blocks of this size that are all zeros are not written.
    #[arg(long = "sparse-size", default_value = "4K", value_name = "SIZE")]
    pub sparse_size: String,
}
