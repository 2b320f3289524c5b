//! Command-line syntax. Global options may come before or after the command, as with `rbd`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::image_args::{
    BenchArgs, CreateArgs, DestArg, ExportArgs, ExportDiffArgs, FeatureCommand, ImageArg,
    ImportArgs, ImportDiffArgs, LockCommand, MergeDiffArgs, MetaCommand, MigrationCommand,
    NamespaceCommand, NbdCommand, ObjectMapCommand, PoolArg, SnapCommand, SourceCommand,
    TrashCommand,
};
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
        command: crate::commands::journal::JournalCommand,
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

/// `rbdx pool ...`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Prepare a pool for images.
    Init {
        /// Pool name (default `rbd`).
        name: Option<String>,
    },
    /// Create a pool.
    Create {
        /// Pool name.
        name: String,
    },
    /// List pools with their numeric ids.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a pool and every object in it.
    #[command(visible_alias = "remove", visible_alias = "delete")]
    Rm {
        /// Pool name.
        name: String,
        /// Confirm that everything in the pool is to be deleted.
        #[arg(long = "yes-i-really-really-mean-it")]
        confirm: bool,
    },
}

/// `rbdx config-key ...`
#[derive(Debug, Subcommand)]
pub enum ConfigKeyCommand {
    /// Set a key to a value given inline or read from a file (`-i FILE`, `-` for stdin).
    Set {
        /// Key.
        key: String,
        /// Value.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(
            short = 'i',
            long = "in-file",
            value_name = "FILE",
            conflicts_with = "value"
        )]
        in_file: Option<PathBuf>,
    },
    /// Print a key's value (or write it to `-o FILE`).
    Get {
        /// Key.
        key: String,
        /// Write the value to this file.
        #[arg(short = 'o', long = "out-file", value_name = "FILE")]
        out_file: Option<PathBuf>,
    },
    /// Remove a key.
    #[command(visible_alias = "del", visible_alias = "remove")]
    Rm {
        /// Key.
        key: String,
    },
    /// List keys.
    #[command(visible_alias = "list")]
    Ls,
    /// Exit 0 if the key exists, 2 if not.
    Exists {
        /// Key.
        key: String,
    },
}

/// `rbdx rados -p POOL ...`
#[derive(Debug, Args)]
pub struct RadosArgs {
    /// Pool.
    #[arg(short = 'p', long = "pool", default_value = "rbd", global = true)]
    pub pool: String,
    /// Namespace inside the pool.
    #[arg(short = 'N', long = "namespace", default_value = "", global = true)]
    pub namespace: String,
    #[command(subcommand)]
    pub command: RadosCommand,
}

/// `rbdx rados ...` object commands.
#[derive(Debug, Subcommand)]
pub enum RadosCommand {
    /// Write an object from a file (`-` for stdin), replacing its content.
    Put {
        /// Object name.
        object: String,
        /// Input file.
        file: PathBuf,
    },
    /// Write an object's content to a file (`-` for stdout).
    Get {
        /// Object name.
        object: String,
        /// Output file.
        file: PathBuf,
    },
    /// Show an object's size, modification time and version.
    Stat {
        /// Object name.
        object: String,
    },
    /// List objects.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove objects.
    #[command(visible_alias = "remove")]
    Rm {
        /// Object names.
        #[arg(required = true)]
        objects: Vec<String>,
    },
    /// Set an omap key of an object.
    Setomapval {
        /// Object name.
        object: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Print an omap value of an object.
    Getomapval {
        /// Object name.
        object: String,
        /// Key.
        key: String,
    },
    /// List the omap of an object.
    Listomapvals {
        /// Object name.
        object: String,
    },
    /// Remove an omap key of an object.
    Rmomapkey {
        /// Object name.
        object: String,
        /// Key.
        key: String,
    },
    /// List the clients watching an object.
    Listwatchers {
        /// Object name.
        object: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
