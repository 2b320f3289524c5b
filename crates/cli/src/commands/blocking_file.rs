//! A file (or standard output) written from async code without copying: each write runs in
//! place on the worker thread, which hands its other tasks to the rest of the runtime while it
//! blocks (`tokio::task::block_in_place`). `tokio::fs::File` would copy every buffer into its
//! own and hop to a blocking thread per write, which costs a tenth of the time of a large
//! export.

use std::fs::File;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A file written in place from async code; needs the multi-threaded runtime.
#[derive(Debug)]
pub struct BlockingFile(File);

impl BlockingFile {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        Self(file)
    }
}

impl AsyncWrite for BlockingFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let file = &mut self.get_mut().0;
        Poll::Ready(tokio::task::block_in_place(|| file.write(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let file = &mut self.get_mut().0;
        Poll::Ready(tokio::task::block_in_place(|| file.flush()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}
