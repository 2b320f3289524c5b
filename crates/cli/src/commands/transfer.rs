//! `rbdx export` and `rbdx import` in export format 1 (the raw bytes); format 2 goes to
//! [`crate::commands::exchange`].
//!
//! Export reads object-sized chunks, several in flight, and writes them in order; into a file
//! it seeks over all-zero blocks so holes stay holes. Import reads the input on a blocking
//! thread, skips all-zero blocks of `--sparse-size`, and writes the rest with several writes
//! in flight. A failed import removes the image it created; a failed export removes the file
//! it created.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_image::{Cluster, Image, OpenOptions};
use rbdx_source::extent::nonzero_runs;

use crate::args::{ExportArgs, ImportArgs};
use crate::commands::create_opts::create_options;
use crate::commands::open::{images, open_view};
use crate::error::{CliError, CliResult};
use crate::progress::ProgressLine;
use crate::size::parse_size;
use crate::spec::{SnapRule, SpecOptions};

const SPARSE_BLOCK: usize = 4096;
const IN_FLIGHT: usize = 8;

fn check_format(format: u8) -> CliResult {
    match format {
        1 | 2 => Ok(()),
        n => Err(CliError::invalid(format!(
            "unknown export format {n} (1 or 2)"
        ))),
    }
}

/// `rbdx export`.
pub async fn export(cluster: &Cluster, args: ExportArgs, show_progress: bool) -> CliResult {
    check_format(args.export_format)?;
    let path = args
        .path
        .clone()
        .ok_or_else(|| CliError::invalid("export needs a path (or - for standard output)"))?;
    if args.export_format == 2 {
        return crate::commands::exchange::export_v2(cluster, &args, &path, show_progress).await;
    }
    let (_, image) = open_view(cluster, &args.image).await?;
    let to_stdout = path.as_os_str() == "-";
    let file = crate::commands::create_output(&path)?;
    let progress = ProgressLine::new("Exporting image", show_progress && !to_stdout);
    let result = export_into(&image, file, &progress).await;
    let closed = image.close().await;
    match result {
        Ok(()) => {
            progress.finish();
            closed?;
            Ok(())
        }
        Err(e) => {
            progress.fail();
            if !to_stdout {
                let _ = std::fs::remove_file(&path);
            }
            Err(e)
        }
    }
}

async fn export_into(image: &Image, mut file: Option<File>, progress: &ProgressLine) -> CliResult {
    let size = image.size();
    let chunk = image.layout().object_size().max(1 << 20);
    let offsets = (0..size.div_ceil(chunk)).map(|i| i * chunk);
    let mut reads = futures::stream::iter(offsets)
        .map(|off| async move {
            let len = chunk.min(size - off);
            image.read(off, len).await.map(|data| (off, data))
        })
        .buffered(IN_FLIGHT);
    let mut stdout = crate::commands::bulk_stdout()?;
    while let Some((off, data)) = reads.try_next().await? {
        match file.as_mut() {
            Some(f) => write_sparse(f, off, &data)
                .map_err(|e| CliError::io("cannot write the export file", e))?,
            None => stdout
                .write_all(&data)
                .map_err(|e| CliError::io("cannot write to standard output", e))?,
        }
        progress.update(off + data.len() as u64, size);
    }
    match file {
        Some(f) => {
            f.set_len(size)
                .and_then(|()| f.sync_all())
                .map_err(|e| CliError::io("cannot finish the export file", e))?;
        }
        None => stdout
            .flush()
            .map_err(|e| CliError::io("cannot write to standard output", e))?,
    }
    Ok(())
}

/// Writes the non-zero blocks of `data` at `offset`, leaving holes for the rest.
fn write_sparse(file: &mut File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    for (at, len) in nonzero_runs(data, SPARSE_BLOCK) {
        file.seek(SeekFrom::Start(offset + at as u64))?;
        file.write_all(&data[at..at + len])?;
    }
    Ok(())
}

/// Resolves the image an import creates: the spec and options given, else named after the
/// input file.
pub fn import_target(args: &ImportArgs) -> CliResult<crate::spec::ImageSpec> {
    let default_name = (args.path.as_os_str() != "-")
        .then(|| {
            args.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .flatten();
    let opts = SpecOptions {
        pool: args.pool.clone(),
        namespace: args.namespace.clone(),
        image: args.image.clone().or(if args.spec.is_none() {
            default_name
        } else {
            None
        }),
        snap: None,
    };
    opts.resolve(args.spec.as_deref(), SnapRule::None)
}

/// `rbdx import`.
pub async fn import(cluster: &Cluster, args: ImportArgs, show_progress: bool) -> CliResult {
    check_format(args.export_format)?;
    if args.export_format == 2 {
        return crate::commands::exchange::import_v2(cluster, &args, show_progress).await;
    }
    let from_stdin = args.path.as_os_str() == "-";
    let spec = import_target(&args)?;
    let sparse = usize::try_from(parse_size(&args.sparse_size, 1)?)
        .ok()
        .filter(|s| *s >= 512 && s.is_power_of_two())
        .ok_or_else(|| CliError::invalid("--sparse-size must be a power of two of at least 512"))?;
    let (file, size) = if from_stdin {
        (None, None)
    } else {
        let f = File::open(&args.path)
            .map_err(|e| CliError::io(format!("cannot open {}", args.path.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| CliError::io(format!("cannot stat {}", args.path.display()), e))?
            .len();
        (Some(f), Some(len))
    };
    let images = images(cluster, &spec.pool, &spec.namespace).await?;
    let create = create_options(cluster, size.unwrap_or(0), &args.create).await?;
    images.create(&spec.image, &create).await?;
    let progress = ProgressLine::new("Importing image", show_progress);
    let result = async {
        let image = images.open(&spec.image, OpenOptions::default()).await?;
        let copied = import_into(&image, file, size, sparse, &progress).await;
        let closed = image.close().await;
        copied?;
        closed?;
        Ok::<(), CliError>(())
    }
    .await;
    match result {
        Ok(()) => {
            progress.finish();
            Ok(())
        }
        Err(e) => {
            progress.fail();
            let _ = images.remove(&spec.image, &|_, _| {}).await;
            Err(e)
        }
    }
}

async fn import_into(
    image: &Image,
    file: Option<File>,
    size: Option<u64>,
    sparse: usize,
    progress: &ProgressLine,
) -> CliResult {
    let chunk = image.layout().object_size().max(1 << 20) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<(u64, Vec<u8>)>>(IN_FLIGHT);
    let reader = tokio::task::spawn_blocking(move || {
        if let (Some(f), Some(len)) = (&file, size) {
            // A file: read only its allocated ranges, holes are zeros anyway.
            let ranges = match rbdx_objstore_dir::data_ranges(f, 0, len) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for (start, end) in ranges {
                let mut at = start;
                while at < end {
                    let n = (end - at).min(chunk as u64) as usize;
                    let mut buf = vec![0u8; n];
                    if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, at) {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    if tx.blocking_send(Ok((at, buf))).is_err() {
                        return;
                    }
                    at += n as u64;
                }
            }
            return;
        }
        let mut input: Box<dyn std::io::Read> = match file {
            Some(f) => Box::new(f),
            None => Box::new(std::io::stdin()),
        };
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; chunk];
            let mut filled = 0;
            while filled < chunk {
                match input.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.blocking_send(Ok((offset, buf))).is_err() {
                return;
            }
            offset += filled as u64;
            if filled < chunk {
                return;
            }
        }
    });
    let mut writes = futures::stream::FuturesUnordered::new();
    let mut image_size = image.size();
    loop {
        let next = if writes.len() >= IN_FLIGHT {
            None
        } else {
            Some(rx.recv().await)
        };
        match next {
            Some(Some(item)) => {
                let (offset, data) = item.map_err(|e| CliError::io("cannot read the input", e))?;
                let end = offset + data.len() as u64;
                if end > image_size {
                    // Standard input has no size up front: grow as the data arrives. A
                    // resize waits for the writes in flight, so finish them first.
                    while let Some(result) = writes.next().await {
                        result?;
                    }
                    image.resize(end, false).await?;
                    image_size = end;
                }
                let data = Bytes::from(data);
                for (at, run) in nonzero_runs(&data, sparse) {
                    let piece = data.slice(at..at + run);
                    writes.push(async move {
                        image.write(offset + at as u64, piece).await?;
                        Ok::<u64, CliError>(end)
                    });
                }
                progress.update(end, size.unwrap_or(end));
            }
            Some(None) => break,
            None => {
                if let Some(result) = writes.next().await {
                    result?;
                }
            }
        }
        while let Some(Some(result)) = futures::FutureExt::now_or_never(writes.next()) {
            result?;
        }
    }
    while let Some(result) = writes.next().await {
        result?;
    }
    reader
        .await
        .map_err(|e| CliError::invalid(format!("input reader failed: {e}")))?;
    image.flush().await?;
    Ok(())
}
