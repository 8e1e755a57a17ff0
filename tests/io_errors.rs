//! I/O errors: an `EIO` or `ENOSPC` at any storage operation of the
//! workload makes the call that hit it fail, poisons the writer (nothing is
//! retried, in particular not a failed fsync), and reopening recovers the
//! last committed state.

mod crash_model;

use std::sync::Arc;

use ckptdb::storage::fault::{Fault, FaultStorage, IoFault};
use ckptdb::storage::Storage;
use ckptdb::{Db, DbOptions, Error};
use crash_model::{read_model, run_until_failure, scratch_dir, workload, Failure, Model};

fn options(storage: Arc<dyn Storage>) -> DbOptions {
    DbOptions::default().segment_size(4096).storage(storage)
}

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// Returns whether the error hit a compaction.
fn case(n: u64, error: IoFault, persistent: bool) -> bool {
    let case = format!("{error:?} at op {n} (persistent: {persistent})");
    let want = match error {
        IoFault::Eio => 5,
        IoFault::Enospc => 28,
    };
    let actions = workload(12);
    let tmp = scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let fs = FaultStorage::new(Fault::Fail {
        at: n,
        error,
        persistent,
    });
    let mut compacting = false;
    let (acked, in_flight) = match Db::open_with(&path, options(fs.shared())) {
        Err(e) => {
            assert_eq!(errno(&e), Some(want), "{case}: open failed with {e}");
            (Model::default(), None)
        }
        Ok(db) => {
            let (acked, in_flight, failure) = run_until_failure(&db, &actions);
            let failure = failure.unwrap_or_else(|| panic!("{case}: nothing failed"));
            compacting = matches!(failure, Failure::InMaintenance(_));
            match &failure {
                // The failed call reports the injected error, or — when a
                // dropped transaction failed to cut the log back — the next
                // call reports the poisoning.
                Failure::InCommit(e) | Failure::Before(e) | Failure::InMaintenance(e) => assert!(
                    errno(e) == Some(want) || matches!(e, Error::Poisoned { .. }),
                    "{case}: failed with {e}"
                ),
            }
            let ops = fs.ops();
            let next = acked.last_step.unwrap_or(0) + 1_000_000;
            match db.begin_step(next) {
                // The poisoning keeps the injected error as its cause, and
                // as its `source()`.
                Err(e @ Error::Poisoned { .. }) => {
                    let source = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<Error>())
                        .unwrap_or_else(|| panic!("{case}: {e} has no cause"));
                    assert_eq!(errno(source), Some(want), "{case}: poisoned by {source}")
                }
                other => panic!("{case}: writer not poisoned: {other:?}"),
            }
            // The committed state stays readable from the poisoned handle.
            if in_flight.is_none() {
                assert_eq!(read_model(&db).unwrap(), acked, "{case}");
            }
            drop(db);
            // Poisoned means nothing more reaches the disk: no retried
            // write, no second fsync after a failed one.
            assert_eq!(fs.ops(), ops, "{case}: the writer went on after the error");
            (acked, in_flight)
        }
    };
    assert!(fs.failed(), "{case}: the fault was not hit");
    let db = Db::open(&path).unwrap_or_else(|e| panic!("{case}: reopen failed: {e}"));
    let m = read_model(&db).unwrap();
    // A commit whose record reached the disk before a later step of the
    // commit failed (the directory fsync) may be there; nothing else.
    assert!(
        m == acked || Some(&m) == in_flight.as_ref(),
        "{case}: reopened state is neither the last commit nor the failed one"
    );
    // And it takes new commits.
    let step = m.last_step.unwrap_or(0) + 1;
    let mut tx = db.begin_step(step).unwrap();
    tx.put_blob("after", b"ok").unwrap();
    tx.commit().unwrap();
    compacting
}

#[test]
fn every_failed_operation_poisons_and_reopen_recovers() {
    let fs = FaultStorage::new(Fault::None);
    let tmp = scratch_dir();
    {
        let db = Db::open_with(tmp.path().join("run.ckpt"), options(fs.shared())).unwrap();
        let (_, _, failure) = run_until_failure(&db, &workload(12));
        assert!(failure.is_none());
    }
    let total = fs.ops();
    assert!(total > 30);
    let mut compacting = 0;
    for n in 1..=total {
        for error in [IoFault::Eio, IoFault::Enospc] {
            for persistent in [false, true] {
                compacting += case(n, error, persistent) as u64;
            }
        }
    }
    eprintln!(
        "I/O errors: {total} failing operations x 2 errors x 2 persistences; \
         {compacting} cases failed a compaction"
    );
    // The workload's compactions (and replay pushes) meet errors too.
    assert!(compacting >= 8);
}

#[test]
fn failed_fsync_is_not_retried() {
    // The clean run's operations; find the first data sync of a commit.
    let tmp = scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let probe = FaultStorage::new(Fault::None);
    let db = Db::open_with(&path, options(probe.shared())).unwrap();
    let opened = probe.ops();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("a", b"first").unwrap();
    tx.commit().unwrap();
    // One buffered write, then fdatasync: the commit's second operation.
    assert_eq!(probe.ops(), opened + 2);
    drop(db);

    let tmp = scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let fs = FaultStorage::new(Fault::Fail {
        at: opened + 2,
        error: IoFault::Eio,
        persistent: false,
    });
    let db = Db::open_with(&path, options(fs.shared())).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("a", b"first").unwrap();
    let err = tx.commit().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    assert!(fs.failed());
    // The fault was one-shot: a retry would now succeed and wrongly report
    // durability. The writer must refuse instead.
    assert!(matches!(db.begin_step(2), Err(Error::Poisoned { .. })));
    assert_eq!(fs.ops(), opened + 2);
    drop(db);
    let db = Db::open(&path).unwrap();
    // The failed fsync is not a durable commit in the model's sense, but the
    // real file system kept the bytes: either outcome is allowed, as long
    // as the content is exact.
    match db.steps().as_slice() {
        [] => {}
        [1] => assert_eq!(db.snapshot(1).unwrap().blob("a").unwrap(), b"first"),
        other => panic!("unexpected steps {other:?}"),
    }
}

#[test]
fn failed_recovery_leaves_the_database_recoverable() {
    // Crash states whose recovery has work to do (cut a torn tail, remove
    // segments of an unfinished transaction); fail each operation of that
    // recovery; the open fails with the injected error and a later clean
    // open still recovers.
    let actions = workload(12);
    let mut cases = 0;
    for at in (20..80).step_by(7) {
        let tmp = scratch_dir();
        let path = tmp.path().join("run.ckpt");
        let fs = FaultStorage::new(Fault::Crash { at, seed: at });
        let (acked, in_flight) = {
            let db = Db::open_with(&path, options(fs.shared())).unwrap();
            let (acked, in_flight, _) = run_until_failure(&db, &actions);
            (acked, in_flight)
        };
        let crashed = tmp.path().join("crashed");
        crash_model::copy_dir(&path, &crashed);
        let counter = FaultStorage::new(Fault::None);
        drop(Db::open_with(&path, options(counter.shared())).unwrap());
        let recovery_ops = counter.ops();
        for m in 1..=recovery_ops {
            let copy = tmp.path().join(format!("r{m}"));
            crash_model::copy_dir(&crashed, &copy);
            let fs = FaultStorage::new(Fault::Fail {
                at: m,
                error: IoFault::Eio,
                persistent: false,
            });
            let e = Db::open_with(&copy, options(fs.shared())).unwrap_err();
            assert_eq!(errno(&e), Some(5), "recovery op {m}: {e}");
            let db = Db::open(&copy).unwrap();
            let got = read_model(&db).unwrap();
            assert!(got == acked || Some(&got) == in_flight.as_ref());
            cases += 1;
        }
    }
    assert!(cases > 10);
}
