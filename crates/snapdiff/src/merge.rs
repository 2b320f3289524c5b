//! `merge-diff`: two consecutive diffs (A to B, then B to C) into one (A to C), streamed: the
//! records of both are walked in offset order, the second diff's records win where both
//! cover a byte, and everything is clipped to the second diff's image size. Memory stays at
//! one piece of data whatever the diffs' size.

use std::io::{Read, Write};

use rbdx_image::{Error, Result};

use crate::wire::{DiffReader, DiffWriter, Record, Version, WireError};

/// Bytes of data copied at once.
const PIECE: usize = 4 << 20;

fn wire_error(e: WireError) -> Error {
    Error::invalid(e.to_string())
}

/// The header of a diff and its first data record.
#[derive(Debug, Default)]
struct Header {
    from: Option<String>,
    to: Option<String>,
    size: Option<u64>,
}

/// The current data record of one input, with what is left of it.
#[derive(Debug, Clone, Copy)]
struct Piece {
    offset: u64,
    length: u64,
    data: bool,
}

impl Piece {
    fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// One input diff, positioned at a data record.
struct Input<R> {
    reader: DiffReader<R>,
    which: &'static str,
    current: Option<Piece>,
    last_end: u64,
}

impl<R: Read> Input<R> {
    /// Reads the header records and stops at the first data record.
    fn open(r: R, which: &'static str) -> Result<(Self, Header)> {
        let reader = DiffReader::new(r).map_err(|e| match e {
            WireError::Banner => Error::invalid(format!("the {which} diff is not an rbd diff")),
            other => wire_error(other),
        })?;
        let mut input = Input {
            reader,
            which,
            current: None,
            last_end: 0,
        };
        let mut header = Header::default();
        loop {
            match input.reader.next_record().map_err(wire_error)? {
                Record::FromSnap(s) => header.from = Some(s),
                Record::ToSnap(s) => header.to = Some(s),
                Record::Size(s) => header.size = Some(s),
                Record::Protection(_) => {}
                Record::End => return Ok((input, header)),
                Record::Write { offset, length } => {
                    input.set(offset, length, true)?;
                    return Ok((input, header));
                }
                Record::Zero { offset, length } => {
                    input.set(offset, length, false)?;
                    return Ok((input, header));
                }
            }
        }
    }

    fn set(&mut self, offset: u64, length: u64, data: bool) -> Result<()> {
        if offset < self.last_end {
            return Err(Error::invalid(format!(
                "the {} diff is not sorted: an extent at {offset} follows one ending at {}",
                self.which, self.last_end
            )));
        }
        self.last_end = offset + length;
        self.current = Some(Piece {
            offset,
            length,
            data,
        });
        Ok(())
    }

    /// Moves to the next data record (or to the end).
    fn advance(&mut self) -> Result<()> {
        match self.reader.next_record().map_err(wire_error)? {
            Record::End => {
                self.current = None;
                Ok(())
            }
            Record::Write { offset, length } => self.set(offset, length, true),
            Record::Zero { offset, length } => self.set(offset, length, false),
            Record::FromSnap(_) | Record::ToSnap(_) | Record::Size(_) | Record::Protection(_) => {
                Err(Error::invalid(format!(
                    "the {} diff has a header record after its data",
                    self.which
                )))
            }
        }
    }

    /// Takes the first `n` bytes of the current record: copied to `out` if given, else
    /// skipped. Moves on when the record is used up.
    fn take<W: Write>(&mut self, n: u64, out: Option<&mut DiffWriter<W>>) -> Result<()> {
        let Some(piece) = self.current else {
            return Ok(());
        };
        let n = n.min(piece.length);
        if let Some(out) = out {
            if piece.data {
                out.begin_write(piece.offset, n).map_err(write_error)?;
            } else {
                out.zero(piece.offset, n).map_err(write_error)?;
            }
            if piece.data {
                copy_data(&mut self.reader, n, Some(out))?;
            }
        } else if piece.data {
            copy_data::<R, W>(&mut self.reader, n, None)?;
        }
        if n == piece.length {
            self.advance()
        } else {
            self.current = Some(Piece {
                offset: piece.offset + n,
                length: piece.length - n,
                data: piece.data,
            });
            Ok(())
        }
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::invalid(format!("cannot write the merged diff: {e}"))
}

/// Moves `n` bytes of write data from `reader` to `out` (or nowhere).
fn copy_data<R: Read, W: Write>(
    reader: &mut DiffReader<R>,
    n: u64,
    mut out: Option<&mut DiffWriter<W>>,
) -> Result<()> {
    let mut buf = vec![0u8; PIECE.min(n as usize)];
    let mut left = n;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let got = reader.read_data(&mut buf[..want]).map_err(wire_error)?;
        if got == 0 {
            return Err(Error::invalid("malformed diff: write data ends early"));
        }
        if let Some(out) = out.as_deref_mut() {
            out.write_data(&buf[..got]).map_err(write_error)?;
        }
        left -= got as u64;
    }
    Ok(())
}

/// Merges diff `first` (A to B) and diff `second` (B to C) into `out` (A to C, version 1).
pub fn merge_diff(first: impl Read, second: impl Read, out: impl Write) -> Result<()> {
    let (mut a, ha) = Input::open(first, "first")?;
    let (mut b, hb) = Input::open(second, "second")?;
    if let (Some(to), Some(from)) = (&ha.to, &hb.from)
        && to != from
    {
        return Err(Error::invalid(format!(
            "the diffs are not consecutive: the first ends at snapshot {to}, the second starts \
             at snapshot {from}"
        )));
    }
    let size = hb
        .size
        .or(ha.size)
        .ok_or_else(|| Error::invalid("neither diff records the image size; cannot merge them"))?;
    let mut w = DiffWriter::new(out, Version::V1).map_err(write_error)?;
    w.header(ha.from.as_deref(), hb.to.as_deref(), None, size)
        .map_err(write_error)?;
    loop {
        match (a.current, b.current) {
            (None, None) => break,
            (Some(pa), Some(pb)) if pa.offset < pb.offset => {
                // The first diff's bytes before the second's next record are kept (clipped).
                let n = pa.end().min(pb.offset) - pa.offset;
                emit_clipped(&mut a, n, size, &mut w)?;
            }
            (Some(_), Some(pb)) => {
                // The second diff wins: drop what the first has under this record.
                while let Some(pa) = a.current {
                    if pa.offset >= pb.end() {
                        break;
                    }
                    let n = pa.end().min(pb.end()) - pa.offset;
                    a.take::<Vec<u8>>(n, None)?;
                }
                emit_clipped(&mut b, pb.length, size, &mut w)?;
            }
            (Some(pa), None) => emit_clipped(&mut a, pa.length, size, &mut w)?,
            (None, Some(pb)) => emit_clipped(&mut b, pb.length, size, &mut w)?,
        }
    }
    w.end().map_err(write_error)?;
    Ok(())
}

/// Emits the first `n` bytes of `input`'s current record, dropping what lies past `size`.
fn emit_clipped<R: Read, W: Write>(
    input: &mut Input<R>,
    n: u64,
    size: u64,
    w: &mut DiffWriter<W>,
) -> Result<()> {
    let Some(piece) = input.current else {
        return Ok(());
    };
    let keep = size.saturating_sub(piece.offset).min(n);
    if keep > 0 {
        input.take(keep, Some(w))?;
    }
    if n > keep {
        input.take::<W>(n - keep, None)?;
    }
    Ok(())
}
