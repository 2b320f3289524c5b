//! What each key profile may do; the gateway checks every request against its session's key
//! before it reaches the store.
//!
//! - `rw`: everything (pool creation and removal only if the key is not limited to pools).
//! - `ro`: calls that read, and watches.
//! - `mirror-peer`: what `ro` may, notifies, and writes that change only omap keys of its
//!   own: on a journal header (`journal.<image id>`), the journal client record
//!   `client.<owner>` (registration and commit position); on the pool's `rbd_mirroring`
//!   object, its mirror status records (`status.<owner>.*`) and its peer registration
//!   (`peer.<owner>`, `peer.<owner>.*`). `<owner>` is the key's name without `client.`.
//!
//! A key limited to pools (`--pool`) reaches only those pools, whatever its profile. The
//! gateway's own config-keys (`rbdx/gateway/...`: keys and certificate) are out of reach of
//! every key. A refusal is `PermissionDenied` (EACCES) naming the capability that is missing.

use rbdx_objstore::{Error, ErrorKind, Subject, WriteStep};

use crate::keys::{KeyRecord, PREFIX, Profile};
use crate::message::Request;

/// The object holding a pool's mirroring configuration and status records.
pub const MIRROR_OBJECT: &str = "rbd_mirroring";
/// The prefix of journal header objects.
pub const JOURNAL_HEADER_PREFIX: &str = "journal.";

fn denied(subject: Subject, detail: String) -> Error {
    Error::new(ErrorKind::PermissionDenied, subject).with_detail(detail)
}

/// Returns the pool a request names by name, if any.
pub fn pool_by_name(req: &Request) -> Option<&str> {
    match req {
        Request::PoolCreate(n) | Request::PoolRemove(n) | Request::PoolLookup(n) => Some(n),
        _ => None,
    }
}

/// Checks `req` for `key`; `pool` is the name of the pool the request reaches (by id or by
/// name), if it reaches one.
pub fn check(key: &KeyRecord, pool: Option<&str>, req: &Request) -> Result<(), Error> {
    if let Some(k) = config_key(req)
        && k.starts_with(PREFIX)
    {
        return Err(denied(
            Subject::ConfigKey(k.to_owned()),
            "the gateway's own config-keys are out of every key's reach".into(),
        ));
    }
    if let Some(k) = config_key(req) {
        check_config_key(key, k, req)?;
    }
    if let Some(pool) = pool
        && !key.allows_pool(pool)
    {
        return Err(denied(
            Subject::Pool(pool.to_owned()),
            format!(
                "key {} is limited to pool(s) {}",
                key.name,
                key.pools.join(", ")
            ),
        ));
    }
    if matches!(req, Request::PoolCreate(_) | Request::PoolRemove(_)) && !key.pools.is_empty() {
        return Err(denied(
            Subject::Pool(pool.unwrap_or_default().to_owned()),
            format!(
                "{} needs the capability rw on every pool; key {} is limited to pools",
                req.name(),
                key.name
            ),
        ));
    }
    let allowed = match key.profile {
        Profile::Rw => true,
        Profile::Ro => {
            !req.changes_state() || matches!(req, Request::Watch(..) | Request::Unwatch(..))
        }
        Profile::MirrorPeer => {
            !req.changes_state()
                || matches!(
                    req,
                    Request::Watch(..) | Request::Unwatch(..) | Request::Notify { .. }
                )
                || mirror_peer_write(key, req)
        }
    };
    if allowed {
        return Ok(());
    }
    let what = match key.profile {
        Profile::MirrorPeer => format!(
            "{} needs the capability rw; mirror-peer key {} may write only its journal client \
             record and its mirror status and peer records",
            req.name(),
            key.name
        ),
        _ => format!(
            "{} needs the capability rw; key {} has the capability {}",
            req.name(),
            key.name,
            key.profile.as_str()
        ),
    };
    Err(denied(subject(req), what))
}

/// The config-keys a key that is not an unlimited `rw` key may read: the mirroring settings,
/// without the peers' secrets.
pub fn readable_config_key(key: &KeyRecord, name: &str) -> bool {
    if key.profile == Profile::Rw && key.pools.is_empty() {
        return !name.starts_with(PREFIX);
    }
    name.starts_with(MIRROR_CONFIG_PREFIX) && !name.starts_with(MIRROR_PEER_SECRETS)
}

/// Where mirroring keeps its settings in config-keys.
pub const MIRROR_CONFIG_PREFIX: &str = "rbd/mirror/";
/// Where mirroring keeps its peers' secrets.
pub const MIRROR_PEER_SECRETS: &str = "rbd/mirror/peer/";

/// Config-keys of a cluster behind a gateway can hold its secrets (a Ceph cluster's `mgr/`
/// and mirroring peers' keys): only an unlimited `rw` key reaches all of them, others read
/// the mirroring settings only and change none.
fn check_config_key(key: &KeyRecord, name: &str, req: &Request) -> Result<(), Error> {
    let unlimited = key.profile == Profile::Rw && key.pools.is_empty();
    let writes = matches!(req, Request::ConfigKeySet(..) | Request::ConfigKeyRemove(_));
    if unlimited || (!writes && readable_config_key(key, name)) {
        return Ok(());
    }
    Err(denied(
        Subject::ConfigKey(name.to_owned()),
        format!(
            "{} needs the capability rw on every pool; key {} may {}",
            req.name(),
            key.name,
            if writes {
                "change no config-key".to_owned()
            } else {
                format!("read only config-keys under {MIRROR_CONFIG_PREFIX}")
            }
        ),
    ))
}

fn config_key(req: &Request) -> Option<&str> {
    match req {
        Request::ConfigKeyGet(k) | Request::ConfigKeySet(k, _) | Request::ConfigKeyRemove(k) => {
            Some(k)
        }
        _ => None,
    }
}

fn subject(req: &Request) -> Subject {
    match req {
        Request::Operate { io, oid, .. }
        | Request::Lock(io, oid, _)
        | Request::Unlock(io, oid, ..)
        | Request::LockBreak(io, oid, ..)
        | Request::Notify { io, oid, .. } => io.object_subject(oid),
        Request::NamespaceCreate(io) | Request::NamespaceRemove(io) => io.namespace_subject(),
        Request::SnapCreate(pool) | Request::SnapRemove(pool, _) => Subject::PoolId(*pool),
        Request::PoolCreate(n) | Request::PoolRemove(n) => Subject::Pool(n.clone()),
        Request::ConfigKeySet(k, _) | Request::ConfigKeyRemove(k) => Subject::ConfigKey(k.clone()),
        _ => Subject::Store,
    }
}

/// Returns true if `req` is a write a mirroring peer may make with `key`.
fn mirror_peer_write(key: &KeyRecord, req: &Request) -> bool {
    let Request::Operate { oid, op, .. } = req else {
        return false;
    };
    let owner = key.owner();
    if owner.contains('.') {
        // Record names would be ambiguous (`status.a.b...` is also `status.a.` + `b...`).
        return false;
    }
    let own_key: Box<dyn Fn(&str) -> bool> = if oid.starts_with(JOURNAL_HEADER_PREFIX) {
        let record = format!("client.{owner}");
        Box::new(move |k: &str| k == record)
    } else if oid == MIRROR_OBJECT {
        let status = format!("status.{owner}.");
        let peer = format!("peer.{owner}");
        let peer_sub = format!("peer.{owner}.");
        Box::new(move |k: &str| k.starts_with(&status) || k == peer || k.starts_with(&peer_sub))
    } else {
        return false;
    };
    let mut changes = false;
    for step in op.steps() {
        let ok = match step {
            WriteStep::AssertExists
            | WriteStep::AssertVersion(_)
            | WriteStep::CmpXattr { .. }
            | WriteStep::CmpExt { .. } => true,
            WriteStep::OmapSet(map) => {
                changes = true;
                map.keys().all(|k| own_key(k))
            }
            WriteStep::OmapRemove(keys) => {
                changes = true;
                keys.iter().all(|k| own_key(k))
            }
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rbdx_objstore::{IoCtx, PoolId, SnapContext, WriteOp};

    use super::*;

    fn key(profile: Profile, pools: &[&str]) -> KeyRecord {
        KeyRecord {
            name: "client.site-b".into(),
            secret: String::new(),
            profile,
            pools: pools.iter().map(|p| (*p).to_owned()).collect(),
            created: 0,
        }
    }

    fn operate(oid: &str, op: WriteOp) -> Request {
        Request::Operate {
            io: IoCtx::new(PoolId(1)),
            oid: oid.into(),
            op,
            snapc: SnapContext::empty(),
        }
    }

    #[test]
    fn profiles_allow_what_they_say() {
        let write = operate(
            "rbd_data.1.0",
            WriteOp::new().write(0, Bytes::from_static(b"x")),
        );
        let read = Request::ListSnaps(IoCtx::new(PoolId(1)), "o".into());
        assert!(check(&key(Profile::Rw, &[]), Some("rbd"), &write).is_ok());
        assert!(check(&key(Profile::Ro, &[]), Some("rbd"), &read).is_ok());
        let err = check(&key(Profile::Ro, &[]), Some("rbd"), &write);
        assert!(err.is_err_and(|e| e.kind() == ErrorKind::PermissionDenied
            && e.to_string().contains("needs the capability rw")));
        assert!(check(&key(Profile::MirrorPeer, &[]), Some("rbd"), &write).is_err());
    }

    #[test]
    fn a_mirror_peer_writes_only_its_own_records() {
        let peer = key(Profile::MirrorPeer, &["rbd"]);
        let commit = operate(
            "journal.abc",
            WriteOp::new()
                .assert_version(3)
                .omap_set([("client.site-b", "{}")]),
        );
        assert!(check(&peer, Some("rbd"), &commit).is_ok());
        let other = operate(
            "journal.abc",
            WriteOp::new().omap_set([("client.site-c", "{}")]),
        );
        assert!(check(&peer, Some("rbd"), &other).is_err());
        let status = operate(
            MIRROR_OBJECT,
            WriteOp::new().omap_set([("status.site-b.image1", "up")]),
        );
        assert!(check(&peer, Some("rbd"), &status).is_ok());
        let meta = operate(MIRROR_OBJECT, WriteOp::new().omap_set([("mode", "pool")]));
        assert!(check(&peer, Some("rbd"), &meta).is_err());
        assert!(check(&peer, Some("other"), &commit).is_err());
        // A dotted owner would make record names ambiguous: no writes at all.
        let mut dotted = key(Profile::MirrorPeer, &[]);
        dotted.name = "client.a.b".into();
        let status = operate(
            MIRROR_OBJECT,
            WriteOp::new().omap_set([("status.a.b.x", "up")]),
        );
        assert!(check(&dotted, Some("rbd"), &status).is_err());
    }

    #[test]
    fn the_gateways_own_config_keys_are_out_of_reach() {
        let get = Request::ConfigKeyGet("rbdx/gateway/key/client.a".into());
        assert!(check(&key(Profile::Rw, &[]), None, &get).is_err());
        let mine = Request::ConfigKeyGet("rbd/mirror/site_name".into());
        assert!(check(&key(Profile::Ro, &[]), None, &mine).is_ok());
        // Other config-keys can hold a cluster's secrets: only an unlimited rw key reaches them.
        for name in ["mgr/dashboard/key", "rbd/mirror/peer/abc"] {
            let get = Request::ConfigKeyGet(name.into());
            assert!(check(&key(Profile::Ro, &[]), None, &get).is_err(), "{name}");
            assert!(
                check(&key(Profile::MirrorPeer, &[]), None, &get).is_err(),
                "{name}"
            );
            assert!(
                check(&key(Profile::Rw, &["rbd"]), None, &get).is_err(),
                "{name}"
            );
            assert!(check(&key(Profile::Rw, &[]), None, &get).is_ok(), "{name}");
        }
        let set = Request::ConfigKeySet("rbd/mirror/site_name".into(), Bytes::new());
        assert!(check(&key(Profile::Rw, &["rbd"]), None, &set).is_err());
        assert!(check(&key(Profile::MirrorPeer, &[]), None, &set).is_err());
        assert!(check(&key(Profile::Rw, &[]), None, &set).is_ok());
    }
}
