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

    /// Bytes of a stream's start that [`FormatFactory::probe`] looks at (0: it does not
    /// probe, as `raw`, which every stream would match).
    fn probe_len(&self) -> usize {
        0
    }

    /// Returns true if `header` (the first bytes of a stream, at most
    /// [`FormatFactory::probe_len`]) looks like this format.
    fn probe(&self, header: &[u8]) -> bool {
        let _ = header;
        false
    }

    /// Opens a source from its spec.
    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>>;

    /// Opens the format over a stream the caller already opened (a probed file, a backing
    /// file); `spec` holds the format's own keys, without `stream`. The default refuses.
    async fn open_stream(
        &self,
        stream: Arc<dyn Stream>,
        spec: &SourceSpec,
        ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        let _ = (spec, ctx);
        Err(Error::unsupported(format!(
            "the {} format cannot open {} on its own",
            self.name(),
            stream.describe()
        )))
    }
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

    fn probe_len(&self) -> usize {
        self.0.probe_len()
    }

    fn probe(&self, header: &[u8]) -> bool {
        self.0.probe(header)
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        self.0.open(spec, ctx).await
    }

    async fn open_stream(
        &self,
        stream: Arc<dyn Stream>,
        spec: &SourceSpec,
        ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        self.0.open_stream(stream, spec, ctx).await
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

    /// Returns the format whose probe recognises the start of `stream`, if any (formats are
    /// tried in name order; their magic numbers do not overlap). `raw` never matches: a
    /// stream no format recognises is raw to whoever asks.
    pub async fn probe(&self, stream: &dyn Stream) -> Result<Option<Arc<dyn FormatFactory>>> {
        let want = self
            .formats
            .values()
            .map(|f| f.probe_len())
            .max()
            .unwrap_or(0);
        let size = stream.size().await?;
        let len = (want as u64).min(size);
        if len == 0 {
            return Ok(None);
        }
        let head = stream.read(0, len).await?;
        Ok(self
            .formats
            .values()
            .find(|f| f.probe_len() > 0 && f.probe(&head[..f.probe_len().min(head.len())]))
            .cloned())
    }

    /// Opens `stream` as format `name`, or as the format its first bytes show when `name` is
    /// `None` (raw when none does), with no keys of the format's own: how backing files open.
    pub async fn open_on(
        &self,
        name: Option<&str>,
        stream: Arc<dyn Stream>,
        ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        let factory = match name {
            Some(name) => self.format(name)?.clone(),
            None => match self.probe(&*stream).await? {
                Some(f) => f,
                None => self.format("raw")?.clone(),
            },
        };
        let spec = SourceSpec::from_value(serde_json::json!({ "type": factory.name() }))?;
        factory.open_stream(stream, &spec, ctx).await
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
