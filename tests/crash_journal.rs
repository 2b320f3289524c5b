//! Crash test of the journal: `rbdx nbd serve` on a journaling image is killed with SIGKILL 50
//! times while `qemu-io` writes through it and another process takes snapshots. After each
//! kill, taking the image's lock replays the journal, and then:
//! - every write qemu-io saw acknowledged is in the image, in order (a later acknowledged
//!   write wins where two overlap; only the one write in flight at the kill may or may not
//!   be there);
//! - the write in flight at the kill is in the image exactly when it reached the journal
//!   (replay applied it when the writer died between journaling and applying it);
//! - every snapshot whose command succeeded exists;
//! - `journal inspect` finds no damaged entry.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::nbd::{Server, have};
use common::{Lcg, Rbdx};

const KILLS: usize = 50;
const SIZE: u64 = 8 << 20;

/// One write qemu-io is asked to make.
#[derive(Clone, Copy)]
struct Write {
    offset: u64,
    len: u64,
    byte: u8,
}

/// Returns the last write event of the journal of image `j`, read from `journal export`.
fn last_write(rbdx: &Rbdx, dir: &std::path::Path) -> Option<(u64, bytes::Bytes)> {
    let path = dir.join("journal.exp");
    let _ = std::fs::remove_file(&path);
    rbdx.run(&["journal", "export", "j", path.to_str().unwrap()])
        .ok();
    let data = std::fs::read(&path).unwrap();
    let body = bytes::Bytes::from(data).slice(b"rbdx journal v1\n".len()..);
    rbdx_journal::entry::parse(&body)
        .entries
        .iter()
        .rev()
        .find_map(|e| match rbdx_journal::event::decode(&e.data).unwrap().0 {
            rbdx_image::journaling::Event::Write { offset, data } => Some((offset, data)),
            _ => None,
        })
}

#[test]
fn acknowledged_writes_and_snapshots_survive_kill_9_of_a_journaling_writer() {
    if !have("qemu-io", "qemu-utils") {
        return;
    }
    let rbdx = Rbdx::new();
    let dir = tempfile::tempdir().unwrap();
    rbdx.run(&[
        "create",
        "--size",
        "8M",
        "--object-size",
        "1M",
        "--image-feature",
        "layering,exclusive-lock,object-map,fast-diff,journaling",
        "j",
    ])
    .ok();
    let mut model = vec![0u8; SIZE as usize];
    let mut rng = Lcg(7);
    let mut snaps_made = Vec::new();
    let mut seq: u64 = 0;
    for round in 0..KILLS {
        let server = Server::start(&rbdx, &["j"]);
        let uri = server.uri("rbd/j");
        let writes: Vec<Write> = (0..400)
            .map(|_| {
                seq += 1;
                let len = (rng.next(16) + 1) * 4096;
                Write {
                    offset: rng.next((SIZE - len) / 4096) * 4096,
                    len,
                    byte: (seq % 250 + 1) as u8,
                }
            })
            .collect();
        let mut args = vec!["-f".to_owned(), "raw".to_owned()];
        for w in &writes {
            args.push("-c".into());
            args.push(format!("write -P {} {} {}", w.byte, w.offset, w.len));
        }
        args.push(uri);
        let mut io = Command::new("qemu-io")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = io.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("wrote "))
                .count()
        });
        // A snapshot taker in another process, killed with the server or finishing first.
        let snap = format!("j@k{round}");
        let mut snapper = Command::new(Rbdx::binary())
            .args(["snap", "create", "--no-progress", &snap])
            .env("RBDX_DATA_DIR", rbdx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 + rng.next(160)));
        server.kill9();
        let _ = io.wait();
        let acked = reader.join().unwrap();
        if snapper.wait().unwrap().success() {
            snaps_made.push(snap.trim_start_matches("j@").to_owned());
        }
        // The write after the last acknowledged one may have landed or not.
        let in_flight = writes.get(acked).copied();
        for w in &writes[..acked] {
            model[w.offset as usize..(w.offset + w.len) as usize].fill(w.byte);
        }
        // Taking the lock (here by a metadata change) replays the journal.
        rbdx.run(&["image-meta", "set", "j", "round", &round.to_string()])
            .ok();
        let path = dir.path().join("head.raw");
        let _ = std::fs::remove_file(&path);
        rbdx.run(&["export", "--no-progress", "j", path.to_str().unwrap()])
            .ok();
        let got = std::fs::read(&path).unwrap();
        for (i, (&g, &m)) in got.iter().zip(&model).enumerate() {
            if g == m {
                continue;
            }
            let i = i as u64;
            let w = in_flight.expect("no write in flight, yet the image differs");
            assert!(
                (w.offset..w.offset + w.len).contains(&i) && g == w.byte,
                "round {round}: byte {i} is {g}, expected {m} ({acked} writes acknowledged)"
            );
        }
        // The write in flight is in the image exactly when it reached the journal: replay
        // applied it if the writer died between the two.
        if let Some(w) = in_flight {
            let range = w.offset as usize..(w.offset + w.len) as usize;
            let in_image = got[range.clone()].iter().all(|&b| b == w.byte)
                && !model[range.clone()].iter().all(|&b| b == w.byte);
            let journaled = last_write(&rbdx, dir.path()).is_some_and(|(offset, data)| {
                offset == w.offset
                    && data.len() as u64 == w.len
                    && data.iter().all(|&b| b == w.byte)
            });
            if !model[range.clone()].iter().all(|&b| b == w.byte) {
                assert_eq!(in_image, journaled, "round {round}: write in flight");
            }
            // Whatever it did is now the truth for the next rounds.
            model[range.clone()].copy_from_slice(&got[range]);
        }
        let snaps = rbdx
            .run(&["snap", "ls", "j", "--format", "json"])
            .ok()
            .json();
        for name in &snaps_made {
            assert!(
                snaps.as_array().unwrap().iter().any(|s| s["name"] == *name),
                "round {round}: snapshot {name} was acknowledged but is gone"
            );
        }
        let inspect = rbdx
            .run(&["journal", "inspect", "j", "--format", "json"])
            .ok();
        assert_eq!(
            inspect.json()["errors"],
            serde_json::json!([]),
            "round {round}"
        );
    }
    // Trimming kept the journal bounded.
    let status = rbdx
        .run(&["journal", "status", "j", "--format", "json"])
        .ok()
        .json();
    assert!(status["active_set"].as_u64().unwrap() < 64, "{status}");
}
