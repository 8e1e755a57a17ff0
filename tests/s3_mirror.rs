//! A live mirror copies a running writer's commits to the object store:
//! the remote always holds a complete committed state (never part of a
//! step), follows reclamation, reports failing uploads instead of hiding
//! them, and survives kill -9 of the writer at any moment without
//! diverging from the log the next writer continues.
//!
//! The kill test's writer is this test binary run again with
//! `CKPTDB_MIRROR_CHILD` set to the database path. `CKPTDB_MIRROR_KILLS`
//! sets the number of kills (default 50); `CKPTDB_KILL_SEED` replays a run.
#![cfg(feature = "s3")]

mod common;
mod s3_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ckptdb::remote::object_store::memory::InMemory;
use ckptdb::remote::object_store::ObjectStore;
use ckptdb::remote::{fault::FaultStore, Durability, Mirror, MirrorOptions, Remote, RemoteOptions};
use ckptdb::{Db, DbOptions, Error, StepTx};
use common::content;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use s3_support::Moto;

const CHILD_ENV: &str = "CKPTDB_MIRROR_CHILD";
const URL_ENV: &str = "CKPTDB_MIRROR_URL";
/// A commit of step `s` drops every live step below `s - KEEP`.
const KEEP: u64 = 4;

/// What step `s` holds under "w": sizes vary so that segments roll and
/// reclamation deletes them while the mirror uploads.
fn weights(s: u64) -> Vec<u8> {
    let n = if s % 3 == 1 {
        300_000
    } else {
        (s * 7919 % 20_000 + 1) as usize
    };
    content(s, "w", n)
}

fn options() -> DbOptions {
    DbOptions::default().segment_size(256 << 10)
}

/// Commits step `s`, dropping the steps retention no longer keeps.
fn commit(db: &Db, s: u64) {
    commit_by(db, s, b"", Duration::ZERO);
}

/// Commits step `s` as writer `who`, pausing `think` between the puts and
/// the commit (as a training loop computing its next tensors would): a
/// step a killed writer left uncommitted is written again by the next one
/// with other bytes, so a remote that held those uncommitted bytes (large
/// payloads reach the file before the commit) would diverge from the log.
fn commit_by(db: &Db, s: u64, who: &[u8], think: Duration) {
    step_tx(db, s, who, think).commit().unwrap();
}

/// The transaction `commit_by` commits.
fn step_tx<'db>(db: &'db Db, s: u64, who: &[u8], think: Duration) -> StepTx<'db> {
    let mut tx = db.begin_step_from_latest(s).unwrap();
    tx.put_blob("writer", who).unwrap();
    tx.put_blob("w", &weights(s)).unwrap();
    std::thread::sleep(think);
    tx.put_blob("step", format!("step-{s}").as_bytes()).unwrap();
    tx.put_metric("loss", 1.0 / s as f64).unwrap();
    for old in db.steps() {
        if old + KEEP < s {
            tx.drop_step(old).unwrap();
        }
    }
    tx
}

/// Every step of `db` holds exactly what `commit` wrote for it.
fn assert_exact(db: &Db, what: &str) {
    for s in db.steps() {
        let snap = db.snapshot(s).unwrap();
        assert_eq!(snap.blob("w").unwrap(), weights(s), "{what}: step {s}");
        assert_eq!(
            snap.blob("step").unwrap(),
            format!("step-{s}").as_bytes(),
            "{what}: step {s}"
        );
        assert_eq!(snap.metrics()["loss"], 1.0 / s as f64, "{what}: step {s}");
    }
}

#[test]
fn the_remote_follows_a_writer_through_reclamation() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("mirror");
    let url = "s3://mirror/run";
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path().join("run.ckpt"), options()).unwrap());
    let mirror = Mirror::start(db.clone(), Remote::open(url, moto.options()).unwrap()).unwrap();
    for s in 1..=30u64 {
        commit(&db, s);
        mirror.notify();
        if s % 10 == 0 {
            mirror.wait_remote(s).unwrap();
            assert!(mirror.remote_step() >= Some(s));
            // No commit since: the remote holds exactly the live steps.
            let cache = dir.path().join(format!("cache-{s}"));
            let seen = Remote::open(url, moto.options())
                .unwrap()
                .open_db(&cache)
                .unwrap();
            assert_eq!(seen.steps(), db.steps(), "after step {s}");
            assert_exact(&seen, "remote");
        }
    }
    mirror.flush().unwrap();
    mirror.check().unwrap();
    assert_eq!(mirror.remote_step(), Some(30));
    drop(mirror);
    // Reclamation deleted most segments locally; the remote let go of
    // them too, keeping only what its two newest roots name.
    let remote = Remote::open(url, moto.options()).unwrap();
    let root = remote.newest_root().unwrap().unwrap();
    assert_eq!(root.latest_step, Some(30));
    let local_log: u64 = std::fs::read_dir(dir.path().join("run.ckpt/log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        root.total_bytes() <= local_log,
        "remote {} bytes, local log {local_log}",
        root.total_bytes()
    );
}

#[test]
fn a_failing_upload_is_reported_then_retried() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faults = Arc::new(FaultStore::new(inner.clone()));
    let url = "s3://memory/run";
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path().join("run.ckpt"), options()).unwrap());
    commit(&db, 1);
    let remote = Remote::with_store(faults.clone(), url).unwrap();
    let mirror = Mirror::start(db.clone(), remote).unwrap();
    mirror.wait_remote(1).unwrap();

    // Every root upload fails: the step never reaches the remote, and the
    // caller hears why, in bounded time.
    faults.fail_puts_containing(Some("root"));
    commit(&db, 2);
    let start = Instant::now();
    let err = mirror.wait_remote(2).unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "wait_remote: {err:?}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(mirror.check().is_err(), "check reports the failure too");
    assert!(matches!(mirror.flush(), Err(Error::Remote { .. })));
    assert_eq!(mirror.remote_step(), Some(1));
    let fresh = Remote::with_store(inner.clone(), url).unwrap();
    assert_eq!(fresh.newest_root().unwrap().unwrap().latest_step, Some(1));

    // The store recovers: the mirror catches up on its own.
    faults.fail_puts_containing(None);
    commit(&db, 3);
    mirror.wait_remote(3).unwrap();
    mirror.flush().unwrap();
    mirror.check().unwrap();
    let seen = Remote::with_store(inner, url)
        .unwrap()
        .open_db(dir.path().join("cache"))
        .unwrap();
    assert_eq!(seen.steps(), vec![1, 2, 3]);
    assert_exact(&seen, "after recovery");
    assert!(faults.failed_puts() > 0);
}

/// Bytes of every segment file of the database at `path`.
fn log_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_push_during_a_transaction_sends_only_committed_bytes() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let url = "s3://memory/run";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Arc::new(Db::open_with(&path, DbOptions::default().segment_size(2 << 20)).unwrap());
    commit(&db, 1);
    let committed = log_bytes(&path);
    // Step 2 is in the log but not committed: a payload this large goes to
    // the file at once, the first past the root's end in its segment, the
    // second in a segment of its own after it.
    let mut tx = db.begin_step_from_latest(2).unwrap();
    tx.put_blob("w", &content(2, "w", 300_000)).unwrap();
    tx.put_blob("big", &content(2, "big", 3 << 20)).unwrap();
    assert!(log_bytes(&path) >= committed + 300_000 + (3 << 20));
    assert_eq!(std::fs::read_dir(path.join("log")).unwrap().count(), 2);

    // Both ways of pushing: a push on its own and a mirror's first push.
    let alone = Remote::with_store(inner.clone(), "s3://memory/alone").unwrap();
    let pushed = alone.push(&path).unwrap();
    assert_eq!(
        (pushed.latest_step, pushed.bytes_uploaded),
        (Some(1), committed)
    );
    let mirror =
        Mirror::start(db.clone(), Remote::with_store(inner.clone(), url).unwrap()).unwrap();
    mirror.flush().unwrap();
    assert_eq!(mirror.remote_step(), Some(1));
    for at in [url, "s3://memory/alone"] {
        let remote = Remote::with_store(inner.clone(), at).unwrap();
        let root = remote.newest_root().unwrap().unwrap();
        assert_eq!(root.latest_step, Some(1), "{at}");
        assert_eq!(root.segments.len(), 1, "{at}: a segment past the root's");
        assert_eq!(root.total_bytes(), committed, "{at}: bytes past the root");
        let seen = remote
            .open_db(dir.path().join(format!("cache-{}", &at[12..])))
            .unwrap();
        assert_eq!(seen.steps(), vec![1]);
        assert_exact(&seen, at);
    }

    // The step commits: now it goes up, every byte of it.
    tx.put_blob("step", b"step-2").unwrap();
    tx.put_metric("loss", 0.5).unwrap();
    tx.commit().unwrap();
    mirror.flush().unwrap();
    assert_eq!(mirror.remote_step(), Some(2));
    let remote = Remote::with_store(inner.clone(), url).unwrap();
    assert_eq!(
        remote.newest_root().unwrap().unwrap().total_bytes(),
        log_bytes(&path)
    );
    let seen = remote.open_db(dir.path().join("cache-after")).unwrap();
    let snap = seen.snapshot(2).unwrap();
    assert_eq!(snap.blob("w").unwrap(), content(2, "w", 300_000));
    assert_eq!(snap.blob("big").unwrap(), content(2, "big", 3 << 20));
    assert_eq!(snap.blob("step").unwrap(), b"step-2");
}

/// A store on the moto server that sleeps before every put.
fn slow_store(moto: &Moto, bucket: &str, delay: Duration) -> Arc<FaultStore> {
    let slow = Arc::new(FaultStore::new(Arc::new(moto.store(bucket))));
    slow.put_delay(delay);
    slow
}

#[test]
fn with_remote_durability_a_commit_returns_once_the_remote_holds_it() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("durable");
    let url = "s3://durable/run";
    // Slow uploads: a commit that returned before its upload would leave
    // the remote behind.
    let slow = slow_store(&moto, "durable", Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path().join("run.ckpt"), options()).unwrap());
    let durable = MirrorOptions::default().durability(Durability::Remote);
    let remote = Remote::with_store(slow.clone(), url).unwrap();
    let mirror = Mirror::start_with(db.clone(), remote, durable).unwrap();
    assert_eq!(mirror.durability(), Durability::Remote);
    for s in 1..=7u64 {
        let info = mirror.commit(step_tx(&db, s, b"", Duration::ZERO)).unwrap();
        assert_eq!(info.step, s);
        // A fresh cache on the real server: the step is there, exact.
        let seen = remote_view(&moto, url, &dir.path().join(format!("cache-{s}")));
        assert_eq!(seen.latest_step(), Some(s), "after commit {s}");
        assert_eq!(seen.steps(), db.steps(), "after commit {s}");
        assert_exact(&seen, &format!("after commit {s}"));
    }
    assert!(slow.puts() >= 14, "a piece and a root per commit");

    // A transaction of another database is refused and commits nothing.
    let other = Db::open_with(dir.path().join("other.ckpt"), options()).unwrap();
    let mut tx = other.begin_step(1).unwrap();
    tx.put_blob("w", b"x").unwrap();
    let e = mirror.commit(tx).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(other.steps(), Vec::<u64>::new());
}

#[test]
fn with_remote_durability_a_failed_upload_fails_the_commit_after_the_local_one() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faults = Arc::new(FaultStore::new(inner.clone()));
    let url = "s3://memory/run";
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path().join("run.ckpt"), options()).unwrap());
    let durable = MirrorOptions::default().durability(Durability::Remote);
    let remote = Remote::with_store(faults.clone(), url).unwrap();
    let mirror = Mirror::start_with(db.clone(), remote, durable).unwrap();
    mirror.commit(step_tx(&db, 1, b"", Duration::ZERO)).unwrap();
    faults.fail_puts_containing(Some("roots/"));
    let e = mirror
        .commit(step_tx(&db, 2, b"", Duration::ZERO))
        .unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    // Committed locally; the remote still at step 1, complete.
    assert_eq!(db.latest_step(), Some(2));
    let fresh = Remote::with_store(inner.clone(), url).unwrap();
    assert_eq!(fresh.newest_root().unwrap().unwrap().latest_step, Some(1));
    // The store recovers: the next commit returns with both on the remote.
    faults.fail_puts_containing(None);
    mirror.commit(step_tx(&db, 3, b"", Duration::ZERO)).unwrap();
    let seen = fresh.open_db(dir.path().join("cache")).unwrap();
    assert_eq!(seen.steps(), vec![1, 2, 3]);
    assert_exact(&seen, "after recovery");
}

/// The writer of the kill test: commits forever, printing `ACK <step>`
/// after each commit and `REMOTE <step>` once the mirror holds it, and
/// compacts every 8 steps.
#[test]
fn mirror_kill9_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Only a writer when started by the kill test.
    };
    let url = std::env::var(URL_ENV).unwrap();
    let db = Arc::new(Db::open_with(&path, options()).unwrap());
    let remote = Remote::open(&url, RemoteOptions::from_env()).unwrap();
    let mirror = Mirror::start(db.clone(), remote).unwrap();
    let mut s = db.last_committed_step().map_or(1, |l| l + 1);
    let who = std::process::id().to_le_bytes();
    loop {
        commit_by(&db, s, &who, Duration::from_millis(5));
        println!("ACK {s}");
        if s.is_multiple_of(8) {
            // Reclamation deletes segments under the uploads (and keeps
            // each round's database, and so its checks, small).
            db.compact().unwrap();
        }
        mirror.notify();
        if s.is_multiple_of(3) {
            mirror.wait_remote(s).unwrap();
            println!("REMOTE {s}");
        }
        s += 1;
    }
}

/// Reads the child's stdout lines into a channel.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn remote_view(moto: &Moto, url: &str, cache: &Path) -> Db {
    Remote::open(url, moto.options())
        .unwrap()
        .open_db(cache)
        .unwrap()
}

#[test]
fn kill9_of_a_mirrored_writer_leaves_a_complete_remote() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("killed");
    let url = "s3://killed/run";
    let kills: u32 = std::env::var("CKPTDB_MIRROR_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CKPTDB_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("CKPTDB_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("run.ckpt");
    let exe = std::env::current_exe().unwrap();
    let mut acked_max = 0u64;
    let mut remote_max = 0u64;
    let mut newest_seen = 0u64;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "mirror_kill9_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db_path)
            .env(URL_ENV, url)
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines(&mut child);
        // Kill at a random moment after the first commit of this round.
        let after = Duration::from_millis(rng.random_range(50..1200));
        let mut started: Option<Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    let (tag, n) = line.split_once(' ').unwrap_or((&line, ""));
                    let Ok(n) = n.trim().parse::<u64>() else {
                        continue;
                    };
                    match tag {
                        "ACK" => acked_max = acked_max.max(n),
                        "REMOTE" => remote_max = remote_max.max(n),
                        _ => continue,
                    }
                    started.get_or_insert_with(Instant::now);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).ok();
                panic!("round {round}: the writer exited by itself ({status}): {err}");
            }
            if started.is_some_and(|t| t.elapsed() >= after) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // The remote holds a complete committed state: a suffix of the
        // acknowledged steps, each exact, at least as new as any step the
        // mirror reported and never older than what an earlier round saw.
        let seen = remote_view(&moto, url, &dir.path().join(format!("cache-{round}")));
        let steps = seen.steps();
        let newest = *steps.last().expect("the remote holds a step");
        assert!(
            newest <= acked_max,
            "round {round}: remote step {newest} never acknowledged"
        );
        assert!(
            newest >= remote_max,
            "round {round}: remote {newest} < reported {remote_max}"
        );
        assert!(
            newest >= newest_seen,
            "round {round}: remote went back to {newest}"
        );
        assert!(
            steps.iter().all(|&s| s + KEEP >= newest),
            "round {round}: steps {steps:?} that retention dropped"
        );
        assert_exact(&seen, &format!("round {round}"));
        newest_seen = newest;
    }
    // A last writer recovers, catches the remote up and finds no divergence.
    let db = Arc::new(Db::open_with(&db_path, options()).unwrap());
    let next = db.last_committed_step().unwrap() + 1;
    let mirror = Mirror::start(db.clone(), Remote::open(url, moto.options()).unwrap()).unwrap();
    commit(&db, next);
    mirror.flush().unwrap();
    let seen = remote_view(&moto, url, &dir.path().join("cache-last"));
    assert_eq!(seen.steps(), db.steps());
    assert_exact(&seen, "after the last writer");
}
