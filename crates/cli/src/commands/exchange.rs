//! Ceph's exchange formats on the command line: `export`/`import --export-format 2`,
//! `export-diff`, `import-diff` and `merge-diff`, each with a file or `-` (standard input or
//! output), so `rbdx export-diff ... - | ssh host rbdx import-diff - ...` pipelines work.
//!
//! `import-diff` reads the whole diff once to check it (banner, records, extents within its
//! size, the end record, the from-snapshot present and the to-snapshot absent on the target)
//! before it changes anything; a diff from standard input is kept in an unnamed temporary file
//! for that. A failed check leaves the target untouched.

use std::fs::File;
use std::io::{BufReader, Read, Seek as _, SeekFrom};
use std::path::Path;

use rbdx_image::{Cluster, OpenOptions};
use rbdx_snapdiff::import::{self, ImportOptions};
use rbdx_snapdiff::wire::Version;
use rbdx_snapdiff::{DiffOptions, export, merge};
use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufWriter};

use crate::args::{ExportArgs, ExportDiffArgs, ImportArgs, ImportDiffArgs, MergeDiffArgs};
use crate::commands::blocking_file::BlockingFile;
use crate::commands::create_opts::create_options;
use crate::commands::open::{images, open_view, resolve};
use crate::error::{CliError, CliResult};
use crate::progress::ProgressLine;
use crate::size::parse_size;
use crate::spec::SnapRule;

/// Output buffer size.
const BUFFER: usize = 1 << 20;

/// An output the exchange formats are written to, without blocking the runtime.
type Output = BufWriter<BlockingFile>;

/// Opens `path` for writing (`-`: standard output); returns it and whether it is a file.
fn output(path: &Path) -> CliResult<(Output, bool)> {
    let (file, is_file) = match crate::commands::create_output(path)? {
        Some(f) => (f, true),
        None => (crate::commands::bulk_stdout()?, false),
    };
    Ok((
        BufWriter::with_capacity(BUFFER, BlockingFile::new(file)),
        is_file,
    ))
}

/// Opens `path` for reading (`-`: standard input); it is read on a blocking thread.
fn input(path: &Path) -> CliResult<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::with_capacity(BUFFER, std::io::stdin())));
    }
    let f =
        File::open(path).map_err(|e| CliError::io(format!("cannot open {}", path.display()), e))?;
    Ok(Box::new(BufReader::with_capacity(BUFFER, f)))
}

/// Finishes an output: flushes it, or removes a file that was left half-written.
async fn finish_output(
    result: CliResult,
    mut out: impl AsyncWrite + Unpin,
    path: &Path,
    is_file: bool,
) -> CliResult {
    let flushed = out
        .flush()
        .await
        .map_err(|e| CliError::io(format!("cannot write {}", path.display()), e));
    drop(out);
    let result = result.and(flushed);
    if result.is_err() && is_file {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// `rbdx export --export-format 2`.
pub async fn export_v2(cluster: &Cluster, args: &ExportArgs, path: &Path, show: bool) -> CliResult {
    let (spec, images) = resolve(cluster, &args.image, SnapRule::None).await?;
    let image = images
        .open(&spec.image, OpenOptions::default().with_read_only(true))
        .await?;
    let (mut out, is_file) = output(path)?;
    let progress = ProgressLine::new("Exporting image", show && is_file);
    let result = export::export_image(&image, &mut out, &|d, t| progress.update(d, t)).await;
    let closed = image.close().await;
    let result = finish_output(
        result.map(|_| ()).map_err(CliError::from),
        out,
        path,
        is_file,
    )
    .await;
    progress.conclude(result.and(closed.map_err(CliError::from)))
}

/// `rbdx import --export-format 2`.
pub async fn import_v2(cluster: &Cluster, args: &ImportArgs, show: bool) -> CliResult {
    let spec = crate::commands::transfer::import_target(args)?;
    let sparse_size = sparse(&args.sparse_size)?;
    let create = create_options(cluster, 0, &args.create).await?;
    let images = images(cluster, &spec.pool, &spec.namespace).await?;
    let reader = input(&args.path)?;
    let progress = ProgressLine::new("Importing image", show);
    let options = ImportOptions {
        create: Some(create),
        sparse_size,
    };
    let result = import::import_image(&images, &spec.image, reader, &options, &|done| {
        progress.update(done, done.max(1))
    })
    .await;
    progress.conclude(result)
}

fn sparse(text: &str) -> CliResult<usize> {
    usize::try_from(parse_size(text, 1)?)
        .ok()
        .filter(|s| *s >= 512 && s.is_power_of_two())
        .ok_or_else(|| CliError::invalid("--sparse-size must be a power of two of at least 512"))
}

/// `rbdx export-diff`.
pub async fn export_diff(cluster: &Cluster, args: ExportDiffArgs, show: bool) -> CliResult {
    let path = args
        .path
        .clone()
        .ok_or_else(|| CliError::invalid("export-diff needs a path (or - for standard output)"))?;
    let (spec, image) = open_view(cluster, &args.image).await?;
    let options = DiffOptions::default()
        .with_from_snap(args.from_snap.clone())
        .with_whole_object(args.whole_object);
    if let Some(from) = &args.from_snap
        && image.header().snapshot_by_name(from).is_none()
    {
        image.close().await?;
        return Err(CliError::from(rbdx_image::Error::not_found(format!(
            "snapshot {from} of image {} does not exist",
            spec.image
        ))));
    }
    let (mut out, is_file) = output(&path)?;
    let progress = ProgressLine::new("Exporting image", show && is_file);
    let result = export::export_diff(&image, &options, Version::V1, &mut out, &|d, t| {
        progress.update(d, t)
    })
    .await;
    let closed = image.close().await;
    let result = finish_output(
        result.map(|_| ()).map_err(CliError::from),
        out,
        &path,
        is_file,
    )
    .await;
    progress.conclude(result.and(closed.map_err(CliError::from)))
}

/// Returns a seekable copy of the diff at `path`: the file itself, or standard input spooled
/// into an unnamed temporary file.
fn seekable(path: &Path) -> CliResult<File> {
    if path.as_os_str() != "-" {
        return File::open(path)
            .map_err(|e| CliError::io(format!("cannot open {}", path.display()), e));
    }
    let mut spool =
        tempfile::tempfile().map_err(|e| CliError::io("cannot create a temporary file", e))?;
    let mut stdin = std::io::stdin().lock();
    std::io::copy(&mut stdin, &mut spool)
        .map_err(|e| CliError::io("cannot read the diff from standard input", e))?;
    spool
        .seek(SeekFrom::Start(0))
        .map_err(|e| CliError::io("cannot read back the temporary file", e))?;
    Ok(spool)
}

/// `rbdx import-diff`.
pub async fn import_diff(cluster: &Cluster, args: ImportDiffArgs, show: bool) -> CliResult {
    let sparse_size = sparse(&args.sparse_size)?;
    let (spec, images) = resolve(cluster, &args.image, SnapRule::None).await?;
    let path = args.path.clone();
    // Reading a file or a pipe blocks: the check runs on a blocking thread.
    let (file, summary) = tokio::task::spawn_blocking(move || {
        let mut file = seekable(&path)?;
        let summary = import::validate(BufReader::with_capacity(BUFFER, &mut file))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| CliError::io("cannot read the diff again", e))?;
        Ok::<_, CliError>((file, summary))
    })
    .await
    .map_err(|e| CliError::with_code(format!("reading the diff failed: {e}"), 5))??;
    let image = images.open(&spec.image, OpenOptions::default()).await?;
    if let Err(e) = import::check_target(&image, &summary) {
        image.close().await?;
        return Err(e.into());
    }
    let total = summary.data_bytes + summary.zero_bytes;
    let progress = ProgressLine::new("Importing image diff", show);
    let result = import::apply_diff(
        &image,
        BufReader::with_capacity(BUFFER, file),
        sparse_size,
        &|done| progress.update(done, total),
    )
    .await;
    let closed = image.close().await;
    progress.conclude(
        result
            .map(|_| ())
            .map_err(CliError::from)
            .and(closed.map_err(CliError::from)),
    )
}

/// `rbdx merge-diff`.
pub async fn merge_diff(args: MergeDiffArgs) -> CliResult {
    if args.second.as_os_str() == "-" {
        return Err(CliError::invalid(
            "merge-diff reads only the first diff from standard input",
        ));
    }
    let first = input(&args.first)?;
    let second = input(&args.second)?;
    let merged = args.merged.clone();
    let is_file = merged.as_os_str() != "-";
    // A merge only reads and writes files: it runs on a blocking thread.
    let result = tokio::task::spawn_blocking(move || {
        let mut out: Box<dyn std::io::Write> = match crate::commands::create_output(&merged)? {
            Some(f) => Box::new(std::io::BufWriter::with_capacity(BUFFER, f)),
            None => Box::new(std::io::BufWriter::with_capacity(
                BUFFER,
                crate::commands::bulk_stdout()?,
            )),
        };
        merge::merge_diff(first, second, &mut out).map_err(CliError::from)?;
        out.flush()
            .map_err(|e| CliError::io(format!("cannot write {}", merged.display()), e))
    })
    .await
    .map_err(|e| CliError::with_code(format!("merging failed: {e}"), 5))?;
    if result.is_err() && is_file {
        let _ = std::fs::remove_file(&args.merged);
    }
    result
}
