//! The `rbdx` command line: block images on an object store, with the syntax of Ceph's `rbd`
//! where the two share commands.

mod args;
mod argv;
mod cluster;
mod commands;
mod error;
mod logging;
mod output;
mod progress;
mod size;
mod spec;
mod store;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
// Source drivers register themselves when linked; referencing them keeps them linked.
#[cfg(feature = "format-native")]
use rbdx_format_native as _;
#[cfg(feature = "format-qcow")]
use rbdx_format_qcow as _;
#[cfg(feature = "format-raw")]
use rbdx_format_raw as _;
#[cfg(feature = "stream-file")]
use rbdx_stream_file as _;
#[cfg(feature = "stream-http")]
use rbdx_stream_http as _;
#[cfg(feature = "stream-nbd")]
use rbdx_stream_nbd as _;
#[cfg(feature = "stream-s3")]
use rbdx_stream_s3 as _;

use crate::args::Cli;

fn main() -> ExitCode {
    let args = argv::reorder(std::env::args_os().collect(), &Cli::command());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit with EINVAL, as `rbd` does; help and version succeed.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("rbdx: {}", one_line(&e.to_string()));
            return ExitCode::from(22);
        }
    };
    keep_freed_buffers();
    let serving = matches!(
        cli.command,
        args::Command::Nbd { .. }
            | args::Command::Gateway {
                command: args::GatewayCommand::Serve(_)
            }
            | args::Command::Mirror {
                command: args::MirrorCommand::Daemon(_)
            }
    );
    logging::init(
        cli.global.verbose,
        if serving {
            "warn,rbdx_nbd=info,rbdx_peer=info,rbdx_mirror=info,rbdx=info"
        } else {
            "warn"
        },
    );
    if !serving {
        die_quietly_on_closed_pipe();
    }
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
        // A write to a closed standard output (export to `-`) ends quietly, as a print does.
        Err(e) if e.exit_code() == 32 && e.to_string().contains("Broken pipe") => {
            ExitCode::from(CLOSED_PIPE_EXIT as u8)
        }
        Err(e) => {
            eprintln!("rbdx: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Lets the C allocator keep freed object-sized buffers for reuse. Copies go through many
/// buffers of an object's size (4 MiB by default); by default glibc maps each afresh and
/// returns it on free, so every buffer costs page faults, zeroing and cross-CPU TLB flushes.
fn keep_freed_buffers() {
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread
    // exists, and the values are within the ranges glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Lets a closed pipe end the process silently (exit 141, as SIGPIPE would), as it ends
/// `head`'s other Unix peers (`rbdx export img - | head -c 10`, `rbdx ls | head -1`), instead of
/// a panic in a print. SIGPIPE itself stays ignored: a socket whose peer went away (a gateway,
/// an HTTP or NBD source, an NBD client) must be an error to handle, not a silent death.
fn die_quietly_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE_EXIT);
        }
        default(info);
    }));
}

/// The exit status of a command whose standard output was closed under it.
const CLOSED_PIPE_EXIT: i32 = 141;

/// Turns clap's multi-line usage error into one line (without the usage and help hints).
fn one_line(text: &str) -> String {
    let body = text.split("\n\nUsage:").next().unwrap_or(text);
    let body = body
        .split("\n\nFor more information")
        .next()
        .unwrap_or(body);
    let joined: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    joined.join(" ").trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn usage_errors_fit_on_one_line() {
        let text = "error: the following required arguments were not provided:\n  --size <SIZE>\n\nUsage: rbdx create --size <SIZE> [IMAGE_SPEC]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(text),
            "the following required arguments were not provided: --size <SIZE>"
        );
    }
}
