//! The `rbdx` command line: block images on an object store, with the syntax of Ceph's `rbd`
//! where the two share commands.

mod args;
mod cluster;
mod commands;
mod error;
mod image_args;
mod output;
mod progress;
mod size;
mod spec;
mod store;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit with EINVAL, as `rbd` does; help and version succeed.
            return if e.use_stderr() {
                ExitCode::from(22)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rbdx: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rbdx: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
