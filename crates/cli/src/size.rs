//! Sizes on the command line (`1G`, `512M`, `1025M`, binary units) and in output (`1 GiB`).

use crate::error::{CliError, CliResult};

/// Parses a size: a number with an optional binary unit (`K`, `M`, `G`, `T`, `P`, `E`, also
/// written `KiB`, `KB`…). A bare number is in units of `default_unit` bytes (`rbd --size`
/// counts MiB).
pub fn parse_size(text: &str, default_unit: u64) -> CliResult<u64> {
    let bad = || CliError::invalid(format!("invalid size '{text}'"));
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let number: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let unit = &t[digits_end..];
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => return number.checked_mul(default_unit).ok_or_else(bad),
        "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        "E" | "EB" | "EIB" => 60,
        _ => return Err(bad()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Formats bytes as `rbd` does: `512 B`, `4 MiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if bytes.is_multiple_of(scale) {
        return format!("{} {}", bytes / scale, UNITS[unit]);
    }
    let value = bytes as f64 / scale as f64;
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1G", 1 << 20).unwrap(), 1 << 30);
        assert_eq!(parse_size("1025M", 1 << 20).unwrap(), 1025 << 20);
        assert_eq!(parse_size("512", 1 << 20).unwrap(), 512 << 20);
        assert_eq!(parse_size("4KiB", 1).unwrap(), 4096);
        assert_eq!(parse_size("4096", 1).unwrap(), 4096);
        assert!(parse_size("1X", 1).is_err());
        assert!(parse_size("-1", 1).is_err());
        assert!(parse_size("99999999999E", 1).is_err());
    }

    #[test]
    fn sizes_format_like_rbd() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(4 << 20), "4 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1025 << 20), "1 GiB");
    }
}
