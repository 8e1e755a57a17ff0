//! Crash enumeration: run a workload of mixed commits on a fault-injecting
//! storage that crashes at operation N, for every N and several seeds of
//! what the disk keeps; then reopen and check the database equals the model
//! after the last acknowledged commit or after the one in flight — nothing
//! else. Then crash again during that recovery and check again.
//!
//! `CKPTDB_CRASH_SEEDS` sets the number of seeds (default 3).

mod crash_model;

use std::path::Path;
use std::sync::Arc;

use ckptdb::storage::fault::{Fault, FaultStorage};
use ckptdb::storage::Storage;
use ckptdb::{Db, DbOptions};
use crash_model::{
    copy_dir, read_model, run_until_failure, run_until_failure_at, workload, Action, Model, Session,
};

const COMMITS: u64 = 22;

fn seeds() -> u64 {
    std::env::var("CKPTDB_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn options(storage: Arc<dyn Storage>) -> DbOptions {
    // Small segments: the workload rolls to new segments many times.
    DbOptions::default().segment_size(4096).storage(storage)
}

/// Deterministic per-case choices (independent of the crash seed's use).
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

fn is_not_found(e: &ckptdb::Error) -> bool {
    matches!(e, ckptdb::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Checks the database at `path` shows `acked` or `in_flight`, read-only
/// first (before any recovery touches it), then as the writer. Returns the
/// number of storage operations the writer's recovery performed and whether
/// the in-flight commit survived.
fn check_state(path: &Path, acked: &Model, in_flight: Option<&Model>, case: &str) -> (u64, bool) {
    let ok = |m: &Model| m == acked || Some(m) == in_flight;
    if path.join("log").is_dir() {
        let ro = Db::open_read_only(path)
            .unwrap_or_else(|e| panic!("{case}: read-only open failed: {e}"));
        match read_model(&ro) {
            Ok(m) => assert!(
                ok(&m),
                "{case}: read-only view is neither acked nor in flight"
            ),
            // A reader trusts a root whose own crc holds and checks entries
            // on access; the writer's recovery validates and falls back. Only
            // the unacknowledged commit may be torn that way (an entry
            // damaged, or in a segment file that vanished).
            Err(e) => assert!(
                in_flight.is_some() && (e.is_corruption() || is_not_found(&e)),
                "{case}: read-only read failed: {e}"
            ),
        }
    } else {
        assert_eq!(acked, &Model::default(), "{case}: the directory is gone");
    }
    let counter = FaultStorage::new(Fault::None);
    let db = Db::open_with(path, options(counter.shared()))
        .unwrap_or_else(|e| panic!("{case}: recovery open failed: {e}"));
    let recovery_ops = counter.ops();
    let m = read_model(&db).unwrap_or_else(|e| panic!("{case}: read after recovery: {e}"));
    assert!(
        ok(&m),
        "{case}: recovered state is neither acked nor in flight\nacked steps {:?}\nin flight {:?}\ngot {:?}",
        acked.steps.keys().collect::<Vec<_>>(),
        in_flight.map(|m| m.steps.keys().collect::<Vec<_>>()),
        m.steps.keys().collect::<Vec<_>>()
    );
    drop(db);
    (recovery_ops, m != *acked)
}

/// After recovery the writer must go on committing normally (and, with
/// `replay`, the replay tables too).
fn check_writable(path: &Path, case: &str, replay: bool) {
    let db = Db::open(path).unwrap();
    let before = read_model(&db).unwrap();
    let step = before.last_step.map_or(1, |s| s + 1);
    let mut tx = db.begin_step(step).unwrap();
    tx.put_blob("after/crash", b"still writable").unwrap();
    tx.commit()
        .unwrap_or_else(|e| panic!("{case}: commit after recovery: {e}"));
    // The replay tables reopen from the newest step and go on.
    if replay {
        check_replay_writable(&db, step, case);
    }
    drop(db);
    let db = Db::open(path).unwrap();
    let snap = db.snapshot(step).unwrap();
    assert_eq!(snap.blob("after/crash").unwrap(), b"still writable");
    for (s, m) in &before.steps {
        let got = db.snapshot(*s).unwrap();
        for (k, v) in &m.entries {
            assert_eq!(got.raw_bytes(k).unwrap(), &v.bytes[..], "{case}: {s}/{k}");
        }
    }
}

/// Pushes to both tables as reopened after recovery, records them in a
/// step after `step`, and checks the database against the model.
fn check_replay_writable(db: &Db, step: u64, case: &str) {
    let model = read_model(db).unwrap().reopen();
    let mut session = Session::open(db).unwrap();
    let spec = crash_model::TxSpec {
        step: step + 1,
        parent: Some(step),
        pushes: vec![("buf".into(), 20), ("aux".into(), 3)],
        records: vec!["buf".into(), "aux".into()],
        ..Default::default()
    };
    let a = Action::Commit(spec);
    session
        .run(&a)
        .unwrap_or_else(|f| panic!("{case}: replay commit after recovery: {f:?}"));
    let model = a.apply(&model);
    assert_eq!(read_model(db).unwrap(), model, "{case}");
}

/// What one crash case saw.
#[derive(Default)]
struct Seen {
    /// The in-flight commit survived the first crash.
    kept: bool,
    /// Crashes during recovery tried.
    second: u64,
    /// The first crash hit a compaction.
    in_compaction: bool,
    /// The first crash hit a replay push outside a transaction (a full
    /// page going to the log).
    in_push: bool,
}

fn crash_case(actions: &[Action], n: u64, seed: u64) -> Seen {
    let case = format!("crash at op {n}, seed {seed}");
    let tmp = crash_model::scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let fs = FaultStorage::new(Fault::Crash { at: n, seed });
    let mut seen = Seen::default();
    let (acked, in_flight) = match Db::open_with(&path, options(fs.shared())) {
        Ok(db) => {
            let (acked, in_flight, failure) = run_until_failure_at(&db, actions);
            let (i, _) = failure.unwrap_or_else(|| panic!("{case}: the workload did not fail"));
            seen.in_compaction = matches!(actions[i], Action::Compact(_));
            seen.in_push = matches!(actions[i], Action::Push { .. });
            drop(db);
            (acked, in_flight)
        }
        Err(_) => (Model::default(), None),
    };
    assert!(fs.crashed(), "{case}: the storage did not crash");

    let choice = mix(n, seed);
    // The catalog is derived: with or without it the database is the same.
    if choice & 1 == 1 {
        let _ = std::fs::remove_file(path.join("index.redb"));
    }
    let copy = tmp.path().join("copy.ckpt");
    if path.exists() {
        copy_dir(&path, &copy);
    }
    let (recovery_ops, kept) = check_state(&path, &acked, in_flight.as_ref(), &case);
    seen.kept = kept;

    // Crash again, during the recovery of the same crash state: at every
    // operation of that recovery for seed 0, at one chosen by the case for
    // the others.
    if copy.exists() {
        let points: Vec<u64> = if seed == 0 {
            (1..=recovery_ops).collect()
        } else {
            vec![1 + (choice >> 1) % recovery_ops.max(1)]
        };
        for m in points {
            seen.second += 1;
            let case2 = format!("{case}, then at recovery op {m}");
            let again = tmp.path().join(format!("again-{m}.ckpt"));
            copy_dir(&copy, &again);
            let fs2 = FaultStorage::new(Fault::Crash {
                at: m,
                seed: choice ^ m,
            });
            if let Ok(db) = Db::open_with(&again, options(fs2.shared())) {
                drop(db);
            }
            check_state(&again, &acked, in_flight.as_ref(), &case2);
            if n.is_multiple_of(7) {
                check_writable(&again, &case2, seen.second == 1);
            }
        }
    }
    seen
}

#[test]
fn workload_runs_clean_and_matches_the_model() {
    let actions = workload(COMMITS);
    let tmp = crash_model::scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let fs = FaultStorage::new(Fault::None);
    let db = Db::open_with(&path, options(fs.shared())).unwrap();
    let mut session = Session::open(&db).unwrap();
    let mut acked = Model::default();
    for a in &actions {
        session.run(a).unwrap();
        acked = a.apply(&acked);
        assert_eq!(read_model(&db).unwrap(), acked, "after {a:?}");
    }
    // The workload exercises what it claims to.
    assert!(acked.steps.len() >= 3);
    assert_eq!(acked.last_step, Some(10 * COMMITS));
    let commits = actions
        .iter()
        .filter(|a| matches!(a, Action::Commit(_)))
        .count();
    assert!(commits >= 20);
    // Replay: both rings wrapped; a live step without a table; pushes
    // outside transactions that filled pages.
    let last = acked.steps.values().next_back().unwrap();
    for (name, capacity, _) in crash_model::TABLES {
        let t = &last.replay[name];
        assert!(t.total > 2 * capacity, "{name}: {t:?}");
        assert_eq!(t.rows.len() as u64, capacity);
    }
    assert!(acked.steps.values().any(|s| s.replay.len() < 2));
    // Compactions deleted segments (dead and copied forward) and copied
    // entries, replay pages among them.
    let c = &session.compactions;
    assert!(c.len() >= 6, "{c:?}");
    assert!(
        c.iter().map(|s| s.segments_deleted).sum::<usize>() > 10,
        "{c:?}"
    );
    assert!(
        c.iter().map(|s| s.entries_copied).sum::<usize>() > 10,
        "{c:?}"
    );
    drop(session);
    drop(db);
    let segs = std::fs::read_dir(path.join("log")).unwrap().count();
    assert!(segs > 5, "only {segs} segments: no rolls exercised");
    let db = Db::open(&path).unwrap();
    assert_eq!(read_model(&db).unwrap(), acked);
}

#[test]
fn crash_at_every_operation_recovers_acked_or_in_flight() {
    let actions = workload(COMMITS);
    let tmp = crash_model::scratch_dir();
    let fs = FaultStorage::new(Fault::None);
    {
        let db = Db::open_with(tmp.path().join("run.ckpt"), options(fs.shared())).unwrap();
        let (_, _, failure) = run_until_failure(&db, &actions);
        assert!(failure.is_none());
    }
    let total = fs.ops();
    assert!(total > 60, "only {total} operations");
    let seeds = seeds();
    let (mut kept, mut second, mut compacting, mut pushing) = (0, 0, 0, 0);
    for seed in 0..seeds {
        for n in 1..=total {
            let seen = crash_case(&actions, n, seed);
            kept += seen.kept as u64;
            second += seen.second;
            compacting += seen.in_compaction as u64;
            pushing += seen.in_push as u64;
        }
    }
    eprintln!(
        "crash sweep: {total} crash points x {seeds} seeds, {second} crashes during recovery; \
         the in-flight commit survived {kept} times; {compacting} crashes hit a compaction, \
         {pushing} a replay push"
    );
    // Both outcomes of a crash during a commit happen.
    assert!(kept > 0 && kept < total * seeds);
    // Crashes hit compactions and pages appended outside transactions.
    assert!(compacting >= 10 * seeds && pushing >= 10 * seeds);
}

#[test]
fn explicit_crash_keeps_every_acknowledged_commit() {
    // Crash between commits with the API call rather than an op number.
    let actions = workload(COMMITS);
    for seed in 0..4 {
        let tmp = crash_model::scratch_dir();
        let path = tmp.path().join("run.ckpt");
        let fs = FaultStorage::new(Fault::None);
        let db = Db::open_with(&path, options(fs.shared())).unwrap();
        let stop = 5 + seed as usize * 4;
        let (acked, _, failure) = run_until_failure(&db, &actions[..stop]);
        assert!(failure.is_none());
        fs.crash(seed).unwrap();
        // Every later operation fails: the writer is poisoned by the next
        // commit that needs the disk.
        let step = acked.last_step.unwrap() + 1;
        // (A put may already need the disk, e.g. to start a segment.)
        let commit = db.begin_step(step).and_then(|mut tx| {
            tx.put_blob("x", b"lost")?;
            tx.commit()
        });
        assert!(commit.is_err());
        assert!(matches!(
            db.begin_step(step + 1),
            Err(ckptdb::Error::Poisoned { .. })
        ));
        drop(db);
        let (_, kept) = check_state(&path, &acked, None, &format!("explicit crash, seed {seed}"));
        assert!(!kept);
    }
}

#[test]
fn torn_headers_of_several_new_segments_are_skipped() {
    // One transaction can roll through several segments before its only
    // sync; a crash can keep those files but lose their headers. Recovery
    // must treat the whole run of torn segments at the end as uncommitted
    // (it used to stop with a corruption error at the second one).
    let actions = workload(6);
    let tmp = crash_model::scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let db = Db::open_with(&path, options(ckptdb::storage::FsStorage::shared())).unwrap();
    let (acked, _, failure) = run_until_failure(&db, &actions);
    assert!(failure.is_none());
    drop(db);
    let log = path.join("log");
    let mut ids: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ids.sort();
    let last: u64 = ids.last().unwrap()[..20].parse().unwrap();
    std::fs::write(log.join(format!("{:020}.seg", last + 1)), vec![0u8; 200]).unwrap();
    std::fs::write(log.join(format!("{:020}.seg", last + 2)), b"CKPTSEG\0 torn").unwrap();
    let ro = Db::open_read_only(&path).unwrap();
    assert_eq!(read_model(&ro).unwrap(), acked);
    drop(ro);
    let db = Db::open(&path).unwrap();
    assert_eq!(read_model(&db).unwrap(), acked);
    assert_eq!(std::fs::read_dir(&log).unwrap().count(), ids.len());
}

/// `kill -9` at operation `n`, restart (recovery adopts whatever the
/// operating system kept, synced or not), commit once more, then lose power.
/// The commit made after the restart was acknowledged, so it — and every
/// entry it inherits — must survive.
fn kill_then_power_loss_case(actions: &[Action], n: u64, seed: u64) {
    let case = format!("kill at op {n}, then power loss with seed {seed}");
    let tmp = crash_model::scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let killed = FaultStorage::new(Fault::Kill { at: n });
    if let Ok(db) = Db::open_with(&path, options(killed.shared())) {
        let (_, _, failure) = run_until_failure(&db, actions);
        assert!(failure.is_some(), "{case}: the workload did not fail");
    }
    assert!(killed.crashed());
    if !path.join("log").exists() {
        return;
    }
    let restarted = killed.next_process(Fault::None);
    let db = Db::open_with(&path, options(restarted.shared()))
        .unwrap_or_else(|e| panic!("{case}: restart failed: {e}"));
    let before = read_model(&db).unwrap();
    let step = before.last_step.map_or(1, |s| s + 1);
    let mut tx = db.begin_step_from_latest(step).unwrap();
    tx.put_blob("after/restart", &crash_model::bytes_of(step, 100))
        .unwrap();
    tx.commit().unwrap();
    let acked = read_model(&db).unwrap();
    drop(db);
    restarted.crash(seed).unwrap();
    if mix(n, seed) & 1 == 1 {
        let _ = std::fs::remove_file(path.join("index.redb"));
    }
    let db = Db::open(&path).unwrap_or_else(|e| panic!("{case}: reopen failed: {e}"));
    let m = read_model(&db).unwrap_or_else(|e| panic!("{case}: read failed: {e}"));
    assert!(
        m == acked,
        "{case}: the commit acknowledged after the restart was lost"
    );
}

#[test]
fn kill_restart_commit_then_power_loss() {
    let actions = workload(COMMITS);
    let fs = FaultStorage::new(Fault::None);
    let tmp = crash_model::scratch_dir();
    {
        let db = Db::open_with(tmp.path().join("run.ckpt"), options(fs.shared())).unwrap();
        let (_, _, failure) = run_until_failure(&db, &actions);
        assert!(failure.is_none());
    }
    let total = fs.ops();
    let seeds = (seeds() / 2).max(2);
    for seed in 0..seeds {
        for n in 1..=total {
            kill_then_power_loss_case(&actions, n, seed);
        }
    }
    eprintln!("kill + power loss sweep: {total} kill points x {seeds} seeds");
}
