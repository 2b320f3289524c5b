//! The `raw` format: the stream's bytes are the image.
//!
//! ```json
//! {"type": "raw", "stream": {...},
//!  "snapshots": [{"type": "raw", "name": "<name>", "stream": {...}}, ...]}
//! ```
//!
//! `snapshots` is optional, oldest first; each is a raw stream of the image at that snapshot
//! (Ceph allows only `raw` there). Extents come from the stream (holes of sparse files, NBD
//! block status); all-zero blocks inside data are left out by [`Format::read_sparse`], so
//! copies stay sparse either way.

#![warn(missing_docs, missing_debug_implementations)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_source::spec::type_of;
use rbdx_source::{
    Error, Extent, Format, FormatFactory, FormatRegistration, OpenContext, Result, SnapshotInfo,
    SourceSpec, SpecReader, Stream,
};
use serde_json::Value;

/// Opens `raw` sources.
#[derive(Debug)]
pub struct RawFormatFactory;

rbdx_source::inventory::submit! { FormatRegistration(&RawFormatFactory) }

/// A raw image with optional raw snapshots.
#[derive(Debug)]
pub struct RawFormat {
    head: Arc<dyn Stream>,
    size: u64,
    snapshots: Vec<SnapshotInfo>,
    snapshot_streams: Vec<Box<dyn Stream>>,
}

#[async_trait]
impl FormatFactory for RawFormatFactory {
    fn name(&self) -> &'static str {
        "raw"
    }

    async fn open(&self, spec: &SourceSpec, ctx: &OpenContext) -> Result<Box<dyn Format>> {
        let mut r = spec.reader();
        let stream_spec = r.object("stream")?;
        let snaps = r.opt_array("snapshots")?.cloned().unwrap_or_default();
        r.finish()?;
        // Check every snapshot entry before opening anything.
        let mut entries = Vec::new();
        for (i, snap) in snaps.iter().enumerate() {
            let Value::Object(object) = snap else {
                return Err(Error::invalid(format!("snapshots[{i}] must be an object")));
            };
            let what = format!("snapshots[{i}]");
            let kind = type_of(object, &what)?;
            if kind != "raw" {
                return Err(Error::unsupported(format!(
                    "{what} has type '{kind}'; snapshots can only be raw"
                )));
            }
            let mut r = SpecReader::new(object, what.clone());
            let name = r.str("name")?;
            let stream_spec = r.object("stream")?;
            r.finish()?;
            if name.is_empty() || entries.iter().any(|(n, _)| *n == name) {
                return Err(Error::invalid(format!(
                    "{what} has an empty or repeated name '{name}'"
                )));
            }
            entries.push((name, stream_spec));
        }
        let head = ctx.registry().open_stream(stream_spec, ctx).await?;
        let size = head.size().await?;
        let mut snapshots = Vec::new();
        let mut snapshot_streams = Vec::new();
        for (name, stream_spec) in entries {
            let stream = ctx.registry().open_stream(stream_spec, ctx).await?;
            snapshots.push(SnapshotInfo {
                name,
                size: stream.size().await?,
            });
            snapshot_streams.push(stream);
        }
        Ok(Box::new(RawFormat {
            head: Arc::from(head),
            size,
            snapshots,
            snapshot_streams,
        }))
    }

    async fn open_stream(
        &self,
        stream: Arc<dyn Stream>,
        spec: &SourceSpec,
        _ctx: &OpenContext,
    ) -> Result<Box<dyn Format>> {
        spec.reader().finish()?;
        let size = stream.size().await?;
        Ok(Box::new(RawFormat {
            head: stream,
            size,
            snapshots: Vec::new(),
            snapshot_streams: Vec::new(),
        }))
    }
}

impl RawFormat {
    fn stream(&self, snap: Option<usize>) -> Result<&dyn Stream> {
        match snap {
            None => Ok(self.head.as_ref()),
            Some(i) => self
                .snapshot_streams
                .get(i)
                .map(|s| s.as_ref())
                .ok_or_else(|| Error::invalid(format!("no snapshot number {i}"))),
        }
    }
}

#[async_trait]
impl Format for RawFormat {
    fn describe(&self) -> String {
        format!("raw image on {}", self.head.describe())
    }

    fn format_name(&self) -> &str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn snapshots(&self) -> &[SnapshotInfo] {
        &self.snapshots
    }

    async fn read(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Bytes> {
        self.stream(snap)?.read(offset, length).await
    }

    async fn extents(&self, snap: Option<usize>, offset: u64, length: u64) -> Result<Vec<Extent>> {
        self.stream(snap)?.extents(offset, length).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbdx_source::{ErrorKind, Registry};
    use rbdx_stream_file as _;

    fn ctx() -> OpenContext {
        let mut registry = Registry::new();
        registry.register_stream(Arc::new(rbdx_stream_file::FileStreamFactory));
        registry.register_format(Arc::new(RawFormatFactory));
        OpenContext::new(Arc::new(registry))
    }

    #[tokio::test]
    async fn snapshots_come_from_their_own_streams_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (head, s1) = (dir.path().join("head"), dir.path().join("s1"));
        std::fs::write(&head, vec![2u8; 8192]).unwrap();
        std::fs::write(&s1, vec![1u8; 4096]).unwrap();
        let spec = SourceSpec::from_value(serde_json::json!({
            "type": "raw",
            "stream": {"type": "file", "file_path": head},
            "snapshots": [{"type": "raw", "name": "one", "stream": {"type": "file", "file_path": s1}}]
        }))
        .unwrap();
        let ctx = ctx();
        let f = ctx.registry().open(&spec, &ctx).await.unwrap();
        assert_eq!(f.size(), 8192);
        assert_eq!(
            f.snapshots()[0],
            SnapshotInfo {
                name: "one".into(),
                size: 4096
            }
        );
        assert_eq!(f.read(Some(0), 0, 2).await.unwrap(), vec![1u8, 1]);
        assert_eq!(f.read(None, 8190, 2).await.unwrap(), vec![2u8, 2]);
    }

    #[tokio::test]
    async fn bad_specs_name_the_problem() {
        let ctx = ctx();
        let cases = [
            (serde_json::json!({"type": "raw"}), "missing the 'stream'"),
            (
                serde_json::json!({"type": "raw", "stream": {"type": "ftp"}}),
                "unknown or unsupported stream type 'ftp'",
            ),
            (
                serde_json::json!({"type": "raw", "stream": {"type": "file", "file_path": "/x"}, "snapshots": [{"type": "qcow", "name": "a", "stream": {}}]}),
                "can only be raw",
            ),
            (
                serde_json::json!({"type": "raw", "stream": {"type": "file", "file_path": "/x"}, "size": 3}),
                "unknown key 'size'",
            ),
        ];
        for (spec, text) in cases {
            let spec = SourceSpec::from_value(spec).unwrap();
            let e = ctx.registry().open(&spec, &ctx).await.unwrap_err();
            assert!(e.to_string().contains(text), "{e}");
        }
        let e = ctx
            .registry()
            .open(&SourceSpec::parse(r#"{"type":"vmdk"}"#).unwrap(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownDriver);
    }
}
