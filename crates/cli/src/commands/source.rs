//! `rbdx source probe|export`: open an import source without touching any image.
//!
//! The store is opened only if the spec has `config://` values to resolve.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use rbdx_objstore::ObjectStore;
use rbdx_source::{Clusters, ExtentKind, Format, OpenContext, Registry, SecretStore, SourceSpec};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::args::Global;
use crate::args::{SourceCommand, SourceSpecArg};
use crate::error::{CliError, CliResult};
use crate::output::Printer;
use crate::progress::ProgressLine;
use crate::size::format_size;

/// Resolves `config://` values from the selected store, opened on first use.
struct StoreSecrets {
    global: Global,
    store: OnceCell<Arc<dyn ObjectStore>>,
}

#[async_trait]
impl SecretStore for StoreSecrets {
    async fn get(&self, key: &str) -> rbdx_source::Result<String> {
        let store = self
            .store
            .get_or_try_init(|| crate::store::open(&self.global))
            .await
            .map_err(|e| {
                rbdx_source::Error::new(
                    rbdx_source::ErrorKind::NotFound,
                    format!("cannot open the store to read config://{key}: {e}"),
                )
            })?;
        let value = store.config_key_get(key).await.map_err(|e| {
            let kind = if e.kind() == rbdx_objstore::ErrorKind::NotFound {
                rbdx_source::ErrorKind::NotFound
            } else {
                rbdx_source::ErrorKind::Io
            };
            rbdx_source::Error::new(kind, format!("cannot read config://{key}: {e}"))
        })?;
        String::from_utf8(value.to_vec()).map_err(|_| {
            rbdx_source::Error::invalid(format!("config://{key} does not hold UTF-8 text"))
        })
    }
}

#[async_trait]
impl Clusters for StoreSecrets {
    async fn store(
        &self,
        name: Option<&str>,
        client: Option<&str>,
    ) -> rbdx_source::Result<Arc<dyn ObjectStore>> {
        let unavailable = |e: CliError| {
            rbdx_source::Error::new(
                rbdx_source::ErrorKind::NotFound,
                format!("cannot open cluster {}: {e}", name.unwrap_or("(current)")),
            )
        };
        let Some(name) = name else {
            return self
                .store
                .get_or_try_init(|| crate::store::open(&self.global))
                .await
                .cloned()
                .map_err(unavailable);
        };
        crate::store::open_other(&self.global, name, client)
            .await
            .map_err(unavailable)
    }
}

/// Reads the spec from the argument, a file or standard input.
pub fn read_spec(arg: &SourceSpecArg) -> CliResult<SourceSpec> {
    let text = match (&arg.source_spec, &arg.source_spec_path) {
        (Some(json), _) => json.clone(),
        (None, Some(path)) => {
            let bytes = crate::commands::read_input(path)?;
            String::from_utf8(bytes)
                .map_err(|_| CliError::invalid("the source spec is not UTF-8 text"))?
        }
        (None, None) => {
            return Err(CliError::invalid(
                "give --source-spec or --source-spec-path",
            ));
        }
    };
    Ok(SourceSpec::parse(&text)?)
}

/// Returns an open context with every linked driver, the plugins of `--plugin-dir` (a
/// refused plugin is reported on stderr and left out), the store's secrets and access to
/// clusters for native sources.
pub fn context(global: &Global) -> CliResult<OpenContext> {
    context_with(global, OnceCell::new())
}

/// Like [`context`], with the store already open.
pub fn context_for_store(global: &Global, store: Arc<dyn ObjectStore>) -> CliResult<OpenContext> {
    context_with(global, OnceCell::new_with(Some(store)))
}

fn context_with(global: &Global, store: OnceCell<Arc<dyn ObjectStore>>) -> CliResult<OpenContext> {
    let mut registry = Registry::builtin();
    if let Some(dir) = &global.plugin_dir {
        for load in registry.load_dir(dir)? {
            if let Err(e) = load.result {
                eprintln!("rbdx: warning: {e}");
            }
        }
    }
    let access = Arc::new(StoreSecrets {
        global: global.clone(),
        store,
    });
    Ok(OpenContext::new(Arc::new(registry))
        .with_secrets(access.clone())
        .with_clusters(access))
}

/// Sums the data extents of a view, a gigabyte at a time.
async fn allocated(format: &dyn Format, snap: Option<usize>) -> CliResult<u64> {
    let size = format.view_size(snap);
    let mut total = 0;
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(1 << 30);
        for e in format.extents(snap, offset, len).await? {
            if e.kind == ExtentKind::Data {
                total += e.length;
            }
        }
        offset += len;
    }
    Ok(total)
}

#[derive(Serialize)]
struct SnapOut {
    name: String,
    size: u64,
    allocated: u64,
}

#[derive(Serialize)]
struct ProbeOut {
    format: String,
    source: String,
    size: u64,
    allocated: u64,
    snapshots: Vec<SnapOut>,
    spec: serde_json::Value,
}

/// Runs a source command.
pub async fn run(
    global: &Global,
    command: SourceCommand,
    printer: Printer,
    show_progress: bool,
) -> CliResult {
    let ctx = context(global)?;
    match command {
        SourceCommand::Probe { spec } => {
            let spec = read_spec(&spec)?;
            let format = ctx.registry().open(&spec, &ctx).await?;
            let mut snapshots = Vec::new();
            for (i, s) in format.snapshots().iter().enumerate() {
                snapshots.push(SnapOut {
                    name: s.name.clone(),
                    size: s.size,
                    allocated: allocated(format.as_ref(), Some(i)).await?,
                });
            }
            let out = ProbeOut {
                format: format.format_name().to_owned(),
                source: format.describe(),
                size: format.size(),
                allocated: allocated(format.as_ref(), None).await?,
                snapshots,
                spec: spec.redacted(),
            };
            printer.print("source", &out, |o| {
                println!("format: {}", o.format);
                println!("source: {}", o.source);
                println!("size: {} ({} bytes)", format_size(o.size), o.size);
                println!(
                    "allocated: {} ({} bytes)",
                    format_size(o.allocated),
                    o.allocated
                );
                if o.snapshots.is_empty() {
                    println!("snapshots: none");
                } else {
                    println!("snapshots:");
                    for s in &o.snapshots {
                        println!(
                            "\t{}  size {}  allocated {}",
                            s.name,
                            format_size(s.size),
                            format_size(s.allocated)
                        );
                    }
                }
            });
        }
        SourceCommand::Export { spec, snap, path } => {
            let spec = read_spec(&spec)?;
            let format = ctx.registry().open(&spec, &ctx).await?;
            let view = match &snap {
                None => None,
                Some(name) => Some(
                    format
                        .snapshots()
                        .iter()
                        .position(|s| s.name == *name)
                        .ok_or_else(|| {
                            CliError::with_code(
                                format!("{} has no snapshot '{name}'", format.describe()),
                                2,
                            )
                        })?,
                ),
            };
            let to_stdout = path.as_os_str() == "-";
            let progress = ProgressLine::new("Exporting source", show_progress && !to_stdout);
            let result = export(format.as_ref(), view, &path, &progress).await;
            match result {
                Ok(()) => progress.finish(),
                Err(e) => {
                    progress.fail();
                    if !to_stdout {
                        let _ = std::fs::remove_file(&path);
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

const CHUNK: u64 = 4 << 20;

async fn export(
    format: &dyn Format,
    snap: Option<usize>,
    path: &std::path::Path,
    progress: &ProgressLine,
) -> CliResult {
    use std::io::Write as _;
    let size = format.view_size(snap);
    let mut file = crate::commands::create_output(path)?;
    let to_file = file.is_some();
    let mut pieces = futures::stream::iter((0..size.div_ceil(CHUNK)).map(|i| i * CHUNK))
        .map(|off| async move {
            let len = CHUNK.min(size - off);
            // A file gets only the data (holes stay holes); standard output gets every byte,
            // read in one piece without looking for zeros.
            let parts = if to_file {
                format.read_sparse(snap, off, len, 4096).await?
            } else {
                vec![(off, format.read(snap, off, len).await?)]
            };
            Ok::<_, rbdx_source::Error>((off, len, parts))
        })
        .buffered(8);
    let mut stdout = crate::commands::bulk_stdout()?;
    while let Some((off, len, parts)) = pieces.try_next().await? {
        match file.as_mut() {
            Some(f) => {
                for (at, data) in parts {
                    std::os::unix::fs::FileExt::write_all_at(f, &data, at)
                        .map_err(|e| CliError::io("cannot write the export file", e))?;
                }
            }
            None => {
                for (_, data) in parts {
                    stdout
                        .write_all(&data)
                        .map_err(|e| CliError::io("cannot write to standard output", e))?;
                }
            }
        }
        progress.update(off + len, size);
    }
    match file {
        Some(f) => f
            .set_len(size)
            .and_then(|()| f.sync_all())
            .map_err(|e| CliError::io("cannot finish the export file", e))?,
        None => stdout
            .flush()
            .map_err(|e| CliError::io("cannot write to standard output", e))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn linked_drivers_are_registered() {
        let registry = rbdx_source::Registry::builtin();
        assert!(registry.format_names().contains(&"raw"), "{registry:?}");
        assert!(registry.format_names().contains(&"qcow"), "{registry:?}");
        assert!(registry.format_names().contains(&"native"), "{registry:?}");
        assert!(registry.stream_names().contains(&"file"), "{registry:?}");
        assert!(registry.stream_names().contains(&"http"), "{registry:?}");
        assert!(registry.stream_names().contains(&"nbd"), "{registry:?}");
        assert!(registry.stream_names().contains(&"s3"), "{registry:?}");
    }
}
