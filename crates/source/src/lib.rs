//! Import sources of rbdx: what import-only migration reads from.
//!
//! A [`Stream`] gives bytes (a file, an HTTP or S3 object, an NBD export); a [`Format`] turns a
//! stream (or an image) into an image with snapshots (raw, qcow, native). A [`SourceSpec`] is
//! the JSON of Ceph's `--source-spec`; the [`Registry`] maps its type names to drivers, which
//! live in crates under `plugins/` and announce themselves with `inventory`.
//!
//! ```
//! use std::sync::Arc;
//! use rbdx_source::{OpenContext, Registry, SourceSpec};
//!
//! let spec = SourceSpec::parse(r#"{"type": "raw", "stream": {"type": "file", "file_path": "/x"}}"#)?;
//! assert_eq!(spec.format, "raw");
//! let ctx = OpenContext::new(Arc::new(Registry::builtin()));
//! assert!(ctx.registry().format("nosuch").is_err());
//! # Ok::<(), rbdx_source::Error>(())
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod context;
mod error;
pub mod extent;
mod format;
mod plugin;
mod registry;
pub mod spec;
mod stream;

pub use context::{OpenContext, SecretStore};
pub use error::{Error, ErrorKind, Result};
pub use extent::{Extent, ExtentKind};
pub use format::{Format, SnapshotInfo};
pub use plugin::PluginLoad;
pub use registry::{
    FormatFactory, FormatRegistration, Registry, StreamFactory, StreamRegistration,
};
pub use spec::{SourceSpec, SpecReader};
pub use stream::{Stream, check_range};

/// Re-exported so that drivers can announce themselves without depending on `inventory`.
pub use inventory;
