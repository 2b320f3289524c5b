//! `rbdx mirror ...`: `rbd mirror`'s commands, and the mirror daemon.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{ImageArg, PoolArg};

/// A pool spec given before other positional arguments (so it cannot be left out).
#[derive(Debug, Clone, Args)]
pub struct PoolSpecArg {
    /// Pool spec: `pool[/namespace]`.
    #[arg(value_name = "POOL_SPEC")]
    pub spec: String,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

impl PoolSpecArg {
    /// Returns it as a pool argument.
    pub fn to_pool_arg(&self) -> PoolArg {
        PoolArg {
            spec: Some(self.spec.clone()),
            pool: None,
            namespace: self.namespace.clone(),
        }
    }
}

/// `rbdx mirror ...`
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Mirroring of pools: mode, peers, status.
    Pool {
        #[command(subcommand)]
        command: MirrorPoolCommand,
    },
    /// Mirroring of images: enable, promote, demote, status.
    Image {
        #[command(subcommand)]
        command: MirrorImageCommand,
    },
    /// Mirror snapshot schedules (snapshot mode).
    Snapshot {
        #[command(subcommand)]
        command: MirrorSnapshotCommand,
    },
    /// Run the mirror daemon of this site until SIGTERM or SIGINT.
    Daemon(MirrorDaemonArgs),
}

/// `rbdx mirror pool ...`
#[derive(Debug, Subcommand)]
pub enum MirrorPoolCommand {
    /// Enable mirroring of a pool: `image` (images one by one) or `pool` (every journaling
    /// image).
    Enable {
        /// This site's name, as peers see it.
        #[arg(long = "site-name", value_name = "NAME")]
        site_name: Option<String>,
        #[command(flatten)]
        pool: PoolSpecArg,
        /// `image` or `pool`.
        #[arg(value_name = "MODE", value_parser = ["image", "pool"])]
        mode: String,
    },
    /// Disable mirroring of a pool (and of its images).
    Disable(PoolArg),
    /// Show the mode, the site name and the peers.
    Info {
        #[command(flatten)]
        pool: PoolArg,
        /// Also show each peer's endpoint and key.
        #[arg(long = "all")]
        all: bool,
    },
    /// Show the health of the pool's mirroring and its images' states (`--verbose`, the
    /// global option, adds the daemons and one entry per image).
    Status {
        #[command(flatten)]
        pool: PoolArg,
    },
    /// Promote every mirrored image of the pool.
    Promote {
        #[command(flatten)]
        pool: PoolArg,
        /// Promote even if a peer's copy is still primary (split-brain).
        #[arg(long = "force")]
        force: bool,
    },
    /// Demote every primary mirrored image of the pool.
    Demote(PoolArg),
    /// Check every mirrored image of the pool against the peer's copy (exit 1 if any differ).
    Verify {
        #[command(flatten)]
        pool: PoolArg,
        #[command(flatten)]
        check: VerifyOptions,
    },
    /// Peers of the pool.
    Peer {
        #[command(subcommand)]
        command: MirrorPeerCommand,
    },
}

/// `rbdx mirror pool peer ...`
#[derive(Debug, Subcommand)]
pub enum MirrorPeerCommand {
    /// Bootstrap tokens.
    Bootstrap {
        #[command(subcommand)]
        command: BootstrapCommand,
    },
    /// Add a peer by hand.
    Add {
        #[command(flatten)]
        pool: PoolSpecArg,
        /// `client.NAME@SITE`: the key to use at the peer and its site name.
        #[arg(value_name = "REMOTE_CLIENT@SITE")]
        remote: String,
        /// The key's name at the peer (overrides the part before `@`).
        #[arg(long = "remote-client-name", value_name = "NAME")]
        remote_client_name: Option<String>,
        /// The peer's site name (overrides the part after `@`).
        #[arg(long = "remote-cluster", value_name = "SITE")]
        remote_cluster: Option<String>,
        /// The peer's gateway, `HOST:PORT`.
        #[arg(
            long = "remote-endpoint",
            visible_alias = "remote-mon-host",
            value_name = "HOST:PORT"
        )]
        remote_endpoint: Option<String>,
        /// The fingerprint of the peer gateway's certificate.
        #[arg(long = "remote-fingerprint", value_name = "FINGERPRINT")]
        remote_fingerprint: Option<String>,
        /// A file holding the key's secret.
        #[arg(long = "remote-key-file", value_name = "FILE")]
        remote_key_file: Option<PathBuf>,
        /// `rx-only` or `rx-tx`.
        #[arg(long = "direction", value_name = "DIRECTION", default_value = "rx-tx", value_parser = ["rx-only", "rx-tx"])]
        direction: String,
    },
    /// Remove a peer.
    Remove {
        #[command(flatten)]
        pool: PoolSpecArg,
        /// The peer's UUID (`mirror pool info` shows it).
        #[arg(value_name = "UUID")]
        uuid: String,
    },
    /// Change a peer: `direction`, `site-name`, `client`, `mon-host` / `endpoint`,
    /// `fingerprint` or `key-file`.
    Set {
        #[command(flatten)]
        pool: PoolSpecArg,
        /// The peer's UUID.
        #[arg(value_name = "UUID")]
        uuid: String,
        /// What to change.
        #[arg(value_name = "KEY")]
        key: String,
        /// The new value.
        #[arg(value_name = "VALUE")]
        value: String,
    },
}

/// `rbdx mirror pool peer bootstrap ...`
#[derive(Debug, Subcommand)]
pub enum BootstrapCommand {
    /// Print a token that a peer site imports to mirror with this one.
    Create {
        /// This site's name, as peers see it.
        #[arg(long = "site-name", value_name = "NAME")]
        site_name: Option<String>,
        /// The address peers reach this site's gateway at (default: where it serves).
        #[arg(long = "endpoint", value_name = "HOST:PORT")]
        endpoint: Option<String>,
        #[command(flatten)]
        pool: PoolArg,
    },
    /// Import a peer's token.
    Import {
        /// This site's name, as peers see it.
        #[arg(long = "site-name", value_name = "NAME")]
        site_name: Option<String>,
        /// `rx-only` (receive only) or `rx-tx` (both ways).
        #[arg(long = "direction", value_name = "DIRECTION", default_value = "rx-tx", value_parser = ["rx-only", "rx-tx"])]
        direction: String,
        /// For `rx-tx`: the address the peer reaches this site's gateway at.
        #[arg(long = "endpoint", value_name = "HOST:PORT")]
        endpoint: Option<String>,
        #[command(flatten)]
        pool: PoolSpecArg,
        /// The token file, or `-` for standard input.
        #[arg(value_name = "TOKEN_PATH")]
        token: String,
    },
}

/// `rbdx mirror image ...`
#[derive(Debug, Subcommand)]
pub enum MirrorImageCommand {
    /// Enable mirroring of an image, in `journal` (default) or `snapshot` mode.
    Enable {
        #[command(flatten)]
        image: ImageArg,
        /// `journal` or `snapshot`.
        #[arg(value_name = "MODE", value_parser = ["journal", "snapshot"])]
        mode: Option<String>,
    },
    /// Disable mirroring of an image.
    Disable {
        #[command(flatten)]
        image: ImageArg,
        /// Also for a non-primary copy.
        #[arg(long = "force")]
        force: bool,
    },
    /// Make this copy the primary one.
    Promote {
        #[command(flatten)]
        image: ImageArg,
        /// Promote even if the peer's copy is still primary or unreachable (split-brain
        /// when it comes back).
        #[arg(long = "force")]
        force: bool,
        /// Seconds to wait for the peer's demotion to be replayed here.
        #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// Make this primary copy non-primary.
    Demote(ImageArg),
    /// Bring this non-primary copy back in step with the primary: only what changed on either
    /// side since the last point both share, or everything with `--full`.
    Resync {
        #[command(flatten)]
        image: ImageArg,
        /// Replace the whole copy, as `rbd mirror image resync` does.
        #[arg(long = "full")]
        full: bool,
    },
    /// Check that this copy equals the peer's, by digests computed at each site (exit 1 if
    /// they differ).
    Verify(MirrorVerifyArgs),
    /// Show the mirroring state of the image at both sites.
    Status(ImageArg),
    /// Take a mirror snapshot (snapshot mode).
    Snapshot {
        #[command(flatten)]
        image: ImageArg,
        /// Accepted for `rbd` compatibility (rbdx asks no client to quiesce).
        #[arg(long = "skip-quiesce")]
        skip_quiesce: bool,
        /// Accepted for `rbd` compatibility.
        #[arg(long = "ignore-quiesce-error")]
        ignore_quiesce_error: bool,
    },
}

/// Where a schedule applies.
#[derive(Debug, Clone, Args)]
pub struct ScheduleLevel {
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Image name.
    #[arg(long = "image", value_name = "IMAGE")]
    pub image: Option<String>,
}

/// `rbdx mirror snapshot ...`
#[derive(Debug, Subcommand)]
pub enum MirrorSnapshotCommand {
    /// Mirror snapshot schedules, carried out by the mirror daemon of the primary's site.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
}

/// `rbdx mirror snapshot schedule ...`
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: every INTERVAL (`30m`, `6h`, `1d`), from START (ISO 8601 time).
    Add {
        #[command(flatten)]
        level: ScheduleLevel,
        /// `<number>[m|h|d]`.
        #[arg(value_name = "INTERVAL")]
        interval: String,
        /// First time, e.g. `14:00:00-05:00` or `2026-12-01T00:00:00Z`.
        #[arg(value_name = "START_TIME")]
        start: Option<String>,
    },
    /// Remove a schedule (all of the level if no interval is given).
    #[command(visible_alias = "rm")]
    Remove {
        #[command(flatten)]
        level: ScheduleLevel,
        /// `<number>[m|h|d]`.
        #[arg(value_name = "INTERVAL")]
        interval: Option<String>,
        /// The schedule's start time.
        #[arg(value_name = "START_TIME")]
        start: Option<String>,
    },
    /// List schedules.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        level: ScheduleLevel,
        /// Also those of the levels below.
        #[arg(short = 'R', long = "recursive")]
        recursive: bool,
    },
    /// Show when each image's next scheduled snapshot is due.
    Status {
        #[command(flatten)]
        level: ScheduleLevel,
    },
}

/// `rbdx mirror daemon`.
#[derive(Debug, Args)]
pub struct MirrorDaemonArgs {
    /// This daemon's id, unique among the daemons of the site (default: the host name).
    #[arg(long = "daemon-id", value_name = "ID")]
    pub daemon_id: Option<String>,
    /// Initial copies and resyncs run at once.
    #[arg(long = "max-concurrent-syncs", value_name = "N", default_value_t = 5)]
    pub max_concurrent_syncs: usize,
}

/// `rbdx mirror image verify`.
#[derive(Debug, Args)]
pub struct MirrorVerifyArgs {
    /// The image (`pool/image@snap`, or `--snap`, compares at that snapshot, present at both
    /// sites, instead of the last mirror snapshot).
    #[command(flatten)]
    pub image: ImageArg,
    #[command(flatten)]
    pub check: VerifyOptions,
}

/// What `mirror ... verify` does with differences, and which peer it compares with.
#[derive(Debug, Clone, Args)]
pub struct VerifyOptions {
    /// Re-copy the differing ranges into the non-primary copy (run at its site).
    #[arg(long = "repair")]
    pub repair: bool,
    /// The peer to compare with (uuid or site name), when the pool has several.
    #[arg(long = "peer", value_name = "PEER")]
    pub peer: Option<String>,
}
