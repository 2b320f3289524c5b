//! Diff files and export-format-2 streams read as async streams of items: the file is parsed
//! on a blocking thread (reading a file or a pipe blocks) and its items cross a short queue,
//! write data in pieces of at most 4 MiB, so that memory stays bounded and the async runtime
//! never waits on a read. What a network peer sends is the same [`DiffRecord`]s.

use std::io::Read;

use bytes::BytesMut;
use futures::stream::{BoxStream, StreamExt as _};
use rbdx_image::{Error, Result};
use tokio::sync::mpsc;

use crate::image_wire::{self, Metadata};
use crate::stream::DiffRecord;
use crate::wire::{DiffReader, Record, Version, WireError};

/// Bytes of write data in one item.
pub const PIECE: usize = 4 << 20;
/// Items queued between the reading thread and the consumer.
const QUEUE: usize = 4;

/// One item of a parsed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireItem {
    /// The header of an export-format-2 stream: the image's metadata and how many diffs follow.
    Export {
        /// Layout, features and image metadata.
        meta: Metadata,
        /// Diffs that follow (one per snapshot, then the head).
        diffs: u64,
    },
    /// A diff starts (after its banner).
    Diff(Version),
    /// A record of the current diff, and its position in the stream (for messages).
    Record(DiffRecord, u64),
}

fn wire_error(e: WireError) -> Error {
    Error::invalid(e.to_string())
}

/// Parses a diff stream (`export == false`) or an export-format-2 stream from `r`.
pub fn parse<R: Read + Send + 'static>(r: R, export: bool) -> BoxStream<'static, Result<WireItem>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read_all(r, export, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

type Sender = mpsc::Sender<Result<WireItem>>;

/// Sends `item`; false if the consumer is gone (then reading stops).
fn send(tx: &Sender, item: WireItem) -> bool {
    tx.blocking_send(Ok(item)).is_ok()
}

fn read_all<R: Read>(mut r: R, export: bool, tx: &Sender) -> Result<()> {
    let diffs = if export {
        let (meta, diffs, _) = image_wire::read_header(&mut r).map_err(wire_error)?;
        if !send(tx, WireItem::Export { meta, diffs }) {
            return Ok(());
        }
        diffs
    } else {
        1
    };
    for n in 0..diffs {
        let mut reader = DiffReader::new(&mut r).map_err(|e| match e {
            WireError::Banner if export => Error::invalid(format!(
                "malformed export: diff {} of {diffs} does not start with 'rbd diff v2'",
                n + 1
            )),
            other => wire_error(other),
        })?;
        if !send(tx, WireItem::Diff(reader.version())) || !read_diff(&mut reader, tx)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends the records of one diff up to its end; false if the consumer is gone.
fn read_diff<R: Read>(reader: &mut DiffReader<R>, tx: &Sender) -> Result<bool> {
    loop {
        let at = reader.position();
        let record = match reader.next_record().map_err(wire_error)? {
            Record::End => return Ok(send(tx, WireItem::Record(DiffRecord::End, at))),
            Record::FromSnap(s) => DiffRecord::FromSnap(s),
            Record::ToSnap(s) => DiffRecord::ToSnap(s),
            Record::Protection(p) => DiffRecord::Protection(p),
            Record::Size(s) => DiffRecord::Size(s),
            Record::Zero { offset, length } => DiffRecord::Zero { offset, length },
            Record::Write { offset, length } => {
                let mut done = 0u64;
                while done < length {
                    let n = (length - done).min(PIECE as u64) as usize;
                    let mut buf = BytesMut::zeroed(n);
                    let mut got = 0;
                    while got < n {
                        let read = reader.read_data(&mut buf[got..]).map_err(wire_error)?;
                        if read == 0 {
                            return Err(Error::invalid("malformed diff: write data ends early"));
                        }
                        got += read;
                    }
                    let piece = DiffRecord::Data {
                        offset: offset + done,
                        data: buf.freeze(),
                    };
                    if !send(tx, WireItem::Record(piece, at)) {
                        return Ok(false);
                    }
                    done += n as u64;
                }
                continue;
            }
        };
        if !send(tx, WireItem::Record(record, at)) {
            return Ok(false);
        }
    }
}
