//! Crash test of every migration step: `prepare`, `execute`, `commit` and `abort` are each
//! killed with SIGKILL at a random instant, 30 times per step, and then either re-run or
//! followed by `abort`. Every time the images must end in a correct state: the head and both
//! snapshots hold exactly the source's bytes (plus, for execute, the writes a client made to
//! the destination and that were acknowledged before the kill), the `Migration:` state is
//! the one the finished step leaves, and nothing is left in the trash.
//!
//! An import-only prepare is killed too (10 times) and must be abortable without a trace.
//!
//! The kill instants are drawn from a seeded generator (`RBDX_CRASH_SEED` to replay a run)
//! over the time the step takes when it is not killed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Rbdx;

const ROUNDS: usize = 30;

/// A small deterministic generator of kill instants.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("RBDX_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("RBDX_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    /// Returns an instant in `[0, max)`.
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let micros = max.as_micros().max(1) as u64;
        Duration::from_micros(self.0 % micros)
    }
}

/// Runs `rbdx args`, killing it with SIGKILL after `after` unless it finished first.
fn kill_after(rbdx: &Rbdx, args: &[&str], after: Duration) {
    let mut child = Command::new(Rbdx::binary())
        .args(args)
        .env("RBDX_DATA_DIR", rbdx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

/// Returns how long `rbdx args` takes, which must succeed.
fn timed(rbdx: &Rbdx, args: &[&str]) -> Duration {
    let start = Instant::now();
    rbdx.run(args).ok();
    start.elapsed()
}

/// The content every view must hold, `""` for the head and `"@snap"` for snapshots.
type Views = Vec<(&'static str, Vec<u8>)>;

fn export(rbdx: &Rbdx, spec: &str) -> Vec<u8> {
    let out = rbdx.path().join("view.raw");
    let _ = std::fs::remove_file(&out);
    rbdx.run(&["export", "--no-progress", spec, out.to_str().unwrap()])
        .ok();
    std::fs::read(&out).unwrap()
}

#[track_caller]
fn assert_views(rbdx: &Rbdx, image: &str, views: &Views, what: &str) {
    for (view, want) in views {
        let got = export(rbdx, &format!("{image}{view}"));
        assert!(got == *want, "{what}: {image}{view} differs");
    }
}

/// Returns the migration state `status` shows for `image`, `None` without a migration.
fn state(rbdx: &Rbdx, image: &str) -> Option<String> {
    let status = rbdx.run(&["status", "--format", "json", image]).ok().json();
    status["migration"]["state"].as_str().map(str::to_owned)
}

/// Checks that the trash is empty and no migration progress record is left.
#[track_caller]
fn assert_trash_empty(rbdx: &Rbdx, what: &str) {
    let trash = rbdx.run(&["trash", "ls", "--all", "rbd"]).ok().stdout;
    let fast = rbdx.run(&["trash", "ls", "--all", "fast"]).ok().stdout;
    assert!(
        trash.trim().is_empty() && fast.trim().is_empty(),
        "{what}: trash holds {trash}{fast}"
    );
    for pool in ["rbd", "fast"] {
        let objects = rbdx.run(&["rados", "-p", pool, "ls"]).ok().stdout;
        assert!(
            !objects.contains("rbdx_migration."),
            "{what}: a progress record is left in {pool}"
        );
    }
}

/// A store with `rbd/vm`: 16 MiB in 1 MiB objects, two snapshots and writes after each.
fn setup() -> (Rbdx, Views) {
    let rbdx = Rbdx::new();
    rbdx.run(&["pool", "create", "fast"]).ok();
    rbdx.run(&["create", "--size", "16M", "--object-size", "1M", "rbd/vm"])
        .ok();
    let write = || {
        rbdx.run(&[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "64K",
            "--io-total",
            "3M",
            "--io-pattern",
            "rand",
            "rbd/vm",
        ])
        .ok();
    };
    write();
    rbdx.run(&["snap", "create", "rbd/vm@s1"]).ok();
    write();
    rbdx.run(&["snap", "create", "rbd/vm@s2"]).ok();
    write();
    let views = ["", "@s1", "@s2"]
        .into_iter()
        .map(|v| (v, export(&rbdx, &format!("rbd/vm{v}"))))
        .collect();
    (rbdx, views)
}

/// Checks that `rbd/vm` is back as it was before the migration, with no destination left.
#[track_caller]
fn assert_restored(rbdx: &Rbdx, views: &Views, what: &str) {
    assert_eq!(state(rbdx, "rbd/vm"), None, "{what}");
    assert_views(rbdx, "rbd/vm", views, what);
    rbdx.run(&["info", "fast/vm"]).fails(2, "vm");
    let left = rbdx.run(&["ls", "fast"]).ok().stdout;
    assert!(left.trim().is_empty(), "{what}: fast holds {left}");
    assert_trash_empty(rbdx, what);
}

/// Aborts the migration to `fast/vm` and checks the source is restored.
#[track_caller]
fn abort_and_check(rbdx: &Rbdx, views: &Views, what: &str) {
    rbdx.run(&["migration", "abort", "--no-progress", "fast/vm"])
        .ok();
    assert_restored(rbdx, views, what);
}

#[test]
fn killed_prepare_is_rerun_or_aborted() {
    let (rbdx, views) = setup();
    let mut rng = Rng::from_env();
    let prepare = ["migration", "prepare", "rbd/vm", "fast/vm"];
    let span = timed(&rbdx, &prepare) * 3 / 2;
    abort_and_check(&rbdx, &views, "first abort");
    for round in 0..ROUNDS {
        kill_after(&rbdx, &prepare, rng.below(span));
        let what = format!("prepare round {round}");
        if round % 2 == 0 {
            rbdx.run(&prepare).ok();
            assert_eq!(
                state(&rbdx, "fast/vm").as_deref(),
                Some("prepared"),
                "{what}"
            );
            assert_views(&rbdx, "fast/vm", &views, &what);
            rbdx.run(&["info", "rbd/vm"]).fails(2, "vm");
            abort_and_check(&rbdx, &views, &what);
        } else {
            // A prepare killed before it wrote anything leaves nothing to abort.
            let abort = rbdx.run(&["migration", "abort", "--no-progress", "fast/vm"]);
            assert!(
                abort.code == 0 || abort.code == 2,
                "{what}: abort failed: {}",
                abort.stderr
            );
            assert_restored(&rbdx, &views, &what);
        }
    }
    // An import-only prepare cut short is aborted, leaving nothing behind.
    let file = rbdx.path().join("vm.raw");
    std::fs::write(&file, &views[0].1).unwrap();
    let spec = format!(
        r#"{{"type":"raw","stream":{{"type":"file","file_path":"{}"}}}}"#,
        file.display()
    );
    let import = [
        "migration",
        "prepare",
        "--import-only",
        "--source-spec",
        &spec,
        "fast/vm",
    ];
    let span = timed(&rbdx, &import) * 3 / 2;
    abort_and_check(&rbdx, &views, "import abort");
    for round in 0..ROUNDS / 3 {
        let what = format!("import-only prepare round {round}");
        kill_after(&rbdx, &import, rng.below(span));
        let abort = rbdx.run(&["migration", "abort", "--no-progress", "fast/vm"]);
        assert!(
            abort.code == 0 || abort.code == 2,
            "{what}: abort failed: {}",
            abort.stderr
        );
        assert_restored(&rbdx, &views, &what);
    }
    // The source is writable again.
    rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", "rbd/vm"])
        .ok();
}

#[test]
fn killed_execute_is_resumed_or_aborted_and_keeps_client_writes() {
    let (rbdx, views) = setup();
    let mut rng = Rng::from_env();
    let prepare = ["migration", "prepare", "rbd/vm", "fast/vm"];
    let execute = ["migration", "execute", "--no-progress", "fast/vm"];
    let client_write = [
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4K",
        "--io-total",
        "1M",
        "--io-pattern",
        "seq",
        "fast/vm",
    ];
    // A client's acknowledged writes before the copy: [0, 1 MiB) of the head is 0xa5.
    let mut written = views.clone();
    written[0].1[..1 << 20].fill(0xa5);
    rbdx.run(&prepare).ok();
    let span = timed(&rbdx, &execute) * 3 / 2;
    abort_and_check(&rbdx, &views, "first abort");
    for round in 0..ROUNDS {
        let what = format!("execute round {round}");
        rbdx.run(&prepare).ok();
        rbdx.run(&client_write).ok();
        kill_after(&rbdx, &execute, rng.below(span));
        if round % 2 == 0 {
            rbdx.run(&execute).ok();
            assert_eq!(
                state(&rbdx, "fast/vm").as_deref(),
                Some("executed"),
                "{what}"
            );
            assert_views(&rbdx, "fast/vm", &written, &what);
        } else {
            let now = state(&rbdx, "fast/vm");
            assert!(
                now.as_deref()
                    .is_some_and(|s| s.starts_with("execut") || s == "prepared"),
                "{what}: state {now:?}"
            );
            assert_views(&rbdx, "fast/vm", &written, &what);
        }
        abort_and_check(&rbdx, &views, &what);
    }
}

#[test]
fn killed_commit_is_rerun() {
    let (rbdx, views) = setup();
    let mut rng = Rng::from_env();
    let mut span = Duration::ZERO;
    let pools = ["rbd", "fast"];
    for round in 0..=ROUNDS {
        let (src, dst) = (
            format!("{}/vm", pools[round % 2]),
            format!("{}/vm", pools[(round + 1) % 2]),
        );
        let what = format!("commit round {round}");
        rbdx.run(&["migration", "prepare", &src, &dst]).ok();
        rbdx.run(&["migration", "execute", "--no-progress", &dst])
            .ok();
        let commit = ["migration", "commit", "--no-progress", dst.as_str()];
        if round == 0 {
            span = timed(&rbdx, &commit) * 3 / 2;
        } else {
            kill_after(&rbdx, &commit, rng.below(span));
            let again = rbdx.run(&commit);
            // A commit killed after it finished leaves nothing to commit.
            assert!(
                again.code == 0 || again.stderr.contains("not the destination"),
                "{what}: {}",
                again.stderr
            );
        }
        assert_eq!(state(&rbdx, &dst), None, "{what}");
        assert_views(&rbdx, &dst, &views, &what);
        rbdx.run(&["info", &src]).fails(2, "vm");
        assert_trash_empty(&rbdx, &what);
    }
}

#[test]
fn killed_abort_is_rerun() {
    let (rbdx, views) = setup();
    let mut rng = Rng::from_env();
    let prepare = ["migration", "prepare", "rbd/vm", "fast/vm"];
    let abort = ["migration", "abort", "--no-progress", "fast/vm"];
    rbdx.run(&prepare).ok();
    rbdx.run(&["migration", "execute", "--no-progress", "fast/vm"])
        .ok();
    let span = timed(&rbdx, &abort) * 3 / 2;
    assert_restored(&rbdx, &views, "first abort");
    for round in 0..ROUNDS {
        let what = format!("abort round {round}");
        rbdx.run(&prepare).ok();
        // Half the rounds abort a prepared migration, half an executed one with client writes.
        if round % 2 == 1 {
            rbdx.run(&["migration", "execute", "--no-progress", "fast/vm"])
                .ok();
            rbdx.run(&["bench", "--io-type", "write", "--io-total", "1M", "fast/vm"])
                .ok();
        }
        kill_after(&rbdx, &abort, rng.below(span));
        let again = rbdx.run(&abort);
        assert!(
            again.code == 0 || again.code == 2,
            "{what}: abort failed: {}",
            again.stderr
        );
        assert_restored(&rbdx, &views, &what);
    }
}
