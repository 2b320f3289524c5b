//! Diagnostics of every command, set up once in `main`: warnings and errors on standard error
//! by default; `-v` (info), `-vv` (debug) or `-vvv` (trace) for more; `RBDX_LOG` (a filter such
//! as `debug` or `warn,rbdx_image=trace`) overrides both. Nothing is ever logged to standard
//! output, which carries data (`export IMAGE -`).

use tracing_subscriber::EnvFilter;

/// The variable that sets the log filter.
pub const LOG_ENV: &str = "RBDX_LOG";

/// Returns the filter for `verbose` counts of `-v`, starting from `base` (what the command
/// logs by default).
fn filter_for(verbose: u8, base: &str) -> String {
    match verbose {
        0 => base.to_owned(),
        1 => "info".to_owned(),
        2 => "debug".to_owned(),
        _ => "trace".to_owned(),
    }
}

/// Installs the process's log subscriber. `base` is the command's default filter (`warn` for
/// most; a server also logs what it serves at `info`).
pub fn init(verbose: u8, base: &str) {
    let filter = match std::env::var(LOG_ENV) {
        Ok(text) if !text.trim().is_empty() => match EnvFilter::try_new(&text) {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("rbdx: ignoring {LOG_ENV}={text}: {e}");
                EnvFilter::new(filter_for(verbose, base))
            }
        },
        _ => EnvFilter::new(filter_for(verbose, base)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(verbose >= 2)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::filter_for;

    #[test]
    fn each_v_shows_more() {
        assert_eq!(filter_for(0, "warn"), "warn");
        assert_eq!(filter_for(1, "warn"), "info");
        assert_eq!(filter_for(2, "warn"), "debug");
        assert_eq!(filter_for(5, "warn"), "trace");
    }
}
