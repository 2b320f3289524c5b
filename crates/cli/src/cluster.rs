//! Which cluster a command talks to, from the global options and rbdx config files.
//!
//! An rbdx config file is TOML with one `[cluster]` section:
//!
//! ```toml
//! [cluster]
//! backend = "rados"                 # or "dir"
//! ceph_conf = "/etc/ceph/ceph.conf" # rados: the cluster's ceph.conf
//! keyring = "/etc/ceph/ceph.client.rbdx.keyring"  # rados, optional
//! id = "rbdx"                       # rados, optional (or name = "client.rbdx")
//! data_dir = "/srv/rbdx"            # dir: the embedded store's directory
//! # remote (another site's store through its gateway; `rbdx gateway key create` prints this):
//! # endpoint = "site-a:7000", fingerprint = "sha256:...", name = "client.b", key = "..."
//!
//! [client]                          # optional: rbd client settings
//! rbd_default_clone_format = "2"    # 1, 2 or auto
//! ```
//!
//! Client settings are also read from a `ceph.conf` (`[client]`, then `[global]`; `rbd default
//! clone format` and `rbd_default_clone_format` are the same key), as `rbd` reads them.
//!
//! `-c FILE` reads one (a `ceph.conf` given there is used directly, as `rbd -c` does);
//! `--ceph-conf FILE` names a Ceph cluster directly; `--data-dir` (or `RBDX_DATA_DIR`) an
//! embedded store; `--cluster NAME` looks for `NAME.conf` in `$XDG_CONFIG_HOME/rbdx`
//! (`~/.config/rbdx`) and `/etc/rbdx`. Without any of them, the cluster is the embedded store
//! `~/.local/share/rbdx/NAME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbdx_objstore::BackendConfig;
use serde::Deserialize;

use crate::args::Global;
use crate::error::{CliError, CliResult};

/// The pool a new embedded store starts with, as a Ceph cluster set up for RBD has.
pub const DEFAULT_POOL: &str = "rbd";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    cluster: BTreeMap<String, toml::Value>,
    #[serde(default)]
    client: BTreeMap<String, toml::Value>,
}

/// What a config file turned out to be.
enum Loaded {
    /// An rbdx config: its `[cluster]` and `[client]` tables.
    Rbdx(BTreeMap<String, toml::Value>, BTreeMap<String, toml::Value>),
    /// A `ceph.conf`, with its text.
    CephConf(String),
}

fn load(path: &Path) -> CliResult<Loaded> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("cannot read config file {}", path.display()), e))?;
    match toml::from_str::<ConfigFile>(&text) {
        Ok(file) => Ok(Loaded::Rbdx(file.cluster, file.client)),
        Err(_) if looks_like_ceph_conf(&text) => Ok(Loaded::CephConf(text)),
        Err(e) => Err(CliError::invalid(format!(
            "{}: not an rbdx config: {}",
            path.display(),
            e.message()
        ))),
    }
}

/// A TOML value as a setting string.
fn setting_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn looks_like_ceph_conf(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "[global]" || l.starts_with("mon host") || l.starts_with("mon_host")
    })
}

/// The config file `--cluster NAME` selects, if one exists.
fn cluster_file(name: &str) -> Option<PathBuf> {
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("rbdx"));
    user.into_iter()
        .chain([PathBuf::from("/etc/rbdx")])
        .map(|d| d.join(format!("{name}.conf")))
        .find(|p| p.is_file())
}

/// The default embedded store of `--cluster NAME`.
fn default_data_dir(cluster: &str) -> CliResult<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .ok_or_else(|| CliError::invalid("no --data-dir given and no HOME to find the default"))?;
    Ok(base.join("rbdx").join(cluster))
}

fn entity(id: Option<&str>, name: Option<&str>) -> Option<String> {
    match (id, name) {
        (_, Some(name)) => Some(name.to_owned()),
        (Some(id), None) => Some(format!("client.{id}")),
        (None, None) => None,
    }
}

/// A Ceph cluster's backend configuration: its `ceph.conf`, the keyring and user the command
/// line gives (else those of `from_file`), `client.admin` by default.
fn rados_config(global: &Global, ceph_conf: &Path, from_file: BackendConfig) -> BackendConfig {
    let mut config =
        BackendConfig::new("rados").with("ceph_conf", ceph_conf.to_string_lossy().into_owned());
    config.base_dir = from_file.base_dir.clone();
    let file_entity = entity(from_file.get("id"), from_file.get("name"));
    let name = entity(global.id.as_deref(), global.user_name.as_deref())
        .or(file_entity)
        .unwrap_or_else(|| "client.admin".to_owned());
    config = config.with("name", name);
    if let Some(keyring) = global.keyring.as_ref() {
        config = config.with("keyring", keyring.to_string_lossy().into_owned());
    } else if let Some(keyring) = from_file.get("keyring") {
        config = config.with("keyring", keyring);
    }
    for (key, value) in from_file.settings {
        if !["ceph_conf", "keyring", "id", "name"].contains(&key.as_str()) {
            config.settings.insert(key, value);
        }
    }
    config
}

/// Works out the store the global options select, as a backend configuration for the
/// registry (`crate::store`).
pub fn resolve(global: &Global) -> CliResult<BackendConfig> {
    let (config, source) = if let Some(ceph_conf) = &global.ceph_conf {
        (
            rados_config(global, ceph_conf, BackendConfig::new("rados")),
            "--ceph-conf",
        )
    } else if let Some(file) = global.conf.clone().or_else(|| {
        global
            .data_dir
            .is_none()
            .then(|| cluster_file(&global.cluster))
            .flatten()
    }) {
        let config = match load(&file)? {
            Loaded::CephConf(_) => rados_config(global, &file, BackendConfig::new("rados")),
            Loaded::Rbdx(table, _) => from_table(&file, table, global)?,
        };
        (config, "the config file")
    } else {
        let dir = match &global.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir(&global.cluster)?,
        };
        let config = BackendConfig::new("dir").with("data_dir", dir.to_string_lossy().into_owned());
        (config, "")
    };
    // RBDX_DATA_DIR in the environment yields to a cluster chosen on the command line.
    let data_dir_flag = global.data_dir.is_some()
        && std::env::var_os("RBDX_DATA_DIR").map(PathBuf::from) != global.data_dir;
    if config.backend == "rados" && data_dir_flag {
        return Err(CliError::invalid(format!(
            "--data-dir selects an embedded store, but {source} selects a Ceph cluster"
        )));
    }
    if config.backend != "rados" {
        // Scripts written for `rbd` pass a user everywhere (`--id admin`); the embedded
        // store has no users, so the name is accepted and not checked. A keyring that does
        // not exist is still a mistake worth stopping for.
        if let Some(keyring) = &global.keyring
            && !keyring.exists()
        {
            return Err(CliError::with_code(
                format!("keyring {} does not exist", keyring.display()),
                2,
            ));
        }
        if let Some(entity) = entity(global.id.as_deref(), global.user_name.as_deref()) {
            tracing::debug!(
                "user {entity} is not checked: the {} store has no users",
                config.backend
            );
        }
    }
    Ok(config)
}

/// The backend configuration of an rbdx config file's `[cluster]` table.
fn from_table(
    file: &Path,
    table: BTreeMap<String, toml::Value>,
    global: &Global,
) -> CliResult<BackendConfig> {
    let mut settings: BTreeMap<String, String> = table
        .iter()
        .map(|(k, v)| (k.clone(), setting_text(v)))
        .collect();
    let backend = settings.remove("backend").ok_or_else(|| {
        CliError::invalid(format!(
            "{}: not an rbdx config: [cluster] needs backend = \"dir\", \"rados\", \"remote\" or \"memory\"",
            file.display()
        ))
    })?;
    let known = crate::store::registry();
    if backend != "rados" && !known.contains(&backend) {
        return Err(CliError::invalid(format!(
            "{}: unknown backend \"{backend}\" (known: {})",
            file.display(),
            known.names().join(", ")
        )));
    }
    let mut config = BackendConfig {
        backend,
        settings,
        base_dir: file.parent().map(Path::to_path_buf),
    };
    match config.backend.as_str() {
        "rados" => {
            let Some(ceph_conf) = config.settings.get("ceph_conf").cloned() else {
                return Err(CliError::invalid(format!(
                    "{}: backend \"rados\" needs ceph_conf = \"/path/to/ceph.conf\"",
                    file.display()
                )));
            };
            let ceph_conf = relative_to(file, Path::new(&ceph_conf));
            Ok(rados_config(global, &ceph_conf, config))
        }
        "dir" => {
            if let Some(dir) = &global.data_dir {
                config
                    .settings
                    .insert("data_dir".into(), dir.to_string_lossy().into_owned());
            } else if !config.settings.contains_key("data_dir") {
                let dir = default_data_dir(&global.cluster)?;
                config
                    .settings
                    .insert("data_dir".into(), dir.to_string_lossy().into_owned());
            }
            Ok(config)
        }
        _ => Ok(config),
    }
}

/// Makes `path` relative to the directory of config file `file`.
fn relative_to(file: &Path, path: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Returns how another process names the store the global options select: the path of the
/// `ceph.conf`, config file or embedded store's directory given, else the cluster name. What
/// [`crate::store::open_other`] opens again.
pub fn reference(global: &Global) -> String {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .to_string_lossy()
            .into_owned()
    };
    if let Some(p) = &global.ceph_conf {
        absolute(p)
    } else if let Some(p) = &global.conf {
        absolute(p)
    } else if let Some(p) = &global.data_dir {
        absolute(p)
    } else {
        global.cluster.clone()
    }
}

/// Normalises a Ceph option name: spaces and underscores are the same.
fn option_key(key: &str) -> String {
    key.trim().replace(' ', "_").to_ascii_lowercase()
}

/// Looks `key` up in a `ceph.conf`: in `[client]`, then in `[global]`.
fn ceph_conf_setting(text: &str, key: &str) -> Option<String> {
    let want = option_key(key);
    let mut section = String::new();
    let mut found: Option<(bool, String)> = None;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default().trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if option_key(k) != want {
            continue;
        }
        let in_client = section == "client";
        if in_client || section == "global" && found.as_ref().is_none_or(|(c, _)| !c) {
            found = Some((in_client, v.trim().to_owned()));
        }
    }
    found.map(|(_, v)| v)
}

/// Returns client setting `key` (e.g. `rbd_default_clone_format`) from the config file the
/// global options select: an rbdx config's `[client]` table (then the `ceph.conf` it names),
/// or a `ceph.conf`. `None` when no file sets it.
pub fn client_setting(global: &Global, key: &str) -> CliResult<Option<String>> {
    let file = global
        .ceph_conf
        .clone()
        .or_else(|| global.conf.clone())
        .or_else(|| {
            global
                .data_dir
                .is_none()
                .then(|| cluster_file(&global.cluster))
                .flatten()
        });
    let Some(file) = file else {
        return Ok(None);
    };
    match load(&file)? {
        Loaded::CephConf(text) => Ok(ceph_conf_setting(&text, key)),
        Loaded::Rbdx(cluster, client) => {
            let wanted = option_key(key);
            let own = client
                .iter()
                .find(|(k, _)| option_key(k) == wanted)
                .map(|(_, v)| setting_text(v));
            if own.is_some() {
                return Ok(own);
            }
            match cluster.get("ceph_conf").map(setting_text) {
                Some(conf) => {
                    let conf = relative_to(&file, Path::new(&conf));
                    let text = std::fs::read_to_string(&conf)
                        .map_err(|e| CliError::io(format!("cannot read {}", conf.display()), e))?;
                    Ok(ceph_conf_setting(&text, key))
                }
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::Cli;

    fn global(args: &[&str]) -> Global {
        let mut full = vec!["rbdx"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["pool", "ls"]);
        Cli::try_parse_from(full)
            .unwrap_or_else(|e| panic!("{e}"))
            .global
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    #[test]
    fn ceph_conf_with_id_selects_rados() {
        let target = resolve(&global(&[
            "--ceph-conf",
            "/etc/ceph/ceph.conf",
            "--id",
            "rbdx",
        ]));
        assert_eq!(
            target.unwrap_or_else(|e| panic!("{e}")),
            BackendConfig::new("rados")
                .with("ceph_conf", "/etc/ceph/ceph.conf")
                .with("name", "client.rbdx")
        );
    }

    #[test]
    fn config_file_paths_are_relative_to_it_and_flags_override() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = write(
            dir.path(),
            "site.conf",
            "[cluster]\nbackend = \"rados\"\nceph_conf = \"ceph.conf\"\nkeyring = \"k\"\nid = \"a\"\n",
        );
        let conf = conf.to_string_lossy().into_owned();
        let target = resolve(&global(&["-c", &conf, "--name", "client.b"]));
        let config = target.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.backend, "rados");
        let path = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        assert_eq!(config.get("ceph_conf"), Some(path("ceph.conf").as_str()));
        assert_eq!(config.get("name"), Some("client.b"));
        // The keyring stays relative to the file, which the backend resolves it against.
        let mut reader = config.reader();
        assert_eq!(reader.optional_path("keyring"), Some(dir.path().join("k")));
    }

    #[test]
    fn a_ceph_conf_given_with_c_is_used_directly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = write(dir.path(), "ceph.conf", "[global]\nmon host = 10.0.0.1\n");
        let conf = conf.to_string_lossy().into_owned();
        match resolve(&global(&["-c", &conf])) {
            Ok(c) if c.backend == "rados" => assert_eq!(c.get("name"), Some("client.admin")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_configs_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let no_conf = write(dir.path(), "a.conf", "[cluster]\nbackend = \"rados\"\n");
        let unknown = write(dir.path(), "b.conf", "[cluster]\nbackend = \"s3\"\n");
        let garbage = write(dir.path(), "c.conf", "hello\n");
        for (file, needle) in [
            (no_conf, "needs ceph_conf"),
            (unknown, "unknown backend \"s3\""),
            (garbage, "not an rbdx config"),
        ] {
            let file = file.to_string_lossy().into_owned();
            let err = resolve(&global(&["-c", &file])).unwrap_err().to_string();
            assert!(err.contains(needle) && !err.contains('\n'), "{err}");
        }
        let missing = resolve(&global(&["-c", "/nonexistent/rbdx.conf"])).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/rbdx.conf"),
            "{missing}"
        );
    }

    #[test]
    fn client_settings_come_from_client_then_global() {
        let conf = "[global]\nmon host = 1\nrbd default clone format = 1\n[client]\nrbd_default_clone_format = 2 # v2\n";
        assert_eq!(
            ceph_conf_setting(conf, "rbd_default_clone_format").as_deref(),
            Some("2")
        );
        let conf =
            "[global]\nrbd default clone format = auto\n[osd]\nrbd default clone format = 1\n";
        assert_eq!(
            ceph_conf_setting(conf, "rbd_default_clone_format").as_deref(),
            Some("auto")
        );
        assert_eq!(
            ceph_conf_setting("[global]\n", "rbd_default_clone_format"),
            None
        );
    }

    #[test]
    fn users_are_accepted_and_not_checked_by_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().to_string_lossy().into_owned();
        let keyring = dir.path().join("keyring");
        std::fs::write(&keyring, "[client.admin]\n").unwrap_or_else(|e| panic!("{e}"));
        for args in [
            vec!["--data-dir", &data, "--id", "admin"],
            vec!["--data-dir", &data, "--name", "client.admin"],
            vec![
                "--data-dir",
                &data,
                "--keyring",
                keyring.to_str().unwrap_or_default(),
            ],
        ] {
            let target = resolve(&global(&args)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(target.backend, "dir", "{args:?}");
        }
    }

    #[test]
    fn mixing_embedded_and_ceph_options_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().to_string_lossy().into_owned();
        let err = resolve(&global(&[
            "--data-dir",
            &data,
            "--keyring",
            "/nonexistent/k",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/k"), "{err}");
        let err = resolve(&global(&["--data-dir", &data, "--ceph-conf", "/c"])).unwrap_err();
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }
}
