//! `rbdx trash ...`.

use clap::Subcommand;

use super::common::{ImageArg, ImageIdArg, PoolArg};

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
