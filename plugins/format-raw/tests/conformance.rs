//! The source driver conformance kit on the raw format: the head over a sparse file and a
//! snapshot given as a second file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rbdx_format_raw::RawFormatFactory;
use rbdx_source::testkit::{Subject, conformance};
use rbdx_source::{Format, OpenContext, Registry, SourceSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_format_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.raw");
    let snap = dir.path().join("snap.raw");
    let mut head_bytes = vec![0u8; (6 << 20) + 4097];
    for (i, b) in head_bytes[(1 << 20)..(2 << 20) + 10].iter_mut().enumerate() {
        *b = (i % 253) as u8 | 1;
    }
    let snap_bytes: Vec<u8> = (0..(3 << 20)).map(|i| (i % 241) as u8).collect();
    std::fs::write(&head, &head_bytes).unwrap();
    std::fs::write(&snap, &snap_bytes).unwrap();
    head_bytes[5 << 20] = 9;
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&head).unwrap(),
        &[9],
        5 << 20,
    )
    .unwrap();
    let mut registry = Registry::new();
    registry.register_stream(Arc::new(rbdx_stream_file::FileStreamFactory));
    registry.register_format(Arc::new(RawFormatFactory));
    let ctx = OpenContext::new(Arc::new(registry));
    let spec = SourceSpec::from_value(serde_json::json!({
        "type": "raw",
        "stream": {"type": "file", "file_path": head},
        "snapshots": [{"type": "raw", "name": "s", "stream": {"type": "file", "file_path": snap}}],
    }))
    .unwrap();
    let format: Arc<dyn Format> = Arc::from(ctx.registry().open(&spec, &ctx).await.unwrap());
    conformance(&Subject::Format(format.clone(), None), &head_bytes).await;
    conformance(&Subject::Format(format, Some(0)), &snap_bytes).await;
}
