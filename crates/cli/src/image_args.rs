//! Syntax of the image commands, as `rbd` spells them.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::spec::SpecOptions;

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

/// An image spec argument with its options.
#[derive(Debug, Clone, Args)]
pub struct ImageArg {
    /// Image spec: `[pool/[namespace/]]image`.
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: Option<String>,
    #[command(flatten)]
    pub opts: SpecOptions,
}

/// The destination image of `rename` and `clone`: a spec and/or the `--dest-*` options.
#[derive(Debug, Clone, Args)]
pub struct DestArg {
    /// The destination image spec.
    #[arg(value_name = "DEST_IMAGE_SPEC")]
    pub dest_spec: Option<String>,
    /// The destination pool.
    #[arg(long = "dest-pool", value_name = "POOL")]
    pub dest_pool: Option<String>,
    /// The destination namespace.
    #[arg(long = "dest-namespace", value_name = "NAMESPACE")]
    pub dest_namespace: Option<String>,
    /// The destination image name.
    #[arg(long = "dest", value_name = "IMAGE")]
    pub dest_image: Option<String>,
}

impl DestArg {
    /// Returns the options part as spec options.
    pub fn options(&self) -> SpecOptions {
        SpecOptions {
            pool: self.dest_pool.clone(),
            namespace: self.dest_namespace.clone(),
            image: self.dest_image.clone(),
            snap: None,
        }
    }
}

/// An image spec argument that must be given positionally (commands with more positional
/// arguments after it).
#[derive(Debug, Clone, Args)]
pub struct RequiredImageArg {
    /// Image spec: `[pool/[namespace/]]image`.
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: String,
    #[command(flatten)]
    pub opts: SpecOptions,
}

impl RequiredImageArg {
    /// Returns the equivalent optional-spec argument.
    pub fn to_arg(&self) -> ImageArg {
        ImageArg {
            spec: Some(self.spec.clone()),
            opts: self.opts.clone(),
        }
    }
}

/// A trashed image named by id, as `rbd` takes it: `[pool/[namespace/]]image-id` or the
/// `--pool`, `--namespace` and `--image-id` options.
#[derive(Debug, Clone, Args)]
pub struct ImageIdArg {
    /// Image id spec: `[pool/[namespace/]]image-id` (`trash ls` shows the id).
    #[arg(value_name = "IMAGE_ID_SPEC")]
    pub spec: Option<String>,
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The image id.
    #[arg(long = "image-id", value_name = "IMAGE_ID")]
    pub image_id: Option<String>,
}

impl ImageIdArg {
    /// Resolves the spec and options into a pool, namespace and image id.
    pub fn resolve(&self) -> crate::error::CliResult<crate::spec::ImageIdSpec> {
        crate::spec::resolve_image_id(
            self.spec.as_deref(),
            &self.pool,
            &self.namespace,
            &self.image_id,
        )
    }
}

/// A pool spec argument with its options.
#[derive(Debug, Clone, Args)]
pub struct PoolArg {
    /// Pool spec: `pool[/namespace]`.
    #[arg(value_name = "POOL_SPEC")]
    pub spec: Option<String>,
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

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

/// `rbdx trash ...`
#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// Move an image to the trash.
    #[command(visible_alias = "move")]
    Mv {
        #[command(flatten)]
        image: ImageArg,
        /// Keep it from removal until this time from now, e.g. `30m`, `2h`, `7d` or seconds.
        #[arg(long = "expires-at", value_name = "DELAY")]
        expires_at: Option<String>,
    },
    /// List the images in the trash.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        pool: PoolArg,
        /// Also list images moved there by migrations.
        #[arg(short = 'a', long = "all")]
        all: bool,
        /// Show source, deletion time and status.
        #[arg(short = 'l', long = "long")]
        long: bool,
    },
    /// Restore an image from the trash.
    Restore {
        #[command(flatten)]
        image: ImageIdArg,
        /// Restore under this name.
        #[arg(long = "image", value_name = "IMAGE")]
        name: Option<String>,
    },
    /// Remove an image from the trash, with its data.
    #[command(visible_alias = "remove")]
    Rm {
        #[command(flatten)]
        image: ImageIdArg,
        /// Remove even before the deferment time.
        #[arg(long = "force")]
        force: bool,
    },
    /// Remove every image whose deferment time has passed.
    Purge {
        #[command(flatten)]
        pool: PoolArg,
    },
}

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

/// `rbdx nbd ...`
#[derive(Debug, Subcommand)]
pub enum NbdCommand {
    /// Serve images (one export per image spec) until SIGTERM or SIGINT.
    Serve(NbdServeArgs),
}

/// `rbdx nbd serve`.
#[derive(Debug, Args)]
pub struct NbdServeArgs {
    /// Images to serve, `[pool/[namespace/]]image[@snap]`; the export name is the full spec
    /// (`pool/image`, `pool/namespace/image@snap`), and snapshots are served read-only.
    #[arg(value_name = "IMAGE_SPEC", required = true)]
    pub images: Vec<String>,
    /// TCP address to listen on (port 0 picks a free one).
    #[arg(
        long = "bind",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:10809",
        conflicts_with = "socket"
    )]
    pub bind: String,
    /// Listen on this unix socket instead of TCP.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    /// Refuse writes on every export.
    #[arg(long = "read-only")]
    pub read_only: bool,
}
