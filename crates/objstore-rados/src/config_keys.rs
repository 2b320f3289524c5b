//! The cluster's config-key store, through the monitors' `config-key` commands.

use std::sync::Arc;

use bytes::Bytes;
use rbdx_objstore::{Error, ErrorKind, Result, Subject};
use serde_json::json;

use crate::store::Inner;

impl Inner {
    /// Reads a config-key value.
    pub(crate) async fn config_key_get(self: &Arc<Self>, key: &str) -> Result<Bytes> {
        let key = key.to_owned();
        self.run(move |inner| {
            let cmd = json!({"prefix": "config-key get", "key": key});
            let out = inner
                .cluster
                .mon_command(&cmd, &[], || Subject::ConfigKey(key.clone()))?;
            Ok(Bytes::from(out))
        })
        .await
    }

    /// Sets a config-key value.
    pub(crate) async fn config_key_set(self: &Arc<Self>, key: &str, value: Bytes) -> Result<()> {
        let key = key.to_owned();
        self.run(move |inner| {
            let cmd = json!({"prefix": "config-key set", "key": key});
            inner
                .cluster
                .mon_command(&cmd, &value, || Subject::ConfigKey(key.clone()))?;
            Ok(())
        })
        .await
    }

    /// Removes a config-key; `NotFound` if it is not set (the monitors accept removing a
    /// missing key, so its existence is checked first).
    pub(crate) async fn config_key_remove(self: &Arc<Self>, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.run(move |inner| {
            let subject = || Subject::ConfigKey(key.clone());
            let exists = json!({"prefix": "config-key exists", "key": key});
            inner.cluster.mon_command(&exists, &[], subject)?;
            let rm = json!({"prefix": "config-key rm", "key": key});
            inner.cluster.mon_command(&rm, &[], subject)?;
            Ok(())
        })
        .await
    }

    /// Lists config-key names, sorted.
    pub(crate) async fn config_key_list(self: &Arc<Self>) -> Result<Vec<String>> {
        self.run(|inner| {
            let cmd = json!({"prefix": "config-key ls", "format": "json"});
            let out = inner.cluster.mon_command(&cmd, &[], || Subject::Store)?;
            let mut keys: Vec<String> = serde_json::from_slice(&out).map_err(|e| {
                Error::new(ErrorKind::Io, Subject::Store).with_detail(format!(
                    "unreadable config-key listing from the monitors: {e}"
                ))
            })?;
            keys.sort();
            Ok(keys)
        })
        .await
    }
}
