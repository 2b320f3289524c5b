//! Command dispatch: one module per command group.

mod config_key;
mod pool;
mod rados;

use crate::args::{Cli, Command};
use crate::error::CliResult;
use crate::output::Printer;
use crate::store;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let printer = Printer {
        format: cli.global.format,
        pretty: cli.global.pretty_format,
    };
    let store = store::open(&cli.global).await?;
    match cli.command {
        Command::Pool { command } => pool::run(&*store, command, printer).await,
        Command::ConfigKey { command } => config_key::run(&*store, command, printer).await,
        Command::Rados(args) => rados::run(&*store, args, printer).await,
    }
}

/// Reads a whole file, or standard input for `-`.
pub fn read_input(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)?;
        Ok(data)
    } else {
        std::fs::read(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Writes `data` to a file, or standard output for `-`.
pub fn write_output(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if path.as_os_str() == "-" {
        std::io::Write::write_all(&mut std::io::stdout(), data)
    } else {
        std::fs::write(path, data)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}
