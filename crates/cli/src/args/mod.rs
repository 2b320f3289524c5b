//! Command-line syntax, one module per command group. Global options may come before or
//! after the command, as with `rbd` (and so may a command's own options: see `crate::argv`).

mod cluster;
mod common;
mod copy;
mod diff;
mod gateway;
mod image;
mod journal;
mod maintenance;
mod migration;
mod mirror;
mod nbd;
mod snap;
mod source;
mod trash;

pub use cluster::{ConfigKeyCommand, PoolCommand, RadosArgs, RadosCommand};
pub use common::{DestArg, ImageArg, PoolArg};
pub use copy::{CopyArgs, DeepCommand};
pub use diff::{ExportDiffArgs, ImportDiffArgs, MergeDiffArgs};
pub use gateway::{GatewayCommand, GatewayServeArgs, KeyCommand};
pub use image::{BenchArgs, CreateArgs, ExportArgs, ImportArgs, IoPattern, IoType};
pub use journal::{ClientCommand, JournalCommand, JournalImportArgs};
pub use maintenance::{
    FeatureCommand, LockCommand, MetaCommand, NamespaceCommand, ObjectMapCommand,
};
pub use migration::{MigrationCommand, PrepareArgs};
pub use mirror::{
    BootstrapCommand, MirrorCommand, MirrorDaemonArgs, MirrorImageCommand, MirrorPeerCommand,
    MirrorPoolCommand, MirrorSnapshotCommand, MirrorVerifyArgs, ScheduleCommand, ScheduleLevel,
    VerifyOptions,
};
pub use nbd::{NbdCommand, NbdServeArgs};
pub use snap::{LimitCommand, SnapCommand};
pub use source::{SourceCommand, SourceSpecArg};
pub use trash::TrashCommand;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// What `--version` prints: the version, then whether the rados backend is built in (a build
/// without it answers `--ceph-conf` with exit 95).
#[cfg(feature = "rados")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\nrados: yes");
/// What `--version` prints: the version, then whether the rados backend is built in (a build
/// without it answers `--ceph-conf` with exit 95).
#[cfg(not(feature = "rados"))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\nrados: no");

/// Block images on an object store, moved between pools and sites while in use.
#[derive(Debug, Parser)]
#[command(name = "rbdx", version = VERSION, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Directory of the embedded store (default: `~/.local/share/rbdx/<cluster>`).
    #[arg(long, global = true, env = "RBDX_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster name: selects `~/.config/rbdx/<NAME>.conf` or `/etc/rbdx/<NAME>.conf` if one
    /// exists, else the embedded store `~/.local/share/rbdx/<NAME>`.
    #[arg(long, global = true, default_value = "ceph", value_name = "NAME")]
    pub cluster: String,
    /// An rbdx config file (its `[cluster]` section names the backend), or a `ceph.conf`.
    #[arg(short = 'c', long = "conf", global = true, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Use the Ceph cluster this `ceph.conf` describes (the rados backend).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "conf")]
    pub ceph_conf: Option<PathBuf>,
    /// Ceph user id, without `client.` (as `rbd --id`).
    #[arg(long, global = true, value_name = "ID")]
    pub id: Option<String>,
    /// Ceph user name, e.g. `client.admin` (as `rbd --name`).
    #[arg(
        short = 'n',
        long = "name",
        global = true,
        value_name = "NAME",
        conflicts_with = "id"
    )]
    pub user_name: Option<String>,
    /// Keyring holding the Ceph user's key (default: what the `ceph.conf` names).
    #[arg(long, global = true, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Output format of listing and info commands.
    #[arg(long, global = true, value_enum, default_value = "plain")]
    pub format: Format,
    /// Indent JSON output.
    #[arg(long, global = true)]
    pub pretty_format: bool,
    /// Load stream plugins (shared libraries) from this directory.
    #[arg(long, global = true, env = "RBDX_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Log more on standard error: `-v` info, `-vv` debug, `-vvv` trace (`RBDX_LOG` overrides).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Do not show progress on long operations.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an image.
    Create {
        #[command(flatten)]
        image: ImageArg,
        /// Size (a bare number counts MiB, as with `rbd`), e.g. `10G`.
        #[arg(short = 's', long = "size", value_name = "SIZE")]
        size: String,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// List the images of a pool.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        pool: PoolArg,
        /// Show size, parent, format, protection and lock of each image and snapshot.
        #[arg(short = 'l', long = "long")]
        long: bool,
    },
    /// Show an image's (or snapshot's) size, layout, features and times.
    Info(ImageArg),
    /// Remove an image and its data.
    #[command(visible_alias = "remove")]
    Rm(ImageArg),
    /// Change an image's size.
    Resize {
        #[command(flatten)]
        image: ImageArg,
        /// The new size.
        #[arg(short = 's', long = "size", value_name = "SIZE")]
        size: String,
        /// Allow making the image smaller (the data past the new end is lost).
        #[arg(long = "allow-shrink")]
        allow_shrink: bool,
    },
    /// Rename an image (within its pool and namespace).
    #[command(visible_alias = "mv")]
    Rename {
        #[command(flatten)]
        src: ImageArg,
        /// The new name (same pool and namespace).
        #[command(flatten)]
        dest: DestArg,
    },
    /// Show the clients that have an image open.
    Status(ImageArg),
    /// Create a clone of a snapshot (protected, unless the clone is of format 2).
    Clone {
        #[command(flatten)]
        parent: ImageArg,
        /// The clone.
        #[command(flatten)]
        dest: DestArg,
        #[command(flatten)]
        create: CreateArgs,
        /// Clone format: 1 (the snapshot must be protected), 2 (no protection needed; a
        /// removed parent snapshot waits in the trash for its clones) or auto (1). Default:
        /// the config's `rbd_default_clone_format`, else auto.
        #[arg(long = "rbd-default-clone-format", value_name = "1|2|auto")]
        clone_format: Option<String>,
    },
    /// Copy all data from the parent into a clone and detach it.
    Flatten(ImageArg),
    /// Copy an image's head (with its parent's data) into a new image, in this cluster or
    /// another.
    #[command(visible_alias = "copy")]
    Cp(CopyArgs),
    /// Deep copies: an image with every snapshot.
    Deep {
        #[command(subcommand)]
        command: DeepCommand,
    },
    /// List the clones of a snapshot.
    Children(ImageArg),
    /// Enable or disable image features.
    Feature {
        #[command(subcommand)]
        command: FeatureCommand,
    },
    /// Check or rebuild object maps.
    #[command(name = "object-map")]
    ObjectMap {
        #[command(subcommand)]
        command: ObjectMapCommand,
    },
    /// Show or break image locks.
    Lock {
        #[command(subcommand)]
        command: LockCommand,
    },
    /// Inspect and read import sources (files, HTTP, S3, NBD; raw, qcow, native).
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Move an image to another pool, namespace or layout, or import one, while it is used.
    Migration {
        #[command(subcommand)]
        command: MigrationCommand,
    },
    /// Inspect and manage the write journal of an image with the journaling feature.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Serve this site's store to other sites on one TLS port, and manage its keys.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Mirror images to another site: pools, peers, images, schedules, and the daemon.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// Serve images over NBD to qemu, libnbd tools and the kernel, during migration too.
    Nbd {
        #[command(subcommand)]
        command: NbdCommand,
    },
    /// Move images to the trash, restore them, or remove them for good.
    Trash {
        #[command(subcommand)]
        command: TrashCommand,
    },
    /// Show provisioned and used space of images and snapshots.
    Du {
        /// Image spec (default: every image of the pool).
        #[arg(value_name = "IMAGE_SPEC")]
        spec: Option<String>,
        #[command(flatten)]
        opts: crate::spec::SpecOptions,
    },
    /// List the extents that changed since a snapshot (or since creation).
    Diff {
        #[command(flatten)]
        image: ImageArg,
        /// The older snapshot (default: the image's creation).
        #[arg(long = "from-snap", value_name = "SNAP")]
        from_snap: Option<String>,
        /// Report whole objects (from the object maps alone, faster) instead of exact ranges.
        #[arg(long = "whole-object")]
        whole_object: bool,
    },
    /// Snapshots of an image.
    Snap {
        #[command(subcommand)]
        command: SnapCommand,
    },
    /// Key/value metadata of an image.
    #[command(name = "image-meta")]
    ImageMeta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// Write an image's bytes to a file or standard output.
    Export(ExportArgs),
    /// Create an image from a file or standard input.
    Import(ImportArgs),
    /// Write the changes since a snapshot (or creation) as an `rbd diff v1` stream.
    #[command(name = "export-diff")]
    ExportDiff(ExportDiffArgs),
    /// Apply a diff stream to an image and create its end snapshot.
    #[command(name = "import-diff")]
    ImportDiff(ImportDiffArgs),
    /// Merge two consecutive diffs into one.
    #[command(name = "merge-diff")]
    MergeDiff(MergeDiffArgs),
    /// Measure image I/O.
    Bench(BenchArgs),
    /// Namespaces of a pool.
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Create, list and remove pools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Store secrets and other small values in the cluster's config-key store.
    #[command(name = "config-key")]
    ConfigKey {
        #[command(subcommand)]
        command: ConfigKeyCommand,
    },
    /// Read and write raw objects, like Ceph's `rados` tool.
    Rados(RadosArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
