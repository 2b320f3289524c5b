//! How to reach a Ceph cluster: a `ceph.conf`, a cephx user, and timeouts short enough that a
//! wrong configuration fails within seconds instead of hanging.

use std::path::PathBuf;
use std::time::Duration;

/// Connection settings of a [`crate::RadosStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadosConfig {
    /// The `ceph.conf` to read; `None` searches Ceph's default places
    /// (`$CEPH_CONF`, `/etc/ceph/ceph.conf`, `~/.ceph/config`, `./ceph.conf`).
    pub ceph_conf: Option<PathBuf>,
    /// The cluster name (Ceph's `--cluster`), default `ceph`.
    pub cluster: String,
    /// The cephx entity, e.g. `client.admin` (`rbd --name`; `--id admin` means the same).
    pub name: String,
    /// A keyring overriding the one the configuration names.
    pub keyring: Option<PathBuf>,
    /// How long to wait for the monitors when connecting.
    pub connect_timeout: Duration,
    /// How long one object operation may take before it fails.
    pub op_timeout: Duration,
    /// How long a watch outlives its client's silence, so gone watchers disappear.
    pub watch_timeout: Duration,
}

impl Default for RadosConfig {
    fn default() -> Self {
        RadosConfig {
            ceph_conf: None,
            cluster: "ceph".to_owned(),
            name: "client.admin".to_owned(),
            keyring: None,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(10),
        }
    }
}

impl RadosConfig {
    /// Reads the cluster from `ceph.conf` at `path`.
    pub fn from_ceph_conf(path: impl Into<PathBuf>) -> Self {
        RadosConfig {
            ceph_conf: Some(path.into()),
            ..RadosConfig::default()
        }
    }

    /// Sets the cephx user by id (`admin` means `client.admin`).
    pub fn with_id(mut self, id: &str) -> Self {
        self.name = format!("client.{id}");
        self
    }

    /// Sets the cephx entity name (`client.<id>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets a keyring.
    pub fn with_keyring(mut self, keyring: impl Into<PathBuf>) -> Self {
        self.keyring = Some(keyring.into());
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}
