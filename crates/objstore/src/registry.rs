//! Object-store backends by name: the one dispatch point from a configuration's
//! `backend = "<name>"` to a store.
//!
//! A [`BackendConfig`] names a backend and holds its settings as strings (paths relative to the
//! configuration's directory, if it came from a file). A [`BackendRegistry`] maps backend names
//! to [`BackendFactory`]s and opens stores from configurations; an unknown name is an error
//! that lists the known ones.
//!
//! To add a backend:
//!
//! 1. In the backend's crate, implement [`BackendFactory`]: its `name`, and `open`, which reads
//!    its settings with [`BackendConfig::reader`] ([`SettingsReader::finish`] refuses keys the
//!    backend does not know).
//! 2. Register it where the program builds its registry (for the `rbdx` binary,
//!    `crates/cli/src/store.rs`), behind a cargo feature if it links something heavy.
//! 3. Run the conformance suite ([`crate::testkit`]) from the backend's `tests/conformance.rs`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use rbdx_objstore::registry::{BackendConfig, BackendRegistry, MemoryBackend};
//! let mut registry = BackendRegistry::new();
//! registry.register(std::sync::Arc::new(MemoryBackend))?;
//! let store = registry.open(&BackendConfig::new("memory").with("default_pool", "rbd")).await?;
//! assert_eq!(store.pool_list().await?[0].name, "rbd");
//! # Ok::<(), rbdx_objstore::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result, Subject};
use crate::memory::MemoryStore;
use crate::store::ObjectStore;

/// A backend and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The backend's name (`dir`, `memory`, `rados`, ...).
    pub backend: String,
    /// Its settings by key.
    pub settings: BTreeMap<String, String>,
    /// The directory relative paths are relative to (the configuration file's), if any.
    pub base_dir: Option<PathBuf>,
}

impl BackendConfig {
    /// Returns a configuration of `backend` with no settings.
    pub fn new(backend: impl Into<String>) -> BackendConfig {
        BackendConfig {
            backend: backend.into(),
            settings: BTreeMap::new(),
            base_dir: None,
        }
    }

    /// Sets `key` to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> BackendConfig {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Makes relative paths relative to `dir`.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> BackendConfig {
        self.base_dir = Some(dir.into());
        self
    }

    /// Returns the value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// Returns a reader that takes settings one by one and refuses the rest.
    pub fn reader(&self) -> SettingsReader<'_> {
        SettingsReader {
            config: self,
            taken: Vec::new(),
        }
    }
}

/// Takes a backend's settings; [`Self::finish`] refuses any it did not take.
#[derive(Debug)]
pub struct SettingsReader<'a> {
    config: &'a BackendConfig,
    taken: Vec<&'a str>,
}

impl<'a> SettingsReader<'a> {
    fn error(&self, detail: String) -> Error {
        Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(detail)
    }

    /// Takes an optional setting.
    pub fn optional(&mut self, key: &'a str) -> Option<String> {
        self.taken.push(key);
        self.config.settings.get(key).cloned()
    }

    /// Takes a setting the backend needs.
    pub fn required(&mut self, key: &'a str) -> Result<String> {
        self.optional(key).ok_or_else(|| {
            self.error(format!(
                "backend \"{}\" needs {key} = \"...\"",
                self.config.backend
            ))
        })
    }

    /// Takes an optional path, made absolute against the configuration's directory.
    pub fn optional_path(&mut self, key: &'a str) -> Option<PathBuf> {
        let base = self.config.base_dir.as_deref();
        self.optional(key).map(|p| resolve(base, Path::new(&p)))
    }

    /// Takes a path the backend needs, made absolute against the configuration's directory.
    pub fn required_path(&mut self, key: &'a str) -> Result<PathBuf> {
        let base = self.config.base_dir.as_deref();
        self.required(key).map(|p| resolve(base, Path::new(&p)))
    }

    /// Refuses the settings nobody took, naming them.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<&str> = self
            .config
            .settings
            .keys()
            .map(String::as_str)
            .filter(|k| !self.taken.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(self.error(format!(
            "backend \"{}\" does not know the setting(s) {} (it takes {})",
            self.config.backend,
            unknown.join(", "),
            self.taken.join(", ")
        )))
    }
}

fn resolve(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Opens stores of one backend.
#[async_trait]
pub trait BackendFactory: Send + Sync + fmt::Debug {
    /// The backend's name in configurations.
    fn name(&self) -> &'static str;

    /// Opens the store `config` describes (its `backend` is this factory's name).
    async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>>;
}

/// Backends by name.
#[derive(Debug, Default, Clone)]
pub struct BackendRegistry {
    factories: BTreeMap<&'static str, Arc<dyn BackendFactory>>,
}

impl BackendRegistry {
    /// Returns an empty registry.
    pub fn new() -> BackendRegistry {
        BackendRegistry::default()
    }

    /// Adds a backend; a second backend of the same name is refused.
    pub fn register(&mut self, factory: Arc<dyn BackendFactory>) -> Result<()> {
        let name = factory.name();
        if self.factories.contains_key(name) {
            return Err(Error::new(ErrorKind::AlreadyExists, Subject::Store)
                .with_detail(format!("backend \"{name}\" is registered twice")));
        }
        self.factories.insert(name, factory);
        Ok(())
    }

    /// Returns the names of the registered backends, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Returns true if backend `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Opens the store `config` describes.
    pub async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>> {
        let factory = self.factories.get(config.backend.as_str()).ok_or_else(|| {
            Error::new(ErrorKind::InvalidArgument, Subject::Store).with_detail(format!(
                "unknown backend \"{}\" (known: {})",
                config.backend,
                self.names().join(", ")
            ))
        })?;
        factory.open(config).await
    }
}

/// Creates pool `name` unless it exists: what a new store of a backend with a `default_pool`
/// setting starts with.
pub async fn ensure_pool(store: &dyn ObjectStore, name: &str) -> Result<()> {
    match store.pool_create(name).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `memory` backend: a new, empty in-memory store per open (gone with the process).
/// Settings: `default_pool` (a pool to create).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackend;

#[async_trait]
impl BackendFactory for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn open(&self, config: &BackendConfig) -> Result<Arc<dyn ObjectStore>> {
        let mut reader = config.reader();
        let pool = reader.optional("default_pool");
        reader.finish()?;
        let store = MemoryStore::new();
        if let Some(pool) = pool {
            ensure_pool(&store, &pool).await?;
        }
        Ok(Arc::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unknown_backends_and_settings_are_named() {
        let mut registry = BackendRegistry::new();
        registry
            .register(Arc::new(MemoryBackend))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(registry.register(Arc::new(MemoryBackend)).is_err());
        let err = block(registry.open(&BackendConfig::new("s3")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown backend \"s3\" (known: memory)"),
            "{err}"
        );
        let err = block(registry.open(&BackendConfig::new("memory").with("colour", "red")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("does not know the setting(s) colour"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_base_dir() {
        let config = BackendConfig::new("x")
            .with("data_dir", "store")
            .with("abs", "/a")
            .with_base_dir("/etc/rbdx");
        let mut reader = config.reader();
        assert_eq!(
            reader.optional_path("data_dir"),
            Some(PathBuf::from("/etc/rbdx/store"))
        );
        assert_eq!(reader.optional_path("abs"), Some(PathBuf::from("/a")));
        assert!(reader.finish().is_ok());
        assert!(config.reader().required("missing").is_err());
    }
}
