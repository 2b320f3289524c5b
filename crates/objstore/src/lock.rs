//! Advisory locks on objects, as RADOS' `cls_lock`: exclusive or shared, held by a client with
//! a cookie, with a tag shared lockers must agree on, an optional lease, and a way to find and
//! break the lock of a holder that is gone.
//!
//! [`LockState::acquire`] holds the rules every backend applies.

use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result, Subject};
use crate::types::ClientInfo;

/// Exclusive or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// One holder at a time.
    Exclusive,
    /// Any number of holders with the same tag.
    Shared,
}

impl LockKind {
    /// Returns the name used in listings (`exclusive` or `shared`).
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Exclusive => "exclusive",
            LockKind::Shared => "shared",
        }
    }
}

/// A lock request, for [`crate::ObjectStore::lock_opts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// The lock name (an object may carry several locks).
    pub name: String,
    /// Exclusive or shared.
    pub kind: LockKind,
    /// Distinguishes several holds by one client.
    pub cookie: String,
    /// Shared holders must all use the same tag.
    pub tag: String,
    /// Free text shown in listings.
    pub description: String,
    /// A lease: the hold ends by itself after this long.
    pub duration: Option<Duration>,
    /// Renew an existing hold by the same client and cookie instead of failing.
    pub renew: bool,
}

impl LockOptions {
    /// Requests lock `name` of `kind` with `cookie`.
    pub fn new(name: impl Into<String>, kind: LockKind, cookie: impl Into<String>) -> Self {
        LockOptions {
            name: name.into(),
            kind,
            cookie: cookie.into(),
            tag: String::new(),
            description: String::new(),
            duration: None,
            renew: false,
        }
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets a lease.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Allows renewing an existing hold.
    pub fn with_renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }
}

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockerInfo {
    /// The holding client.
    pub client: ClientInfo,
    /// The holder's cookie.
    pub cookie: String,
    /// The description given when locking.
    pub description: String,
    /// When the lease ends, if there is one.
    pub expiration: Option<SystemTime>,
    /// False if the backend can tell that the holder's process is gone.
    pub alive: bool,
}

/// A lock and its holders, as [`crate::ObjectStore::lock_info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The kind of the current holds, `None` if nobody holds the lock.
    pub kind: Option<LockKind>,
    /// The tag of the current holds.
    pub tag: String,
    /// The holders.
    pub lockers: Vec<LockerInfo>,
}

/// A stored hold, without liveness (which backends work out when listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The holding client.
    pub client: ClientInfo,
    /// The holder's cookie.
    pub cookie: String,
    /// The description.
    pub description: String,
    /// When the lease ends.
    pub expiration: Option<SystemTime>,
}

/// The stored state of one lock: what backends persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// Exclusive or shared.
    pub kind: LockKind,
    /// The tag.
    pub tag: String,
    /// Current holds.
    pub holds: Vec<Hold>,
}

impl LockState {
    /// Drops holds whose lease ended before `now`.
    pub fn expire(&mut self, now: SystemTime) {
        self.holds
            .retain(|h| h.expiration.is_none_or(|end| end > now));
    }

    /// Applies a lock request by `client` at `now` to the current state (`None` if unlocked)
    /// and returns the new state, or the error `cls_lock` would give: `Busy` when someone
    /// else holds it incompatibly or with another tag, `AlreadyExists` when this client and
    /// cookie hold it already and `renew` is not set.
    pub fn acquire(
        current: Option<LockState>,
        client: &ClientInfo,
        opts: &LockOptions,
        now: SystemTime,
        subject: impl Fn() -> Subject,
    ) -> Result<LockState> {
        let expiration = opts.duration.map(|d| now + d);
        let hold = Hold {
            client: client.clone(),
            cookie: opts.cookie.clone(),
            description: opts.description.clone(),
            expiration,
        };
        let mut state = match current {
            Some(mut state) => {
                state.expire(now);
                state
            }
            None => LockState {
                kind: opts.kind,
                tag: opts.tag.clone(),
                holds: Vec::new(),
            },
        };
        if state.holds.is_empty() {
            state.kind = opts.kind;
            state.tag = opts.tag.clone();
            state.holds.push(hold);
            return Ok(state);
        }
        let mine = state
            .holds
            .iter()
            .position(|h| h.client.id == client.id && h.cookie == opts.cookie);
        if let Some(index) = mine {
            if !opts.renew {
                return Err(Error::new(ErrorKind::AlreadyExists, subject())
                    .with_detail("already held by this client and cookie"));
            }
            if state.kind != opts.kind {
                return Err(Error::new(ErrorKind::Busy, subject())
                    .with_detail("cannot renew as a different lock type"));
            }
            state.holds[index] = hold;
            return Ok(state);
        }
        if state.kind == LockKind::Exclusive || opts.kind == LockKind::Exclusive {
            let holder = &state.holds[0];
            return Err(Error::new(ErrorKind::Busy, subject()).with_detail(format!(
                "held {} by {} cookie '{}'",
                state.kind.as_str(),
                holder.client,
                holder.cookie
            )));
        }
        if state.tag != opts.tag {
            return Err(Error::new(ErrorKind::Busy, subject())
                .with_detail(format!("held with tag '{}'", state.tag)));
        }
        state.holds.push(hold);
        Ok(state)
    }

    /// Describes the lock as of `now` (expired holds left out), asking `alive` about each
    /// holder's session.
    pub fn describe<E>(
        mut self,
        now: SystemTime,
        mut alive: impl FnMut(crate::ClientId) -> Result<bool, E>,
    ) -> Result<LockInfo, E> {
        self.expire(now);
        let mut lockers = Vec::with_capacity(self.holds.len());
        for h in self.holds {
            let alive = alive(h.client.id)?;
            lockers.push(LockerInfo {
                client: h.client,
                cookie: h.cookie,
                description: h.description,
                expiration: h.expiration,
                alive,
            });
        }
        let kind = (!lockers.is_empty()).then_some(self.kind);
        Ok(LockInfo {
            kind,
            tag: self.tag,
            lockers,
        })
    }

    /// Removes the hold of `client_id` with `cookie`; `NotFound` if there is none.
    pub fn release(
        &mut self,
        client_id: crate::ClientId,
        cookie: &str,
        subject: impl Fn() -> Subject,
    ) -> Result<()> {
        let before = self.holds.len();
        self.holds
            .retain(|h| !(h.client.id == client_id && h.cookie == cookie));
        if self.holds.len() == before {
            return Err(Error::not_found(subject())
                .with_detail(format!("no hold by {client_id} with cookie '{cookie}'")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClientId;

    fn client(n: u64) -> ClientInfo {
        ClientInfo {
            id: ClientId(n),
            addr: format!("test/{n}"),
        }
    }

    fn subject() -> Subject {
        Subject::Lock {
            oid: "o".into(),
            name: "l".into(),
        }
    }

    #[test]
    fn exclusive_conflicts_with_other_client() {
        let now = SystemTime::now();
        let opts = LockOptions::new("l", LockKind::Exclusive, "c");
        let state = LockState::acquire(None, &client(1), &opts, now, subject).unwrap();
        let err = LockState::acquire(Some(state), &client(2), &opts, now, subject).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
    }

    #[test]
    fn shared_holders_need_the_same_tag() {
        let now = SystemTime::now();
        let a = LockOptions::new("l", LockKind::Shared, "c").with_tag("t1");
        let b = LockOptions::new("l", LockKind::Shared, "c").with_tag("t2");
        let state = LockState::acquire(None, &client(1), &a, now, subject).unwrap();
        let state = LockState::acquire(Some(state), &client(2), &a, now, subject).unwrap();
        assert_eq!(state.holds.len(), 2);
        let err = LockState::acquire(Some(state), &client(3), &b, now, subject).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
    }

    #[test]
    fn relock_without_renew_is_exists_and_expired_lease_frees() {
        let now = SystemTime::now();
        let opts =
            LockOptions::new("l", LockKind::Exclusive, "c").with_duration(Duration::from_secs(1));
        let state = LockState::acquire(None, &client(1), &opts, now, subject).unwrap();
        let err =
            LockState::acquire(Some(state.clone()), &client(1), &opts, now, subject).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let later = now + Duration::from_secs(2);
        let state = LockState::acquire(Some(state), &client(2), &opts, later, subject).unwrap();
        assert_eq!(state.holds[0].client.id, ClientId(2));
    }
}
