//! Steps of many small tensors go to the log through the log writer's
//! background thread (a full 1 MiB buffer is written while the next one
//! fills). An I/O error or a crash at any storage operation of such a step
//! must end exactly as on the appending thread: the call fails or the writer
//! is poisoned, nothing reaches the disk afterwards, and the reopened
//! database holds the acknowledged steps, byte for byte, and nothing
//! half-written.

mod crash_model;

use std::path::Path;

use ckptdb::storage::fault::{Fault, FaultStorage, IoFault};
use ckptdb::{DType, Db, DbOptions};

/// Tensors per step: 700 of 4 KiB, about 2.9 MiB with headers, so every
/// step hands at least two full buffers to the log's background thread.
const TENSORS: usize = 700;

fn tensor(step: u64, i: usize) -> Vec<u8> {
    (0..1024u32)
        .flat_map(|j| (j as f32 + i as f32 * 0.5 + step as f32 * 1000.0).to_le_bytes())
        .collect()
}

fn key(i: usize) -> String {
    format!("layer{i:03}/weight")
}

/// Commits `step` with [`TENSORS`] tensors.
fn commit(db: &Db, step: u64) -> ckptdb::Result<()> {
    let mut tx = db.begin_step(step)?;
    for i in 0..TENSORS {
        tx.put_tensor_raw(&key(i), DType::F32, &[1024], &tensor(step, i))?;
    }
    tx.commit().map(|_| ())
}

/// Runs steps 1 and 2 until the first failure; returns the steps
/// acknowledged and the one in flight when it failed.
fn run(path: &Path, fs: &FaultStorage) -> (Vec<u64>, Option<u64>) {
    let options = DbOptions::default().storage(fs.shared());
    let Ok(db) = Db::open_with(path, options) else {
        return (Vec::new(), None);
    };
    let mut acked = Vec::new();
    for step in [1, 2] {
        if commit(&db, step).is_err() {
            let ops = fs.ops();
            drop(db);
            assert_eq!(fs.ops(), ops, "the writer went on after the failure");
            return (acked, Some(step));
        }
        acked.push(step);
    }
    (acked, None)
}

/// Reopens `path` and checks it holds the acknowledged steps, plus perhaps
/// the one in flight, each complete and exact.
fn check(path: &Path, acked: &[u64], in_flight: Option<u64>, case: &str) {
    if acked.is_empty() && !path.join("log").exists() {
        return;
    }
    let db = Db::open(path).unwrap_or_else(|e| panic!("{case}: reopen failed: {e}"));
    let steps = db.steps();
    let mut allowed = acked.to_vec();
    if steps.len() > acked.len() {
        allowed.extend(in_flight);
    }
    assert_eq!(steps, allowed, "{case}");
    for step in steps {
        let snap = db.snapshot(step).unwrap();
        assert_eq!(snap.len(), TENSORS, "{case}: step {step}");
        for i in 0..TENSORS {
            let t = snap.tensor(&key(i)).unwrap();
            assert_eq!(
                t.bytes().unwrap(),
                &tensor(step, i)[..],
                "{case}: {step}/{i}"
            );
        }
    }
}

/// Storage operations of the whole run without faults.
fn clean_ops() -> u64 {
    let tmp = crash_model::scratch_dir();
    let fs = FaultStorage::new(Fault::None);
    let (acked, _) = run(&tmp.path().join("run.ckpt"), &fs);
    assert_eq!(acked, [1, 2]);
    fs.ops()
}

#[test]
fn an_io_error_at_any_operation_poisons_and_reopen_recovers() {
    let total = clean_ops();
    // Open, two steps of three or more buffer writes, a record and a sync
    // each: the sweep covers writes issued by the log's background thread.
    assert!(total >= 10, "only {total} storage operations");
    for n in 1..=total {
        let case = format!("EIO at op {n}");
        let tmp = crash_model::scratch_dir();
        let path = tmp.path().join("run.ckpt");
        let fs = FaultStorage::new(Fault::Fail {
            at: n,
            error: IoFault::Eio,
            persistent: false,
        });
        let (acked, in_flight) = run(&path, &fs);
        assert!(fs.failed(), "{case}: the fault was not hit");
        assert!(
            in_flight.is_some() || acked.is_empty(),
            "{case}: nothing failed"
        );
        check(&path, &acked, in_flight, &case);
    }
}

#[test]
fn a_crash_at_any_operation_keeps_exactly_the_acknowledged_steps() {
    let total = clean_ops();
    for n in 1..=total {
        for seed in 0..2 {
            let case = format!("crash at op {n}, seed {seed}");
            let tmp = crash_model::scratch_dir();
            let path = tmp.path().join("run.ckpt");
            let fs = FaultStorage::new(Fault::Crash { at: n, seed });
            let (acked, in_flight) = run(&path, &fs);
            assert!(fs.crashed(), "{case}: the storage did not crash");
            check(&path, &acked, in_flight, &case);
        }
    }
}
