//! kill -9: a writer process commits deterministic steps and reports each
//! acknowledged commit on stdout; this test kills it (SIGKILL) at random
//! moments, reopens the database and checks every acknowledged step that
//! retention keeps is there and bit-exact, then starts a new writer on the
//! same database. `CKPTDB_KILLS` sets the number of kills (default 100);
//! `CKPTDB_KILL_SEED` replays a run.
//!
//! The writer is this test binary run again with `CKPTDB_KILL9_CHILD` set
//! to the database path: only then does `kill9_child` do anything.

mod crash_model;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ckptdb::{DType, Db, DbOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CHILD_ENV: &str = "CKPTDB_KILL9_CHILD";
/// A commit of step `s` drops every live step below `s - KEEP`.
const KEEP: u64 = 8;

/// The tensor step `s` holds: its size varies so that kills land inside
/// small buffered writes and large direct ones.
fn weights(s: u64) -> Vec<f32> {
    let n = if s % 16 == 5 {
        70_000
    } else {
        (s * 7919 % 3_000 + 1) as usize
    };
    (0..n).map(|i| (s as f32) * 0.5 + i as f32).collect()
}

fn shared() -> Vec<u8> {
    crash_model::bytes_of(77, 3000)
}

fn options() -> DbOptions {
    DbOptions::default().segment_size(256 << 10)
}

/// The writer: commits steps forever, printing `ACK <step>` after each
/// commit returns.
#[test]
fn kill9_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Only a writer when started by `kill9_commits_survive`.
    };
    let db = Db::open_with(&path, options()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut s = db.last_committed_step().map_or(1, |l| l + 1);
    loop {
        let mut tx = db.begin_step_from_latest(s).unwrap();
        let w = weights(s);
        tx.put_tensor_raw("w", DType::F32, &[w.len() as u64], bytemuck::cast_slice(&w))
            .unwrap();
        tx.put_blob("step", format!("step-{s}").as_bytes()).unwrap();
        // Re-put each time: dedup finds the committed copy.
        tx.put_blob("shared", &shared()).unwrap();
        tx.put_metric("loss", 1.0 / s as f64).unwrap();
        for old in db.steps() {
            if old + KEEP < s {
                tx.drop_step(old).unwrap();
            }
        }
        tx.commit().unwrap();
        writeln!(out, "ACK {s}").unwrap();
        out.flush().unwrap();
        s += 1;
    }
}

/// Checks the database after a kill: `acked` is the newest step a writer
/// reported, `before` the newest step found after the previous kill.
/// Returns the newest step found now.
fn check(
    path: &std::path::Path,
    acked: Option<u64>,
    before: Option<u64>,
    round: u64,
) -> Option<u64> {
    let db = Db::open_with(path, options())
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
    let steps = db.steps();
    let last = db.last_committed_step();
    // Nothing durable is ever lost; the step after the newest known one
    // may have become durable before the kill without being reported, and
    // nothing beyond it was ever begun.
    assert!(
        last >= before,
        "round {round}: newest step went from {before:?} to {last:?}"
    );
    let known = acked.max(before);
    if let Some(k) = known {
        let l = last.unwrap_or_else(|| panic!("round {round}: step {k} known, database empty"));
        assert!(l == k || l == k + 1, "round {round}: knew {k}, found {l}");
    }
    // Steps are consecutive and retention as of the newest commit `l`
    // keeps `l - KEEP ..= l`: exactly those are live, every acknowledged one
    // among them included.
    if let Some(l) = last {
        let want: Vec<u64> = (l.saturating_sub(KEEP).max(1)..=l).collect();
        assert_eq!(steps, want, "round {round}: live steps (acked {acked:?})");
        assert!(acked <= last);
    }
    for &s in &steps {
        let snap = db.snapshot(s).unwrap();
        let w = snap.tensor("w").unwrap();
        assert_eq!(
            w.as_slice::<f32>().unwrap(),
            &weights(s)[..],
            "round {round}: step {s}"
        );
        assert_eq!(snap.blob("step").unwrap(), format!("step-{s}").as_bytes());
        assert_eq!(snap.blob("shared").unwrap(), &shared()[..]);
        assert_eq!(snap.metrics()["loss"], 1.0 / s as f64);
        assert!(snap.verify().is_empty());
    }
    last
}

#[test]
fn kill9_commits_survive() {
    let kills: u64 = std::env::var("CKPTDB_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("CKPTDB_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill -9 test: {kills} kills, CKPTDB_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // On the real disk: commits pay real fsyncs, so the writer commits at
    // a realistic pace (and a long run does not fill memory).
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("run.ckpt");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Option<u64> = None;
    let mut found: Option<u64> = None;
    let mut mid_run = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints "test kill9_child ... " without a newline
                // before the test runs, so the first report follows it.
                if let Some((_, s)) = line.rsplit_once("ACK ") {
                    let _ = tx.send(s.parse::<u64>().unwrap());
                }
            }
        });
        // Wait for the writer to commit something most of the time, then a
        // random moment more; sometimes kill during startup and recovery.
        let mut first = None;
        if rng.random_bool(0.85) {
            first = rx.recv_timeout(Duration::from_secs(10)).ok();
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..15_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let mut got = 0;
        for s in first.into_iter().chain(rx.try_iter()) {
            assert!(
                acked.is_none_or(|a| s > a),
                "round {round}: step {s} acked twice"
            );
            acked = Some(s);
            got += 1;
        }
        if got > 0 {
            mid_run += 1;
        }
        if std::env::var("CKPTDB_KILL_DEBUG").is_ok() {
            eprintln!(
                "round {round}: {got} acks, last {acked:?}, db says {:?}",
                Db::open_read_only(&path).map(|d| d.last_committed_step())
            );
        }
        found = check(&path, acked, found, round);
    }
    eprintln!(
        "kill -9 test: {kills} kills survived, {mid_run} after commits, last acked step {acked:?}"
    );
    assert!(mid_run > kills / 2, "too few kills landed while committing");
}
