//! `rbdx config-key set|get|rm|ls|exists`.

use bytes::Bytes;
use rbdx_objstore::ObjectStore;

use crate::args::ConfigKeyCommand;
use crate::commands::{read_input, write_output};
use crate::error::{CliError, CliResult};
use crate::output::Printer;

/// Runs a config-key command.
pub async fn run(
    store: &dyn ObjectStore,
    command: ConfigKeyCommand,
    printer: Printer,
) -> CliResult {
    match command {
        ConfigKeyCommand::Set {
            key,
            value,
            in_file,
        } => {
            let value = match (value, in_file) {
                (Some(value), None) => value.into_bytes(),
                (None, Some(path)) => read_input(&path)?,
                _ => return Err(CliError::invalid("give a value or -i FILE")),
            };
            store.config_key_set(&key, Bytes::from(value)).await?;
            eprintln!("set {key}");
        }
        ConfigKeyCommand::Get { key, out_file } => {
            let value = store.config_key_get(&key).await?;
            match out_file {
                Some(path) => write_output(&path, &value)?,
                None => write_output(std::path::Path::new("-"), &value)?,
            }
        }
        ConfigKeyCommand::Rm { key } => {
            store.config_key_remove(&key).await?;
            eprintln!("key deleted");
        }
        ConfigKeyCommand::Ls => {
            let keys = store.config_key_list().await?;
            printer.print("keys", &keys, |keys| {
                for k in keys {
                    println!("{k}");
                }
            });
        }
        ConfigKeyCommand::Exists { key } => {
            store.config_key_get(&key).await?;
            eprintln!("key '{key}' exists");
        }
    }
    Ok(())
}
