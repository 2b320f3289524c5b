//! Advisory locks between sessions.

use std::time::Duration;

use crate::testkit::{Fixture, Harness, eventually, fails, ok};
use crate::{ErrorKind, LockKind, LockOptions, ObjectStoreExt};

/// Exclusive locks exclude other clients, shared locks admit clients with the same tag, a
/// holder can renew, unlock releases, and another client can break a hold.
pub async fn locks_exclusive_shared_renew_unlock(h: &dyn Harness) {
    let fx = Fixture::new(h, "lock").await;
    let io = fx.io.clone();
    let a = h.connect().await;
    let b = h.connect().await;
    let excl = LockOptions::new("L", LockKind::Exclusive, "c1").with_description("held by a");
    ok(a.lock_opts(&io, "o", &excl).await);
    assert!(ok(a.exists(&io, "o").await), "locking creates the object");
    let watch = ok(a.watch(&io, "o").await);
    let err = fails(b.lock_opts(&io, "o", &excl).await, ErrorKind::Busy);
    assert!(err.to_string().contains("lock 'L'"), "{err}");
    fails(a.lock_opts(&io, "o", &excl).await, ErrorKind::AlreadyExists);
    ok(a.lock_opts(&io, "o", &excl.clone().with_renew(true)).await);

    let info = ok(b.lock_info(&io, "o", "L").await);
    assert_eq!(info.kind, Some(LockKind::Exclusive));
    assert_eq!(info.lockers.len(), 1);
    let holder = &info.lockers[0];
    assert_eq!(holder.client.id, a.client().id);
    assert_eq!(
        (holder.cookie.as_str(), holder.description.as_str()),
        ("c1", "held by a")
    );
    assert!(holder.alive, "a holder watching the object is alive");
    assert_eq!(ok(b.lock_list(&io, "o").await), vec!["L".to_owned()]);
    ok(a.unwatch(&io, "o", watch.cookie()).await);

    fails(b.unlock(&io, "o", "L", "c1").await, ErrorKind::NotFound);
    ok(a.unlock(&io, "o", "L", "c1").await);
    let info = ok(b.lock_info(&io, "o", "L").await);
    assert_eq!((info.kind, info.lockers.len()), (None, 0));
    assert!(ok(b.lock_list(&io, "o").await).is_empty());

    let shared = LockOptions::new("S", LockKind::Shared, "s").with_tag("t");
    ok(a.lock_opts(&io, "o", &shared).await);
    ok(b.lock_opts(&io, "o", &shared).await);
    let c = h.connect().await;
    fails(
        c.lock_opts(&io, "o", &shared.clone().with_tag("other"))
            .await,
        ErrorKind::Busy,
    );
    fails(
        c.lock_opts(&io, "o", &LockOptions::new("S", LockKind::Exclusive, "s"))
            .await,
        ErrorKind::Busy,
    );
    ok(
        c.lock_opts(&io, "o", &LockOptions::new("M", LockKind::Exclusive, "m"))
            .await,
    );
    let info = ok(c.lock_info(&io, "o", "S").await);
    assert_eq!(
        (info.kind, info.tag.as_str(), info.lockers.len()),
        (Some(LockKind::Shared), "t", 2)
    );

    ok(c.lock_break(&io, "o", "S", a.client().id, "s").await);
    fails(
        c.lock_break(&io, "o", "S", a.client().id, "s").await,
        ErrorKind::NotFound,
    );
    assert_eq!(ok(c.lock_info(&io, "o", "S").await).lockers.len(), 1);
    let mut names = ok(c.lock_list(&io, "o").await);
    names.sort();
    assert_eq!(names, vec!["M".to_owned(), "S".to_owned()]);
    fails(c.lock_info(&io, "absent", "L").await, ErrorKind::NotFound);
    fails(
        c.lock_opts(&io, "o", &LockOptions::new("", LockKind::Exclusive, "x"))
            .await,
        ErrorKind::InvalidArgument,
    );
    fx.cleanup().await;
}

/// A hold with a lease ends by itself; the hold of a session that is gone is reported dead and
/// can be broken.
pub async fn locks_lease_expires_and_dead_holder_is_broken(h: &dyn Harness) {
    let fx = Fixture::new(h, "lease").await;
    let io = fx.io.clone();
    let grace = h.capabilities().dead_session_grace;
    let a = h.connect().await;
    let b = h.connect().await;
    let leased =
        LockOptions::new("E", LockKind::Exclusive, "e").with_duration(Duration::from_millis(400));
    ok(a.lock_opts(&io, "o", &leased).await);
    let info = ok(b.lock_info(&io, "o", "E").await);
    assert!(info.lockers[0].expiration.is_some());
    fails(b.lock_opts(&io, "o", &leased).await, ErrorKind::Busy);
    tokio::time::sleep(Duration::from_millis(900)).await;
    ok(b.lock_opts(&io, "o", &leased).await);

    let gone = h.connect().await;
    let gone_id = gone.client().id;
    ok(gone
        .lock_opts(&io, "o", &LockOptions::new("D", LockKind::Exclusive, "d"))
        .await);
    let _watch = ok(gone.watch(&io, "o").await);
    drop(_watch);
    drop(gone);
    eventually(
        grace + Duration::from_secs(5),
        "dead holder still looks alive",
        async || {
            let info = ok(b.lock_info(&io, "o", "D").await);
            assert_eq!(info.lockers[0].client.id, gone_id);
            !info.lockers[0].alive
        },
    )
    .await;
    fails(
        b.lock_opts(&io, "o", &LockOptions::new("D", LockKind::Exclusive, "b"))
            .await,
        ErrorKind::Busy,
    );
    ok(b.lock_break(&io, "o", "D", gone_id, "d").await);
    ok(
        b.lock_opts(&io, "o", &LockOptions::new("D", LockKind::Exclusive, "b"))
            .await,
    );
    fx.cleanup().await;
}
