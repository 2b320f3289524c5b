//! Source specs: the JSON of Ceph's `--source-spec`,
//! `{"type": <format>, ..., "stream": {"type": <stream>, ...}}`.
//!
//! Parsing is in two steps. [`SourceSpec::parse`] checks the envelope as Ceph does: invalid
//! JSON or a non-object is `BadMessage`; a missing or non-string `type` is `Invalid`. Each
//! driver then reads its own keys through a [`SpecReader`], which takes keys with their types
//! (numeric ids may be numbers or numeric strings, as Ceph allows) and, when the driver is
//! done, refuses any key it did not take, naming it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// The prefix of values read from the cluster's config-key store.
pub const CONFIG_KEY_PREFIX: &str = "config://";

/// A parsed source spec: the format's type and its keys (including `stream`, if any).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// The format type (`raw`, `qcow`, `native`, …).
    pub format: String,
    /// Every key of the spec, `type` included.
    pub object: Map<String, Value>,
}

impl SourceSpec {
    /// Parses a spec from JSON text.
    pub fn parse(text: &str) -> Result<SourceSpec> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::BadMessage,
                format!("invalid source-spec JSON: {e}"),
            )
        })?;
        SourceSpec::from_value(value)
    }

    /// Builds a spec from a JSON value.
    pub fn from_value(value: Value) -> Result<SourceSpec> {
        let Value::Object(object) = value else {
            return Err(Error::new(
                ErrorKind::BadMessage,
                "invalid source-spec JSON: not an object",
            ));
        };
        let format = match object.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::invalid("source-spec key 'type' must be a string")),
            None => return Err(Error::invalid("source-spec has no 'type' key")),
        };
        Ok(SourceSpec { format, object })
    }

    /// Returns a reader over the format's keys.
    pub fn reader(&self) -> SpecReader<'_> {
        SpecReader::new(&self.object, "source-spec")
    }

    /// Returns the spec as JSON with every secret replaced by `<redacted>` (see
    /// [`redact`]), for output and logs.
    pub fn redacted(&self) -> Value {
        redact(&Value::Object(self.object.clone()))
    }
}

/// Keys whose values are secrets wherever they appear in a spec.
const SECRET_KEYS: &[&str] = &["secret_key", "access_key", "key", "password", "token"];

/// Returns `value` with secrets hidden: values of secret keys become `<redacted>` (a
/// `config://` reference stays visible, it is not the secret), and passwords inside URLs
/// (`scheme://user:password@host`) become `<redacted>`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let hidden = match v {
                        Value::String(s)
                            if SECRET_KEYS.contains(&k.as_str())
                                && !s.starts_with(CONFIG_KEY_PREFIX) =>
                        {
                            Value::String("<redacted>".into())
                        }
                        other => redact(other),
                    };
                    (k.clone(), hidden)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// Hides the password of a URL's user info: `http://u:p@h/x` -> `http://u:<redacted>@h/x`.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return text.to_owned();
    };
    format!(
        "{}{}:<redacted>{}",
        &text[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

/// Reads the keys of one JSON object of a spec, by type, and refuses the keys nobody took.
#[derive(Debug)]
pub struct SpecReader<'a> {
    object: &'a Map<String, Value>,
    what: String,
    taken: BTreeSet<&'a str>,
}

impl<'a> SpecReader<'a> {
    /// Returns a reader over `object`, called `what` in messages (e.g. `stream`).
    pub fn new(object: &'a Map<String, Value>, what: impl Into<String>) -> SpecReader<'a> {
        let mut taken = BTreeSet::new();
        if let Some((k, _)) = object.get_key_value("type") {
            taken.insert(k.as_str());
        }
        SpecReader {
            object,
            what: what.into(),
            taken,
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.object.get_key_value(key)?;
        self.taken.insert(k.as_str());
        Some(v)
    }

    fn wrong(&self, key: &str, expected: &str) -> Error {
        Error::invalid(format!("{} key '{key}' must be {expected}", self.what))
    }

    fn missing(&self, key: &str) -> Error {
        Error::invalid(format!("{} is missing the '{key}' key", self.what))
    }

    /// Takes an optional string.
    pub fn opt_str(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// Takes a required string.
    pub fn str(&mut self, key: &str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// Takes an optional unsigned number, given as a JSON number or a numeric string.
    pub fn opt_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| self.wrong(key, "a non-negative integer or a numeric string")),
            Some(_) => Err(self.wrong(key, "a non-negative integer")),
        }
    }

    /// Takes an optional boolean.
    pub fn opt_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    /// Takes an optional object.
    pub fn opt_object(&mut self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.wrong(key, "an object")),
        }
    }

    /// Takes a required object.
    pub fn object(&mut self, key: &str) -> Result<&'a Map<String, Value>> {
        self.opt_object(key)?.ok_or_else(|| self.missing(key))
    }

    /// Takes an optional array.
    pub fn opt_array(&mut self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong(key, "an array")),
        }
    }

    /// Takes an optional array of strings.
    pub fn opt_str_array(&mut self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(items) = self.opt_array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.wrong(key, "an array of strings")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Fails naming the first key that no one took.
    pub fn finish(self) -> Result<()> {
        match self
            .object
            .keys()
            .find(|k| !self.taken.contains(k.as_str()))
        {
            Some(k) => Err(Error::invalid(format!(
                "{} has an unknown key '{k}'",
                self.what
            ))),
            None => Ok(()),
        }
    }
}

/// Returns the `type` of a nested spec object (a stream or a snapshot), which must be a
/// string.
pub fn type_of(object: &Map<String, Value>, what: &str) -> Result<String> {
    match object.get("type") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::invalid(format!(
            "{what} key 'type' must be a string"
        ))),
        None => Err(Error::invalid(format!("{what} has no 'type' key"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_checked_as_ceph_does() {
        assert_eq!(
            SourceSpec::parse("{").unwrap_err().kind(),
            ErrorKind::BadMessage
        );
        assert_eq!(
            SourceSpec::parse("[1]").unwrap_err().kind(),
            ErrorKind::BadMessage
        );
        assert_eq!(
            SourceSpec::parse("{}").unwrap_err().kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            SourceSpec::parse(r#"{"type": 3}"#).unwrap_err().kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            SourceSpec::parse(r#"{"type":"raw"}"#).unwrap().format,
            "raw"
        );
    }

    #[test]
    fn readers_take_typed_keys_and_refuse_the_rest() {
        let spec = SourceSpec::parse(
            r#"{"type":"native","pool_id":"7","snap_id":12,"image_name":"a","extra":1}"#,
        )
        .unwrap();
        let mut r = spec.reader();
        assert_eq!(r.opt_u64("pool_id").unwrap(), Some(7));
        assert_eq!(r.opt_u64("snap_id").unwrap(), Some(12));
        assert_eq!(r.str("image_name").unwrap(), "a");
        let e = r.finish().unwrap_err();
        assert!(e.to_string().contains("unknown key 'extra'"), "{e}");

        let spec =
            SourceSpec::parse(r#"{"type":"native","snap_id":"foobar","snap_name":1}"#).unwrap();
        let mut r = spec.reader();
        assert!(
            r.opt_u64("snap_id")
                .unwrap_err()
                .to_string()
                .contains("snap_id")
        );
        assert!(
            r.opt_str("snap_name")
                .unwrap_err()
                .to_string()
                .contains("must be a string")
        );
        assert!(
            r.str("image_name")
                .unwrap_err()
                .to_string()
                .contains("missing the 'image_name'")
        );
    }

    #[test]
    fn secrets_are_redacted_but_references_stay() {
        let spec = SourceSpec::parse(
            r#"{"type":"raw","stream":{"type":"s3","url":"http://u:pw@h/b/k","access_key":"config://s3/ak","secret_key":"SECRET"}}"#,
        )
        .unwrap();
        let shown = spec.redacted().to_string();
        assert!(
            !shown.contains("SECRET") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("config://s3/ak"), "{shown}");
        assert!(shown.contains("http://u:<redacted>@h/b/k"), "{shown}");
    }
}
