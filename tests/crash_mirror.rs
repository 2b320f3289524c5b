//! The mirror daemon killed with SIGKILL mid-sync and mid-replay, the primary's gateway
//! restarted mid-replay, and two daemons sharing a site's images: the copies end exact.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Lcg;
use common::mirror::{create_journaling, scribble, two_sites, wait_equal, wait_for};

const WAIT: Duration = Duration::from_secs(120);

#[test]
fn a_daemon_killed_twenty_times_mid_sync_and_mid_replay_ends_exact() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/j", "128M");
    a.run(&["create", "rbd/s", "--size", "128M"]).ok();
    for spec in ["rbd/j", "rbd/s"] {
        scribble(&a, spec, "256K", "48M");
    }
    a.run(&["snap", "create", "rbd/j@first"]).ok();
    a.run(&["mirror", "image", "enable", "rbd/j", "journal"])
        .ok();
    a.run(&["mirror", "image", "enable", "rbd/s", "snapshot"])
        .ok();
    let mut rng = Lcg(7);
    for round in 0..20 {
        let daemon = b.daemon("b");
        std::thread::sleep(Duration::from_millis(200 + rng.next(1200)));
        if round % 4 == 1 {
            scribble(&a, "rbd/j", "4K", "256K");
            scribble(&a, "rbd/s", "4K", "256K");
            a.run(&["mirror", "image", "snapshot", "rbd/s"]).ok();
        }
        if round == 10 {
            a.run(&["snap", "create", "rbd/j@middle"]).ok();
        }
        daemon.kill9();
    }
    let _daemon = b.daemon("b");
    // A restarted daemon takes its images back at once (its leases are its own).
    wait_for(
        "the copies to replay again",
        Duration::from_secs(30),
        || b.state("rbd/j") == "up+replaying" && b.state("rbd/s") == "up+replaying",
    );
    for spec in ["rbd/j", "rbd/s"] {
        wait_equal(&a, &b, spec, dir.path(), WAIT);
    }
    for snap in ["rbd/j@first", "rbd/j@middle"] {
        assert_eq!(
            a.export(snap, dir.path()),
            b.export(snap, dir.path()),
            "{snap}"
        );
    }
    let log = std::fs::read_to_string(b.log("b")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_daemon_reconnects_when_the_primary_gateway_restarts_mid_replay() {
    let (mut a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    create_journaling(&a, "rbd/j", "32M");
    a.run(&["mirror", "image", "enable", "rbd/j", "journal"])
        .ok();
    let _daemon = b.daemon("b");
    wait_for("the copy to replay", WAIT, || {
        b.state("rbd/j") == "up+replaying"
    });
    scribble(&a, "rbd/j", "4K", "1M");
    a.cut_off();
    scribble(&a, "rbd/j", "4K", "1M");
    std::thread::sleep(Duration::from_secs(2));
    a.reconnect();
    scribble(&a, "rbd/j", "4K", "1M");
    wait_equal(&a, &b, "rbd/j", dir.path(), WAIT);
}

#[test]
fn two_daemons_share_the_images_and_one_takes_over_when_the_other_dies() {
    let (a, b) = two_sites("rbd", "image");
    let dir = tempfile::tempdir().unwrap();
    let specs = ["rbd/i0", "rbd/i1", "rbd/i2", "rbd/i3"];
    for spec in specs {
        create_journaling(&a, spec, "16M");
        a.run(&["mirror", "image", "enable", spec, "journal"]).ok();
    }
    let first = b.daemon("one");
    let _second = b.daemon("two");
    let service = |spec: &str| {
        b.status(spec)["service"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    wait_for("every copy to replay", WAIT, || {
        specs.iter().all(|s| b.state(s) == "up+replaying")
    });
    // The first daemon up takes everything, then leaves its extra images to the second.
    wait_for("the daemons to share the images", WAIT, || {
        let owners: Vec<String> = specs.iter().map(|s| service(s)).collect();
        specs.iter().all(|s| b.state(s) == "up+replaying")
            && owners.iter().any(|o| o.starts_with("one "))
            && owners.iter().any(|o| o.starts_with("two "))
    });
    first.kill9();
    wait_for(
        "the survivor to take every image",
        Duration::from_secs(45),
        || {
            specs
                .iter()
                .all(|s| b.state(s) == "up+replaying" && service(s).starts_with("two "))
        },
    );
    for spec in specs {
        scribble(&a, spec, "4K", "256K");
    }
    for spec in specs {
        wait_equal(&a, &b, spec, dir.path(), WAIT);
    }
}
