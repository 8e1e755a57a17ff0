//! A read-only handle in another process follows a writer that keeps
//! committing, and never sees a half-written step.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ckptdb::Db;
use common::content;

const STEPS: u64 = 150;
const CHILD_ENV: &str = "CKPTDB_TEST_WRITER_DB";

/// The writer process: commits steps 1..=STEPS, keeping the last ten, and
/// reports each acknowledged commit on stdout.
#[test]
fn writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child of the test below
    };
    let db = Db::open(&path).unwrap();
    for s in 1..=STEPS {
        let mut tx = db.begin_step(s).unwrap();
        tx.put_blob("w", &content(s, "w", 8192)).unwrap();
        tx.put_blob("const", &content(0, "const", 4096)).unwrap();
        tx.put_metric("step", s as f64).unwrap();
        if s > 10 {
            tx.drop_step(s - 10).unwrap();
        }
        tx.commit().unwrap();
        println!("ACK {s}");
    }
}

fn check_step(db: &Db, s: u64) {
    let snap = db.snapshot(s).unwrap();
    assert_eq!(
        snap.blob("w").unwrap(),
        &content(s, "w", 8192)[..],
        "step {s}"
    );
    assert_eq!(snap.blob("const").unwrap(), &content(0, "const", 4096)[..]);
    assert_eq!(snap.metrics()["step"], s as f64);
}

#[test]
fn reader_process_follows_a_committing_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // The database exists before the reader opens it.
    drop(Db::open(&path).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let follower = Db::open_read_only(&path).unwrap();
    let mut early: Option<ckptdb::Snapshot> = None;
    let mut acked = 0;
    let mut refreshes = 0;
    for line in out.lines() {
        let line = line.unwrap();
        let Some(s) = line.strip_prefix("ACK ") else {
            continue;
        };
        acked = s.trim().parse().unwrap();
        if acked % 7 == 0 {
            // A fresh reader sees every acknowledged step that is still live.
            let fresh = Db::open_read_only(&path).unwrap();
            let steps = fresh.steps();
            assert!(steps.contains(&acked), "fresh reader misses step {acked}");
            for &s in &steps {
                check_step(&fresh, s);
            }
        }
        if acked % 3 == 0 {
            // A long-lived reader moves forward on refresh.
            if follower.refresh().unwrap() {
                refreshes += 1;
            }
            assert!(follower.latest_step().unwrap() >= acked);
            check_step(&follower, follower.latest_step().unwrap());
            if early.is_none() {
                early = Some(follower.latest().unwrap().unwrap());
            }
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(acked, STEPS);
    assert!(refreshes >= 10, "refreshes: {refreshes}");
    // A snapshot taken early still reads its step, long after the writer
    // dropped it.
    let early = early.unwrap();
    let s = early.step();
    assert!(!follower.steps().contains(&s));
    assert_eq!(early.blob("w").unwrap(), &content(s, "w", 8192)[..]);
    follower.refresh().unwrap();
    assert_eq!(follower.steps(), (STEPS - 9..=STEPS).collect::<Vec<_>>());
}
