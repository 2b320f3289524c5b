//! The [`Stream`] trait: a byte source with a size and positional reads.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::extent::Extent;

/// A byte source: a file, an HTTP or S3 object, an NBD export, or a plugin's.
///
/// # Contract
///
/// - [`Stream::read`] returns exactly `length` bytes at `offset`; a range past the end is an
///   `Invalid` error. Reads are positional and may run concurrently.
/// - A stream that notices its source changed between reads (e.g. an HTTP `ETag`) fails with
///   `Changed` rather than return bytes of two versions.
/// - [`Stream::describe`] never shows secrets.
#[async_trait]
pub trait Stream: Send + Sync + Debug {
    /// Says what the stream reads, for messages (secrets redacted).
    fn describe(&self) -> String;

    /// Returns the size in bytes.
    async fn size(&self) -> Result<u64>;

    /// Reads `length` bytes at `offset`.
    async fn read(&self, offset: u64, length: u64) -> Result<Bytes>;

    /// Returns which parts of `[offset, offset + length)` hold data and which read as zeros,
    /// as far as the stream can tell without reading (sparse files, NBD block status). The
    /// default says everything is data.
    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent::data(offset, length)])
    }

    /// Returns the spec of a stream of the same type for `name` relative to this one (a
    /// backing file next to an image). The default refuses.
    fn relative(&self, name: &str) -> Result<Map<String, Value>> {
        Err(Error::unsupported(format!(
            "{} cannot open '{name}' relative to itself",
            self.describe()
        )))
    }
}

/// Checks that `[offset, offset + length)` lies within `size`.
pub fn check_range(what: &dyn Stream, offset: u64, length: u64, size: u64) -> Result<()> {
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!(
            "read {offset}~{length} is past the end of {} ({size} bytes)",
            what.describe()
        ))),
    }
}

/// A stream over bytes in memory (tests, fuzzing, small inline sources).
#[derive(Debug, Clone)]
pub struct MemoryStream {
    name: String,
    data: Bytes,
}

impl MemoryStream {
    /// Returns a stream of `data`, called `name` in messages.
    pub fn new(name: impl Into<String>, data: impl Into<Bytes>) -> Self {
        MemoryStream {
            name: name.into(),
            data: data.into(),
        }
    }
}

#[async_trait]
impl Stream for MemoryStream {
    fn describe(&self) -> String {
        format!("memory stream {}", self.name)
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.data.len() as u64)
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        check_range(self, offset, length, self.data.len() as u64)?;
        Ok(self.data.slice(offset as usize..(offset + length) as usize))
    }
}
