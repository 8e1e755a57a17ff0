//! Space reclamation: after retention drops most steps, compaction brings
//! the segment files back to near the live size; a snapshot taken before and
//! a read-only handle opened before still read identical bytes; a failure at
//! any point of compaction leaves a database that reopens intact.

mod switch_storage;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ckptdb::storage::{FsStorage, Storage, StorageFile};
use ckptdb::trainer::{CheckpointManager, CheckpointOptions};
use ckptdb::{Db, DbOptions};
use ndarray::Array1;
use switch_storage::{not_while_spawning, spawning_alone, Failing, SwitchStorage};

const SEGMENT: u64 = 256 << 10;
/// Elements of the per-step tensor (64 KiB of f32).
const N: usize = 16 << 10;

fn weights(step: u64) -> Array1<f32> {
    Array1::from_iter((0..N).map(|i| (step as f32) * 0.5 + i as f32))
}

fn shared() -> Array1<f32> {
    Array1::from_iter((0..N).map(|i| -(i as f32)))
}

fn segment_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn segment_ids(path: &Path) -> BTreeSet<String> {
    std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Commits steps 1..=40; each drops the steps that are neither among the
/// last two nor a multiple of 10. Reclamation is left to the test.
fn fill(db: &Db) {
    for step in 1..=40u64 {
        let mut tx = db.begin_step(step).unwrap();
        tx.put_tensor("w", &weights(step)).unwrap();
        // Identical every step: stored once, at step 1, in the first segment.
        tx.put_tensor("shared", &shared()).unwrap();
        tx.put_value("config", &serde_json::json!({"lr": 0.1, "step": step}))
            .unwrap();
        for old in db.steps() {
            if old + 1 < step && old % 10 != 0 {
                tx.drop_step(old).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

fn check_step(db: &Db, step: u64) {
    let snap = db.snapshot(step).unwrap();
    assert!(snap.verify().is_empty(), "step {step}");
    let w = snap.tensor("w").unwrap().to_owned::<f32>().unwrap();
    assert_eq!(w.as_slice().unwrap(), weights(step).as_slice().unwrap());
    let s = snap.tensor("shared").unwrap().to_owned::<f32>().unwrap();
    assert_eq!(s.as_slice().unwrap(), shared().as_slice().unwrap());
    let v: serde_json::Value = snap.value("config").unwrap();
    assert_eq!(v["step"], step);
}

#[test]
fn compaction_returns_space_and_readers_keep_reading() {
    let _serial = not_while_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Db::open_with(&path, DbOptions::default().segment_size(SEGMENT)).unwrap();
    fill(&db);
    let live_steps = vec![10, 20, 30, 39, 40];
    assert_eq!(db.steps(), live_steps);

    // A snapshot and a read-only handle from before compaction.
    let held = db.snapshot(10).unwrap();
    let held_bytes = held.tensor("w").unwrap().bytes().unwrap().to_vec();
    let reader = Db::open_read_only(&path).unwrap();
    let files_before = segment_ids(&path);
    let before = segment_bytes(&path);

    let stats = db.compact().unwrap();
    assert_eq!(stats.bytes_before, before);
    assert_eq!(stats.bytes_after, segment_bytes(&path));
    assert!(stats.segments_deleted >= 3, "{stats:?}");
    assert!(stats.entries_copied >= 1, "{stats:?}");
    // Every file that held step 10 at first is gone.
    let files_after = segment_ids(&path);
    let first = files_before.iter().next().unwrap();
    assert!(!files_after.contains(first), "{files_after:?}");

    // Near the live size: 5 distinct tensors, the shared one, small values
    // and records; at most one segment of slack.
    let live = (live_steps.len() as u64 + 1) * (N as u64 * 4);
    assert!(
        stats.bytes_after < live + SEGMENT,
        "{} bytes of segments for {live} live bytes ({stats:?})",
        stats.bytes_after
    );
    assert!(stats.bytes_after * 2 < before, "{stats:?}");

    // The held snapshot reads the bytes of the deleted segment, unchanged.
    assert_eq!(held.tensor("w").unwrap().bytes().unwrap(), &held_bytes[..]);
    assert!(held.verify().is_empty());
    // The reader opened before compaction still reads every step.
    for &s in &live_steps {
        check_step(&reader, s);
    }
    assert_eq!(
        reader
            .snapshot(10)
            .unwrap()
            .tensor("w")
            .unwrap()
            .bytes()
            .unwrap(),
        &held_bytes[..]
    );
    for &s in &live_steps {
        check_step(&db, s);
    }
    // Entries shared between steps stay shared after they moved (copied
    // once), and the catalog follows the moves.
    assert_eq!(db.history("shared").unwrap(), vec![10]);
    assert_eq!(db.history("w").unwrap(), live_steps);
    let at = |s: u64| db.snapshot(s).unwrap().entry("shared").unwrap().location;
    assert!(live_steps.iter().all(|&s| at(s) == at(10)));
    // Nothing left to do.
    let again = db.compact().unwrap();
    assert_eq!(again.segments_deleted, 0, "{again:?}");

    // New commits still dedup against the copied entries, and everything
    // survives a reopen and a catalog rebuild.
    let mut tx = db.begin_step(41).unwrap();
    tx.put_tensor("w", &weights(41)).unwrap();
    tx.put_tensor("shared", &shared()).unwrap();
    let config = serde_json::json!({"lr": 0.1, "step": 41});
    tx.put_value("config", &config).unwrap();
    let info = tx.commit().unwrap();
    let json_len = serde_json::to_vec(&config).unwrap().len() as u64;
    assert_eq!(
        info.new_bytes,
        (N * 4) as u64 + json_len,
        "only w and the value are new"
    );
    drop(db);
    std::fs::remove_file(path.join("index.redb")).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![10, 20, 30, 39, 40, 41]);
    for s in db.steps() {
        check_step(&db, s);
    }
}

#[test]
fn keep_last_three_bounds_disk() {
    let _serial = not_while_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Db::open_with(&path, DbOptions::default().segment_size(4 << 20)).unwrap();
    let m = CheckpointManager::new(Arc::new(db), CheckpointOptions::new().keep_last(3));
    let model = 1u64 << 20;
    for step in 1..=100u64 {
        m.save(step, |tx| {
            let w = Array1::from_elem((model / 4) as usize, step as f32);
            tx.put_tensor("w", &w)
        })
        .unwrap();
        let live = model * m.db().steps().len() as u64;
        let disk = segment_bytes(&path);
        assert!(
            disk < 3 * live + (4 << 20),
            "step {step}: {disk} bytes on disk, {live} live"
        );
    }
    assert_eq!(m.db().steps(), vec![98, 99, 100]);
}

#[test]
fn failed_compaction_loses_nothing() {
    let _serial = not_while_spawning();
    for mode in [Failing::Writes, Failing::Removals] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ckpt");
        let storage = SwitchStorage::new();
        {
            let db = Db::open_with(
                &path,
                DbOptions::default()
                    .segment_size(SEGMENT)
                    .storage(Arc::new(storage.clone())),
            )
            .unwrap();
            fill(&db);
            storage.set(mode);
            assert!(db.compact().is_err(), "mode {mode:?}");
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.steps(), vec![10, 20, 30, 39, 40], "mode {mode:?}");
        for s in db.steps() {
            check_step(&db, s);
        }
        let stats = db.compact().unwrap();
        assert!(stats.segments_deleted >= 3, "mode {mode:?}: {stats:?}");
        for s in db.steps() {
            check_step(&db, s);
        }
    }
}

const CRASH_ENV: &str = "CKPTDB_TEST_COMPACT_CRASH";

/// A storage that kills the process at its `n`-th operation once armed.
#[derive(Debug)]
struct Crashing {
    countdown: Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Debug)]
struct CrashingFile {
    inner: Box<dyn StorageFile>,
    countdown: Arc<std::sync::atomic::AtomicI64>,
}

/// Counts one operation; dies when the countdown reaches zero.
fn tick(countdown: &std::sync::atomic::AtomicI64) {
    if countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
        std::process::abort();
    }
}

impl Storage for Crashing {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        tick(&self.countdown);
        Ok(Box::new(CrashingFile {
            inner: FsStorage.create_new(path)?,
            countdown: self.countdown.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(CrashingFile {
            inner: FsStorage.open(path)?,
            countdown: self.countdown.clone(),
        }))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        tick(&self.countdown);
        FsStorage.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        tick(&self.countdown);
        FsStorage.sync_dir(path)
    }
}

impl StorageFile for CrashingFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        tick(&self.countdown);
        // Half of the write reaches the file before the crash.
        if self.countdown.load(Ordering::SeqCst) == 0 {
            return self.inner.write_at(offset, &buf[..buf.len() / 2]);
        }
        self.inner.write_at(offset, buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        tick(&self.countdown);
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        tick(&self.countdown);
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Child: compacts a filled database with a crash at operation `n` (never,
/// when compaction needs fewer operations: the child then exits normally).
fn compact_crash_child(path: &Path, n: i64) {
    let countdown = Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX));
    let storage = Arc::new(Crashing {
        countdown: countdown.clone(),
    });
    let db = Db::open_with(
        path,
        DbOptions::default().segment_size(SEGMENT).storage(storage),
    )
    .unwrap();
    countdown.store(n, Ordering::SeqCst);
    db.compact().unwrap();
}

#[test]
fn crash_at_every_step_of_compaction_loses_nothing() {
    if let Ok(spec) = std::env::var(CRASH_ENV) {
        let (n, path) = spec.split_once(':').unwrap();
        compact_crash_child(Path::new(path), n.parse().unwrap());
        return;
    }
    let _alone = spawning_alone();
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.ckpt");
    fill(&Db::open_with(&template, DbOptions::default().segment_size(SEGMENT)).unwrap());
    let mut crashed_at = Vec::new();
    for n in 1..=64i64 {
        let path = dir.path().join(format!("run{n}.ckpt"));
        copy_dir(&template, &path);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_at_every_step_of_compaction_loses_nothing",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, format!("{n}:{}", path.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let db = Db::open(&path).unwrap();
        assert_eq!(db.steps(), vec![10, 20, 30, 39, 40], "crash at op {n}");
        for s in db.steps() {
            check_step(&db, s);
        }
        let stats = db.compact().unwrap();
        for s in db.steps() {
            check_step(&db, s);
        }
        let live = 6 * (N as u64 * 4);
        assert!(
            stats.bytes_after < live + SEGMENT,
            "crash at op {n}: {stats:?}"
        );
        drop(db);
        std::fs::remove_dir_all(&path).unwrap();
        if status.success() {
            // Compaction needed fewer than n operations: every point was hit.
            break;
        }
        crashed_at.push(n);
    }
    eprintln!("compaction crashed at operations {crashed_at:?}");
    assert!(crashed_at.len() >= 5, "{crashed_at:?}");
    assert!(crashed_at.len() < 64, "compaction never completed");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn readers_race_reclamation_and_read_valid_bytes() {
    let _serial = not_while_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Arc::new(Db::open_with(&path, DbOptions::default().segment_size(SEGMENT)).unwrap());
    let m = CheckpointManager::new(db.clone(), CheckpointOptions::new().keep_last(2));
    m.save(1, |tx| tx.put_tensor("w", &weights(1))).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let check = |snap: ckptdb::Snapshot| {
        let w = snap.tensor("w").unwrap();
        assert_eq!(
            w.as_slice::<f32>().unwrap(),
            weights(snap.step()).as_slice().unwrap()
        );
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (db, done, path) = (db.clone(), done.clone(), path.clone());
            std::thread::spawn(move || {
                let ro = Db::open_read_only(&path).unwrap();
                let mut held = Vec::new();
                let mut reads = 0u32;
                while !done.load(Ordering::SeqCst) {
                    // The writer's handle, and a read-only one that moves on.
                    let latest = if r == 0 {
                        db.latest()
                    } else {
                        ro.refresh().unwrap();
                        ro.latest()
                    };
                    let snap = match latest {
                        Ok(s) => s,
                        // Retention dropped the step between finding it
                        // newest and reading it.
                        Err(ckptdb::Error::StepNotFound { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    };
                    let snap = snap.unwrap();
                    check(snap.clone());
                    reads += 1;
                    // Hold some snapshots across many reclamations.
                    if held.len() < 4 && reads.is_multiple_of(8) {
                        held.push(snap);
                    }
                }
                for s in held {
                    assert!(s.verify().is_empty());
                    check(s);
                }
                reads
            })
        })
        .collect();
    for step in 2..=60 {
        m.save(step, |tx| tx.put_tensor("w", &weights(step)))
            .unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(db.steps(), vec![59, 60]);
    assert!(segment_bytes(&path) < 2 * (N as u64 * 4) + 2 * SEGMENT);
}
