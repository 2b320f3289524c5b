//! Output formats: plain text for people, JSON (`--format json`, `--pretty-format`) for
//! scripts.

use clap::ValueEnum;
use serde::Serialize;

/// The output format of listing and info commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people.
    Plain,
    /// JSON for scripts.
    Json,
}

/// How to print results.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    pub pretty: bool,
}

impl Printer {
    /// Prints `value` as JSON, or calls `plain` for text.
    pub fn print<T: Serialize>(&self, value: &T, plain: impl FnOnce(&T)) {
        match self.format {
            Format::Plain => plain(value),
            Format::Json => {
                let text = if self.pretty {
                    serde_json::to_string_pretty(value)
                } else {
                    serde_json::to_string(value)
                };
                match text {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("rbdx: cannot encode output: {e}"),
                }
            }
        }
    }
}

/// Formats a time as UTC with microseconds, e.g. `2026-11-22T04:55:44.874022+0000`.
pub fn utc(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Renders bytes as text when they are printable UTF-8, else as hex.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text)
            if text
                .chars()
                .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
        {
            text.to_owned()
        }
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000+0000");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_164_800_000_001);
        assert_eq!(utc(t), "2024-02-29T00:00:00.000001+0000");
    }

    #[test]
    fn binary_values_show_as_hex() {
        assert_eq!(show_bytes(b"plain"), "plain");
        assert_eq!(show_bytes(&[0, 255]), "00ff");
    }
}
