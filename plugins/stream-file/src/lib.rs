//! The `file` stream: `{"type": "file", "file_path": "<path>"}`.
//!
//! Reads are positional (`pread` on a blocking thread), so many run at once. The size and
//! modification time are pinned when the file is opened; a read that finds them changed fails
//! with `Changed` instead of mixing two versions. Holes of a sparse file are reported as zero
//! extents (`SEEK_DATA`/`SEEK_HOLE`), so copies stay sparse without reading them.

#![warn(missing_docs, missing_debug_implementations)]

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use rbdx_source::{
    BufferPool, Error, ErrorKind, Extent, ExtentKind, OpenContext, Result, SpecReader, Stream,
    StreamFactory, StreamRegistration, check_range, extent::normalize,
};
use serde_json::{Map, Value};

/// Opens `file` streams.
#[derive(Debug)]
pub struct FileStreamFactory;

rbdx_source::inventory::submit! { StreamRegistration(&FileStreamFactory) }

/// A local file.
#[derive(Debug)]
pub struct FileStream {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    mtime: Option<SystemTime>,
}

#[async_trait]
impl StreamFactory for FileStreamFactory {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn open(&self, spec: &Map<String, Value>, _ctx: &OpenContext) -> Result<Box<dyn Stream>> {
        let mut r = SpecReader::new(spec, "file stream");
        let path = PathBuf::from(r.str("file_path")?);
        r.finish()?;
        Ok(Box::new(FileStream::open(&path)?))
    }
}

impl FileStream {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<FileStream> {
        let file = File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        if meta.is_dir() {
            return Err(Error::invalid(format!("{} is a directory", path.display())));
        }
        Ok(FileStream {
            path: path.to_owned(),
            file: Arc::new(file),
            size: meta.len(),
            mtime: meta.modified().ok(),
        })
    }

    fn check_unchanged(&self) -> Result<()> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.path.display()), e))?;
        if meta.len() != self.size || meta.modified().ok() != self.mtime {
            return Err(Error::new(
                ErrorKind::Changed,
                format!("{} changed while it was being read", self.path.display()),
            ));
        }
        Ok(())
    }
}

/// Returns the allocated ranges of `file` within `[offset, end)`; file systems without
/// `SEEK_DATA` report everything as allocated.
fn data_ranges(file: &File, offset: u64, end: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let seek = |pos: u64, whence: i32| -> std::io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor owned by `file`, which outlives the call; SEEK_DATA and
        // SEEK_HOLE only move this descriptor's offset, which nothing else uses (reads are
        // positional).
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    };
    let mut out = Vec::new();
    let mut pos = offset;
    while pos < end {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                out.push((pos, end));
                break;
            }
            Err(e) => return Err(e),
        };
        if start >= end {
            break;
        }
        let stop = seek(start, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        out.push((start, stop));
        pos = stop;
    }
    Ok(out)
}

#[async_trait]
impl Stream for FileStream {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        check_range(self, offset, length, self.size)?;
        let file = self.file.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = BufferPool::global().take(length as usize);
            file.read_exact_at(&mut buf, offset).map(|()| buf)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("read task failed: {e}")))?
        .map_err(|e| {
            Error::io(
                format!("cannot read {}~{length} of {}", offset, self.path.display()),
                e,
            )
        });
        // Checked after every read (one fstat), so that a file rewritten under an open
        // stream fails the reads that follow instead of handing out the new version's bytes
        // to a reader that mapped the old one.
        self.check_unchanged()?;
        data.map(|buf| buf.freeze())
    }

    async fn extents(&self, offset: u64, length: u64) -> Result<Vec<Extent>> {
        check_range(self, offset, length, self.size)?;
        let file = self.file.clone();
        let ranges =
            tokio::task::spawn_blocking(move || data_ranges(&file, offset, offset + length))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("extent task failed: {e}")))?
                .map_err(|e| Error::io(format!("cannot map {}", self.path.display()), e))?;
        let data = ranges
            .into_iter()
            .map(|(s, e)| Extent::data(s, e - s))
            .collect();
        Ok(normalize(data, offset, length, ExtentKind::Zero))
    }

    fn relative(&self, name: &str) -> Result<Map<String, Value>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut spec = Map::new();
        spec.insert("type".into(), Value::String("file".into()));
        spec.insert(
            "file_path".into(),
            Value::String(dir.join(name).to_string_lossy().into_owned()),
        );
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_positional_and_holes_are_zero_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"hello", 4 << 20).unwrap();
        drop(f);
        let s = FileStream::open(&path).unwrap();
        assert_eq!(s.size().await.unwrap(), 8 << 20);
        assert_eq!(s.read(4 << 20, 5).await.unwrap(), "hello");
        assert!(s.read((8 << 20) - 1, 2).await.is_err());
        let ext = s.extents(0, 8 << 20).await.unwrap();
        assert_eq!(ext[0].kind, ExtentKind::Zero);
        assert!(
            ext.iter()
                .any(|e| e.kind == ExtentKind::Data && e.offset <= 4 << 20 && e.end() > 4 << 20)
        );
        let data: u64 = ext
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| e.length)
            .sum();
        assert!(data < 1 << 20, "{ext:?}");
    }

    #[tokio::test]
    async fn unknown_keys_and_missing_files_are_errors() {
        let ctx = OpenContext::new(Arc::new(rbdx_source::Registry::new()));
        let spec: Map<String, Value> =
            serde_json::from_str(r#"{"type":"file","file_path":"/x","bogus":1}"#).unwrap();
        let e = FileStreamFactory.open(&spec, &ctx).await.unwrap_err();
        assert!(e.to_string().contains("unknown key 'bogus'"), "{e}");
        let spec: Map<String, Value> =
            serde_json::from_str(r#"{"type":"file","file_path":"/nonexistent/x"}"#).unwrap();
        let e = FileStreamFactory.open(&spec, &ctx).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
