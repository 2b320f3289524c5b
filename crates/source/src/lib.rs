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

pub mod buffer;
mod context;
mod error;
pub mod extent;
mod format;
mod plugin;
mod registry;
pub mod spec;
mod stream;
pub mod testkit;

pub use buffer::{BufferPool, PooledBuf};
pub use context::{Clusters, OpenContext, SecretStore};
pub use error::{Error, ErrorKind, Result};
pub use extent::{Extent, ExtentKind};
pub use format::{Format, SnapshotInfo};
pub use plugin::PluginLoad;
pub use registry::{
    FormatFactory, FormatRegistration, Registry, StreamFactory, StreamRegistration,
};
pub use spec::{SourceSpec, SpecReader};
pub use stream::{MemoryStream, Stream, check_range};

/// Entry points for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses a source spec and reads typical keys from it with every accessor.
    pub fn source_spec(text: &str) {
        let Ok(spec) = crate::SourceSpec::parse(text) else {
            return;
        };
        let _ = spec.redacted();
        let mut r = spec.reader();
        let _ = r.opt_str("pool_name");
        let _ = r.opt_u64("pool_id");
        let _ = r.opt_u64("snap_id");
        let _ = r.opt_bool("flatten");
        let _ = r.opt_str_array("rbdx_allow_backing");
        if let Ok(Some(stream)) = r.opt_object("stream") {
            let _ = crate::spec::type_of(stream, "stream");
            let mut s = crate::SpecReader::new(stream, "stream");
            let _ = s.opt_str("url");
            let _ = s.finish();
        }
        let _ = r.opt_array("snapshots");
        let _ = r.finish();
    }
}

/// Re-exported so that drivers can announce themselves without depending on `inventory`.
pub use inventory;
