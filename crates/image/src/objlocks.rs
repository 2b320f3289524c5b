//! Per-object ordering inside one process: operations on the same data object that must not
//! interleave (an object-map transition and the write it guards, a removal, a copy-up) take
//! that object's lock; operations on different objects run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The locks of the objects currently in use.
#[derive(Debug, Default)]
pub struct ObjectLocks {
    locks: Mutex<HashMap<u64, Arc<AsyncMutex<()>>>>,
}

/// Holds one object's lock; dropping it lets the next operation on that object proceed.
#[derive(Debug)]
pub struct ObjectGuard<'a> {
    owner: &'a ObjectLocks,
    objectno: u64,
    guard: Option<OwnedMutexGuard<()>>,
}

impl ObjectLocks {
    /// Waits for and takes the lock of object `objectno`.
    pub async fn lock(&self, objectno: u64) -> ObjectGuard<'_> {
        let mutex = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(objectno).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        ObjectGuard {
            owner: self,
            objectno,
            guard: Some(guard),
        }
    }
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
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
}
