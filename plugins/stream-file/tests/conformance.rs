//! The source driver conformance kit on the file stream: a sparse file with data inside and
//! around holes, and a file rewritten while it is open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use rbdx_source::testkit::{Subject, after_change, conformance};
use rbdx_stream_file::FileStream;

/// A sparse file of `size` bytes with scattered data; returns its bytes.
fn sparse(path: &std::path::Path, size: u64, seed: u8) -> Vec<u8> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut expected = vec![0u8; size as usize];
    for (i, at) in [0u64, 70_000, 1 << 20, (3 << 20) + 123, size - 5000]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..5000)
            .map(|j| seed ^ ((i * 31 + j) % 251) as u8 | 1)
            .collect();
        f.write_all_at(&data, at).unwrap();
        expected[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stream_passes_the_conformance_kit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let size = (5 << 20) + 777;
    let expected = sparse(&path, size, 3);
    let stream = Arc::new(FileStream::open(&path).unwrap());
    conformance(&Subject::Stream(stream.clone()), &expected).await;

    let next = dir.path().join("next.raw");
    let new = sparse(&next, size, 99);
    after_change(
        &Subject::Stream(stream),
        || std::fs::write(&path, std::fs::read(&next).unwrap()).unwrap(),
        &expected,
        &new,
    )
    .await;
}
