//! Output formats: plain text for people, JSON and XML (`--format json|xml`,
//! `--pretty-format`) for scripts, with `rbd`'s element and field names.

use clap::ValueEnum;
use serde::Serialize;

/// The output format of listing and info commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people.
    Plain,
    /// JSON for scripts.
    Json,
    /// XML for scripts: the JSON document with `root` as the outer element and list items
    /// named by the singular of their list.
    Xml,
}

/// How to print results.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    pub pretty: bool,
}

impl Printer {
    /// Prints `value` as JSON or XML (with outer element `root`), or calls `plain` for text.
    pub fn print<T: Serialize>(&self, root: &str, value: &T, plain: impl FnOnce(&T)) {
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
            Format::Xml => match serde_json::to_value(value) {
                Ok(doc) => {
                    let mut out = String::new();
                    xml_element(root, &doc, self.pretty, 0, &mut out);
                    println!("{out}");
                }
                Err(e) => eprintln!("rbdx: cannot encode output: {e}"),
            },
        }
    }

    /// Returns true for plain text output.
    pub fn is_plain(&self) -> bool {
        self.format == Format::Plain
    }
}

/// Returns the element name of an item of list `name`.
fn singular(name: &str) -> String {
    if name == "children" {
        "child".to_owned()
    } else if let Some(stem) = name.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = name.strip_suffix('s') {
        stem.to_owned()
    } else {
        "item".to_owned()
    }
}

fn xml_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

fn xml_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn xml_element(
    name: &str,
    value: &serde_json::Value,
    pretty: bool,
    depth: usize,
    out: &mut String,
) {
    use serde_json::Value;
    let tag = xml_name(name);
    let indent = |out: &mut String, depth: usize| {
        if pretty {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&"  ".repeat(depth));
        }
    };
    indent(out, depth);
    out.push_str(&format!("<{tag}>"));
    let nested = match value {
        Value::Object(map) => {
            for (k, v) in map {
                xml_element(k, v, pretty, depth + 1, out);
            }
            !map.is_empty()
        }
        Value::Array(items) => {
            let item = singular(name);
            for v in items {
                xml_element(&item, v, pretty, depth + 1, out);
            }
            !items.is_empty()
        }
        Value::String(s) => {
            xml_escape(s, out);
            false
        }
        Value::Null => false,
        other => {
            out.push_str(&other.to_string());
            false
        }
    };
    if nested {
        indent(out, depth);
    }
    out.push_str(&format!("</{tag}>"));
}

/// Formats a time as `rbd` prints timestamps, in UTC: `Sun Nov 22 10:00:00 2026`.
pub fn ctime(t: std::time::SystemTime) -> String {
    let iso = utc(t);
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let days = d.as_secs() / 86_400;
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{} {} {:>2} {} {}",
        DAYS[(days % 7) as usize],
        MONTHS[month.clamp(1, 12) - 1],
        iso[8..10].trim_start_matches('0'),
        &iso[11..19],
        &iso[..4]
    )
}

/// Formats a time as UTC with microseconds, e.g. `2026-11-22T04:55:44.874022+0000`.
pub fn utc(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = rbdx_mirror::status::civil_from_days(days);
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

/// Prints rows as a left-aligned table with a header line.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
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
    fn ctime_names_the_weekday_and_month() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        assert_eq!(ctime(t), "Sun Nov 22 10:00:00 2026");
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn xml_names_list_items_by_the_singular() {
        let doc = serde_json::json!({"snapshots": [{"id": 4, "name": "a<b"}], "features": []});
        let mut out = String::new();
        xml_element("image", &doc, false, 0, &mut out);
        assert_eq!(
            out,
            "<image><features></features><snapshots><snapshot><id>4</id><name>a&lt;b</name></snapshot></snapshots></image>"
        );
    }

    #[test]
    fn binary_values_show_as_hex() {
        assert_eq!(show_bytes(b"plain"), "plain");
        assert_eq!(show_bytes(&[0, 255]), "00ff");
    }
}
