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

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::args::Global;
use crate::error::{CliError, CliResult};

/// A Ceph cluster to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadosTarget {
    /// Its `ceph.conf`.
    pub ceph_conf: PathBuf,
    /// A keyring overriding the one the `ceph.conf` names.
    pub keyring: Option<PathBuf>,
    /// The cephx entity, e.g. `client.admin`.
    pub name: String,
}

/// The store a command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The embedded store in a directory.
    Dir(PathBuf),
    /// A Ceph cluster.
    Rados(RadosTarget),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    cluster: ClusterSection,
    #[serde(default)]
    client: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Dir,
    Rados,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    backend: Backend,
    data_dir: Option<PathBuf>,
    ceph_conf: Option<PathBuf>,
    keyring: Option<PathBuf>,
    id: Option<String>,
    name: Option<String>,
}

/// What a config file turned out to be.
enum Loaded {
    Rbdx(
        ClusterSection,
        std::collections::BTreeMap<String, toml::Value>,
    ),
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

/// Works out the store the global options select.
pub fn resolve(global: &Global) -> CliResult<Target> {
    let cli_entity = entity(global.id.as_deref(), global.user_name.as_deref());
    let rados = |ceph_conf: PathBuf, keyring: Option<PathBuf>, entity: Option<String>| {
        Target::Rados(RadosTarget {
            ceph_conf,
            keyring: global.keyring.clone().or(keyring),
            name: cli_entity
                .clone()
                .or(entity)
                .unwrap_or_else(|| "client.admin".to_owned()),
        })
    };
    let (target, source) = if let Some(ceph_conf) = &global.ceph_conf {
        (rados(ceph_conf.clone(), None, None), "--ceph-conf")
    } else if let Some(file) = global.conf.clone().or_else(|| {
        global
            .data_dir
            .is_none()
            .then(|| cluster_file(&global.cluster))
            .flatten()
    }) {
        let target = match load(&file)? {
            Loaded::CephConf(_) => rados(file.clone(), None, None),
            Loaded::Rbdx(section, _) => from_section(&file, section, global, &rados)?,
        };
        (target, "the config file")
    } else {
        let dir = match &global.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir(&global.cluster)?,
        };
        (Target::Dir(dir), "")
    };
    // RBDX_DATA_DIR in the environment yields to a cluster chosen on the command line.
    let data_dir_flag = global.data_dir.is_some()
        && std::env::var_os("RBDX_DATA_DIR").map(PathBuf::from) != global.data_dir;
    match &target {
        Target::Rados(_) if data_dir_flag => Err(CliError::invalid(format!(
            "--data-dir selects an embedded store, but {source} selects a Ceph cluster"
        ))),
        Target::Dir(dir) => {
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
            if let Some(entity) = &cli_entity {
                tracing::debug!(
                    "user {entity} is not checked: the embedded store in {} has no users",
                    dir.display()
                );
            }
            Ok(target)
        }
        _ => Ok(target),
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
        Loaded::Rbdx(section, client) => {
            let wanted = option_key(key);
            let own = client
                .iter()
                .find(|(k, _)| option_key(k) == wanted)
                .map(|(_, v)| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            if own.is_some() {
                return Ok(own);
            }
            match section.ceph_conf {
                Some(conf) => {
                    let conf = match file.parent() {
                        Some(dir) if conf.is_relative() => dir.join(conf),
                        _ => conf,
                    };
                    let text = std::fs::read_to_string(&conf)
                        .map_err(|e| CliError::io(format!("cannot read {}", conf.display()), e))?;
                    Ok(ceph_conf_setting(&text, key))
                }
                None => Ok(None),
            }
        }
    }
}

fn from_section(
    file: &Path,
    section: ClusterSection,
    global: &Global,
    rados: &dyn Fn(PathBuf, Option<PathBuf>, Option<String>) -> Target,
) -> CliResult<Target> {
    let relative = |p: PathBuf| match file.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    };
    match section.backend {
        Backend::Rados => {
            let ceph_conf = section.ceph_conf.ok_or_else(|| {
                CliError::invalid(format!(
                    "{}: backend \"rados\" needs ceph_conf = \"/path/to/ceph.conf\"",
                    file.display()
                ))
            })?;
            let entity = entity(section.id.as_deref(), section.name.as_deref());
            Ok(rados(
                relative(ceph_conf),
                section.keyring.map(relative),
                entity,
            ))
        }
        Backend::Dir => {
            let dir = match (&global.data_dir, section.data_dir) {
                (Some(dir), _) => dir.clone(),
                (None, Some(dir)) => relative(dir),
                (None, None) => default_data_dir(&global.cluster)?,
            };
            Ok(Target::Dir(dir))
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
            Target::Rados(RadosTarget {
                ceph_conf: "/etc/ceph/ceph.conf".into(),
                keyring: None,
                name: "client.rbdx".into(),
            })
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
        assert_eq!(
            target.unwrap_or_else(|e| panic!("{e}")),
            Target::Rados(RadosTarget {
                ceph_conf: dir.path().join("ceph.conf"),
                keyring: Some(dir.path().join("k")),
                name: "client.b".into(),
            })
        );
    }

    #[test]
    fn a_ceph_conf_given_with_c_is_used_directly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let conf = write(dir.path(), "ceph.conf", "[global]\nmon host = 10.0.0.1\n");
        let conf = conf.to_string_lossy().into_owned();
        match resolve(&global(&["-c", &conf])) {
            Ok(Target::Rados(t)) => assert_eq!(t.name, "client.admin"),
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
            (unknown, "not an rbdx config"),
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
            assert!(matches!(target, Target::Dir(_)), "{args:?}");
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
