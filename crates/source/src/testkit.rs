//! A conformance suite that any stream or format driver runs on itself, static or loaded from
//! a plugin: give it an open driver and the bytes it must read, and it checks the contracts
//! written on [`Stream`] and [`Format`]. It panics, naming the driver and the broken rule,
//! so it is meant for tests:
//!
//! ```no_run
//! # async fn demo(stream: std::sync::Arc<dyn rbdx_source::Stream>, bytes: Vec<u8>) {
//! use rbdx_source::testkit::{Subject, conformance};
//! conformance(&Subject::Stream(stream), &bytes).await;
//! # }
//! ```
//!
//! What it checks:
//! - **ranged reads**: the whole source, first and last bytes, unaligned pieces, pieces across
//!   common block boundaries and pseudo-random ranges read exactly the expected bytes; an
//!   empty read at the end is empty;
//! - **concurrent reads**: 32 reads in flight at once each read the right bytes;
//! - **extents agree with the data**: extents cover each asked range exactly, in order,
//!   without gaps or empty pieces, and zero extents read as zeros;
//! - **reads past the end** fail with `Invalid` (offsets near `u64::MAX` too), never panic;
//! - **cancellation**: reads dropped while in flight leave the driver usable and correct;
//! - [`after_change`]: when the source changes under an open driver, each read returns the
//!   old bytes, the new bytes, or an error; never a mix, never a hang.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{ErrorKind, Result};
use crate::extent::{Extent, ExtentKind};
use crate::format::Format;
use crate::stream::Stream;

/// What the suite checks: a stream, or one view of a format (`None`: the head).
#[derive(Debug, Clone)]
pub enum Subject {
    /// A stream driver's stream.
    Stream(Arc<dyn Stream>),
    /// A format driver's image, at the head or a snapshot.
    Format(Arc<dyn Format>, Option<usize>),
}

impl Subject {
    fn name(&self) -> String {
        match self {
            Subject::Stream(s) => s.describe(),
            Subject::Format(f, None) => f.describe(),
            Subject::Format(f, Some(i)) => format!("{} at snapshot {i}", f.describe()),
        }
    }

    async fn size(&self) -> Result<u64> {
        match self {
            Subject::Stream(s) => s.size().await,
            Subject::Format(f, snap) => Ok(f.view_size(*snap)),
        }
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        match self {
            Subject::Stream(s) => s.read(offset, length).await,
            Subject::Format(f, snap) => f.read(*snap, offset, length).await,
        }
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        match self {
            Subject::Stream(s) => s.extents(offset, length).await,
            Subject::Format(f, snap) => f.extents(*snap, offset, length).await,
        }
    }
}

/// A small deterministic generator of test ranges.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if n == 0 { 0 } else { (self.0 >> 33) % n }
    }
}

/// The ranges read: edges, unaligned pieces, block boundaries and pseudo-random ranges.
fn ranges(size: u64) -> Vec<(u64, u64)> {
    let mut out = vec![
        (0, size.min(1)),
        (0, size.min(4096)),
        (size.saturating_sub(1), size.min(1)),
    ];
    out.push((size.min(511), size.saturating_sub(511).min(1025)));
    for boundary in [4096u64, 65536, 1 << 20, 2 << 20, 4 << 20] {
        if boundary < size {
            let start = boundary.saturating_sub(700);
            out.push((start, (size - start).min(1400)));
        }
    }
    let mut rng = Lcg(size ^ 0x5eed);
    for _ in 0..32 {
        let offset = rng.below(size);
        let length = rng.below((size - offset).min(300_000) + 1);
        out.push((offset, length));
    }
    out
}

async fn expect_bytes(s: &Subject, expected: &[u8], offset: u64, length: u64, what: &str) {
    let name = s.name();
    let data = s
        .read(offset, length)
        .await
        .unwrap_or_else(|e| panic!("{name}: {what} read {offset}~{length} failed: {e}"));
    let want = &expected[offset as usize..(offset + length) as usize];
    assert!(
        data.len() == want.len(),
        "{name}: {what} read {offset}~{length} returned {} bytes",
        data.len()
    );
    if let Some(i) = data.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{name}: {what} read {offset}~{length} differs at offset {}",
            offset + i as u64
        );
    }
}

/// Runs every check but [`after_change`] on `subject`, which must read as `expected`.
pub async fn conformance(subject: &Subject, expected: &[u8]) {
    let name = subject.name();
    let size = subject
        .size()
        .await
        .unwrap_or_else(|e| panic!("{name}: size failed: {e}"));
    assert_eq!(size, expected.len() as u64, "{name}: size");
    ranged_reads(subject, expected).await;
    concurrent_reads(subject, expected).await;
    extents_agree(subject, expected).await;
    past_the_end(subject, size).await;
    cancellation(subject, expected).await;
}

/// Ranged reads read exactly the expected bytes.
pub async fn ranged_reads(subject: &Subject, expected: &[u8]) {
    let size = expected.len() as u64;
    let mut at = 0;
    while at < size {
        let len = (size - at).min(8 << 20);
        expect_bytes(subject, expected, at, len, "sequential").await;
        at += len;
    }
    for (offset, length) in ranges(size) {
        expect_bytes(subject, expected, offset, length, "ranged").await;
    }
    let end = subject.read(size, 0).await;
    assert!(
        end.as_ref().is_ok_and(Bytes::is_empty),
        "{}: an empty read at the end gave {end:?}",
        subject.name()
    );
}

/// Reads in flight together each read the right bytes.
pub async fn concurrent_reads(subject: &Subject, expected: &[u8]) {
    let size = expected.len() as u64;
    let reads = ranges(size)
        .into_iter()
        .map(|(offset, length)| expect_bytes(subject, expected, offset, length, "concurrent"));
    futures::future::join_all(reads).await;
}

/// Extents cover each asked range exactly, and zero extents read as zeros.
pub async fn extents_agree(subject: &Subject, expected: &[u8]) {
    let name = subject.name();
    let size = expected.len() as u64;
    let mut asked = vec![(0, size)];
    asked.extend(ranges(size).into_iter().filter(|(_, l)| *l > 0).take(12));
    for (offset, length) in asked {
        let extents = subject
            .extents(offset, length)
            .await
            .unwrap_or_else(|e| panic!("{name}: extents {offset}~{length} failed: {e}"));
        let mut at = offset;
        for e in &extents {
            assert!(
                e.offset == at && e.length > 0,
                "{name}: extents of {offset}~{length} are not contiguous at {at}: {extents:?}"
            );
            if e.kind == ExtentKind::Zero {
                let bytes = &expected[e.offset as usize..e.end() as usize];
                assert!(
                    bytes.iter().all(|b| *b == 0),
                    "{name}: zero extent {}~{} holds data",
                    e.offset,
                    e.length
                );
            }
            at = e.end();
        }
        assert_eq!(
            at,
            offset + length,
            "{name}: extents of {offset}~{length} end at {at}"
        );
    }
}

/// Reads past the end fail with `Invalid`.
pub async fn past_the_end(subject: &Subject, size: u64) {
    let name = subject.name();
    for (offset, length) in [
        (size, 1),
        (size.saturating_sub(1), 2),
        (size + 4096, 4096),
        (u64::MAX, 1),
        (u64::MAX - 10, 100),
    ] {
        match subject.read(offset, length).await {
            Err(e) if e.kind() == ErrorKind::Invalid => {}
            other => panic!("{name}: read {offset}~{length} past the end gave {other:?}"),
        }
    }
}

/// Reads dropped in flight leave the driver usable.
pub async fn cancellation(subject: &Subject, expected: &[u8]) {
    let size = expected.len() as u64;
    let mut reads: Vec<_> = ranges(size)
        .into_iter()
        .map(|(offset, length)| Box::pin(subject.read(offset, length)))
        .collect();
    // Start every read, then drop them all before they finish.
    for read in &mut reads {
        let _ = futures::poll!(read.as_mut());
    }
    drop(reads);
    tokio::task::yield_now().await;
    ranged_reads(subject, expected).await;
}

/// Checks reads across a change of the source: `change` rewrites it from `old` to `new` (of
/// the same size); every read after it must give the old bytes, the new bytes or an error.
pub async fn after_change(subject: &Subject, change: impl FnOnce(), old: &[u8], new: &[u8]) {
    let name = subject.name();
    assert_eq!(old.len(), new.len(), "{name}: old and new differ in size");
    expect_bytes(
        subject,
        old,
        0,
        old.len().min(4096) as u64,
        "before the change",
    )
    .await;
    change();
    for (offset, length) in ranges(old.len() as u64) {
        let range = offset as usize..(offset + length) as usize;
        match subject.read(offset, length).await {
            Err(_) => {}
            Ok(data) if data[..] == old[range.clone()] || data[..] == new[range.clone()] => {}
            Ok(_) => panic!("{name}: read {offset}~{length} after a change mixes two versions"),
        }
    }
}
