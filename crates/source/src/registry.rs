//! The driver registry: formats and streams by type name.
//!
//! This is the one dispatch point for source drivers. To add a driver:
//!
//! 1. Write a crate under `plugins/` (`format-<name>` or `stream-<name>`) with a factory that
//!    implements [`FormatFactory`] or [`StreamFactory`] and parses its own keys with a
//!    [`crate::SpecReader`] (unknown keys are errors).
//! 2. Announce it: `inventory::submit! { rbdx_source::StreamRegistration(&MyFactory) }`.
//! 3. Link it into the `rbdx` binary: a dependency of `crates/cli` behind a cargo feature,
//!    referenced from the binary (`use rbdx_stream_x as _;`) so the linker keeps it.
//!
//! [`Registry::builtin`] collects every linked driver. Drivers shipped as shared libraries are
//! added by the plugin loader.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::context::OpenContext;
use crate::error::{Error, ErrorKind, Result};
use crate::format::Format;
use crate::spec::{SourceSpec, type_of};
use crate::stream::Stream;

/// Opens streams of one type.
#[async_trait]
pub trait StreamFactory: Send + Sync {
    /// The stream type name in specs (`file`, `http`, …).
    fn name(&self) -> &'static str;

    /// Opens a stream from its spec object (the `stream` value).
    async fn open(&self, spec: &Map<String, Value>, ctx: &OpenContext) -> Result<Box<dyn Stream>>;
}

/// Opens formats of one type.
#[async_trait]
pub trait FormatFactory: Send + Sync {
    /// The format type name in specs (`raw`, `qcow`, …).
    fn name(&self) -> &'static str;

    /// Returns true if `header` (the first bytes of a stream) looks like this format.
    fn probe(&self, header: &[u8]) -> bool {
        let _ = header;
        false
    }

    /// Opens a source from its spec.
    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>>;
}

/// A stream driver announced by a linked crate.
pub struct StreamRegistration(pub &'static dyn StreamFactory);

/// A format driver announced by a linked crate.
pub struct FormatRegistration(pub &'static dyn FormatFactory);

impl fmt::Debug for StreamRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamRegistration({})", self.0.name())
    }
}

impl fmt::Debug for FormatRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FormatRegistration({})", self.0.name())
    }
}

inventory::collect!(StreamRegistration);
inventory::collect!(FormatRegistration);

/// Format and stream drivers by name.
#[derive(Clone, Default)]
pub struct Registry {
    formats: BTreeMap<String, Arc<dyn FormatFactory>>,
    streams: BTreeMap<String, Arc<dyn StreamFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("formats", &self.formats.keys().collect::<Vec<_>>())
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Static<T: ?Sized + 'static>(&'static T);

#[async_trait]
impl StreamFactory for Static<dyn StreamFactory> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn open(&self, spec: &Map<String, Value>, ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        self.0.open(spec, ctx).await
    }
}

#[async_trait]
impl FormatFactory for Static<dyn FormatFactory> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn probe(&self, header: &[u8]) -> bool {
        self.0.probe(header)
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        self.0.open(spec, ctx).await
    }
}

impl Registry {
    /// Returns an empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Returns a registry of every driver linked into this program.
    pub fn builtin() -> Self {
        let mut registry = Registry::new();
        for r in inventory::iter::<StreamRegistration> {
            registry.register_stream(Arc::new(Static(r.0)));
        }
        for r in inventory::iter::<FormatRegistration> {
            registry.register_format(Arc::new(Static(r.0)));
        }
        registry
    }

    /// Adds (or replaces) a stream driver.
    pub fn register_stream(&mut self, factory: Arc<dyn StreamFactory>) {
        self.streams.insert(factory.name().to_owned(), factory);
    }

    /// Adds (or replaces) a format driver.
    pub fn register_format(&mut self, factory: Arc<dyn FormatFactory>) {
        self.formats.insert(factory.name().to_owned(), factory);
    }

    /// Returns the names of the stream drivers.
    pub fn stream_names(&self) -> Vec<&str> {
        self.streams.keys().map(String::as_str).collect()
    }

    /// Returns the names of the format drivers.
    pub fn format_names(&self) -> Vec<&str> {
        self.formats.keys().map(String::as_str).collect()
    }

    /// Returns the stream driver `name`.
    pub fn stream(&self, name: &str) -> Result<&Arc<dyn StreamFactory>> {
        self.streams.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownDriver,
                format!(
                    "unknown or unsupported stream type '{name}' (known: {})",
                    self.stream_names().join(", ")
                ),
            )
        })
    }

    /// Returns the format driver `name`.
    pub fn format(&self, name: &str) -> Result<&Arc<dyn FormatFactory>> {
        self.formats.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::UnknownDriver,
                format!(
                    "unknown or unsupported format type '{name}' (known: {})",
                    self.format_names().join(", ")
                ),
            )
        })
    }

    /// Opens the stream a spec object describes.
    pub async fn open_stream(
        &self,
        spec: &Map<String, Value>,
        ctx: &OpenContext,
    ) -> Result<Box<dyn Stream>> {
        let name = type_of(spec, "stream")?;
        self.stream(&name)?.open(spec, ctx).await
    }

    /// Opens the source a spec describes, after replacing every `config://<key>` value with
    /// the stored one.
    pub async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        let factory = self.format(&spec.format)?;
        let resolved =
            SourceSpec::from_value(ctx.resolve_all(&Value::Object(spec.object.clone())).await?)?;
        factory.open(&resolved, ctx).await
    }
}
