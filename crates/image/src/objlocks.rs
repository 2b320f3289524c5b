//! Per-object ordering inside one process: operations on the same data object that must not
//! interleave (an object-map transition and the write it guards, a removal, a copy-up) take
//! that object's lock exclusively; plain writes to an object that needs no transition take it
//! shared, so they run together (the store orders them); operations on different objects run
//! in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock as AsyncRwLock};

/// The locks of the objects currently in use.
#[derive(Debug, Default)]
pub struct ObjectLocks {
    locks: Arc<Table>,
}

type Table = Mutex<HashMap<u64, Arc<AsyncRwLock<()>>>>;

/// How an object's lock is held.
#[derive(Debug)]
enum Held {
    Exclusive { _guard: OwnedRwLockWriteGuard<()> },
    Shared { _guard: OwnedRwLockReadGuard<()> },
}

/// Holds one object's lock; dropping it lets the next operation on that object proceed. It
/// owns what it needs, so it may move into a task that outlives the caller.
#[derive(Debug)]
pub struct ObjectGuard {
    owner: Arc<Table>,
    objectno: u64,
    guard: Option<Held>,
}

impl ObjectLocks {
    fn entry(&self, objectno: u64) -> Arc<AsyncRwLock<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(objectno).or_default().clone()
    }

    /// Waits for and takes the lock of object `objectno` exclusively.
    pub async fn lock(&self, objectno: u64) -> ObjectGuard {
        let guard = self.entry(objectno).write_owned().await;
        ObjectGuard {
            owner: self.locks.clone(),
            objectno,
            guard: Some(Held::Exclusive { _guard: guard }),
        }
    }

    /// Waits for and takes the lock of object `objectno` shared with other plain writers.
    pub async fn lock_shared(&self, objectno: u64) -> ObjectGuard {
        let guard = self.entry(objectno).read_owned().await;
        ObjectGuard {
            owner: self.locks.clone(),
            objectno,
            guard: Some(Held::Shared { _guard: guard }),
        }
    }
}

impl Drop for ObjectGuard {
    fn drop(&mut self) {
        let mut map = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.guard.take());
        // Forget the lock once nobody holds or waits for it: the map holds one reference
        // and nothing else does.
        if let Some(mutex) = map.get(&self.objectno)
            && Arc::strong_count(mutex) == 1
        {
            map.remove(&self.objectno);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_object_waits_and_locks_are_forgotten() {
        let locks = ObjectLocks::default();
        let g = locks.lock(1).await;
        let other = locks.lock(2).await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock(1))
                .await
                .is_err()
        );
        drop(g);
        drop(other);
        drop(locks.lock(1).await);
        assert!(locks.locks.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shared_holders_run_together_and_exclude_an_exclusive_one() {
        let locks = ObjectLocks::default();
        let a = locks.lock_shared(1).await;
        let b = locks.lock_shared(1).await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock(1))
                .await
                .is_err()
        );
        drop(a);
        drop(b);
        let e = locks.lock(1).await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock_shared(1))
                .await
                .is_err()
        );
        drop(e);
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
