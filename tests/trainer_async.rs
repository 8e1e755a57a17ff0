//! Asynchronous commits: the loop hands over an owned snapshot and goes on;
//! commits land in order, errors surface on the next call, and a crash while
//! a commit is in flight loses at most that commit.

mod switch_storage;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ckptdb::trainer::{CheckpointManager, CheckpointOptions, PendingStep};
use ckptdb::{Db, DbOptions, Error};
use ndarray::{Array1, Array2};
use switch_storage::{not_while_spawning, spawning_alone, Failing, SwitchStorage};

#[test]
fn async_commits_land_in_order_with_handover_contents() {
    let _serial = not_while_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let m = CheckpointManager::open(&path, CheckpointOptions::new().keep_last(5)).unwrap();
    let mut w = Array2::<f32>::zeros((64, 64));
    for step in 1..=20u64 {
        let mut p = PendingStep::new();
        p.put_tensor("w", &w).unwrap();
        p.put_tensor_owned("b", Array1::from_elem(16, step as i64))
            .unwrap();
        p.put_blob("rng", &step.to_le_bytes()).unwrap();
        p.put_value("meta", &serde_json::json!({ "step": step }))
            .unwrap();
        p.put_metric("loss", 1.0 / step as f64).unwrap();
        m.save_async(step, p).unwrap();
        assert!(m.in_flight().is_some_and(|s| s <= step));
        // The loop goes on changing its model while the commit runs.
        w += 1.0;
    }
    // Steps must keep increasing, also against the one in flight.
    assert!(!m.should_save(20));
    m.wait(20).unwrap();
    assert_eq!(m.in_flight(), None);
    assert!(matches!(
        m.save_async(7, PendingStep::new()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(m.wait(21), Err(Error::StepNotFound { step: 21 })));
    assert_eq!(m.db().steps(), (16..=20).collect::<Vec<_>>());
    for step in 16..=20u64 {
        let snap = m.restore(step).unwrap();
        let got = snap.tensor("w").unwrap().to_owned::<f32>().unwrap();
        assert!(got.iter().all(|&x| x == (step - 1) as f32), "step {step}");
        let b = snap.tensor("b").unwrap().to_owned::<i64>().unwrap();
        assert!(b.iter().all(|&x| x == step as i64));
        assert_eq!(snap.blob("rng").unwrap(), &step.to_le_bytes());
        let meta: serde_json::Value = snap.value("meta").unwrap();
        assert_eq!(meta["step"], step);
        assert_eq!(snap.metrics()["loss"], 1.0 / step as f64);
    }
    // Drop flushes: a last handed-over step is durable after the drop.
    let mut p = PendingStep::new();
    p.put_blob("x", &[1, 2, 3]).unwrap();
    // An owned array in column-major layout is stored row-major.
    let t = Array2::from_shape_vec((2, 3), vec![1u16, 2, 3, 4, 5, 6])
        .unwrap()
        .reversed_axes();
    p.put_tensor_owned("t", t).unwrap();
    assert!(matches!(
        p.put_tensor_raw("bad", ckptdb::DType::Bool, &[2], &[0, 2]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        p.put_tensor_raw("short", ckptdb::DType::F32, &[2], &[0; 4]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        p.put_blob("../escape", &[]),
        Err(Error::InvalidArgument(_))
    ));
    m.save_async(21, p).unwrap();
    drop(m);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.latest_step(), Some(21));
    let last = db.snapshot(21).unwrap();
    assert_eq!(last.blob("x").unwrap(), &[1, 2, 3]);
    let t = last.tensor("t").unwrap();
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(t.as_slice::<u16>().unwrap(), &[1, 4, 2, 5, 3, 6]);
}

fn pending(step: u64) -> PendingStep {
    let mut p = PendingStep::new();
    p.put_tensor_owned("w", Array1::from_elem(100_000, step as f32))
        .unwrap();
    p
}

#[test]
fn a_failed_async_commit_is_reported_by_the_next_call() {
    let _serial = not_while_spawning();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let storage = SwitchStorage::new();
    {
        let options = DbOptions::default().storage(Arc::new(storage.clone()));
        let db = Db::open_with(&path, options).unwrap();
        let m = CheckpointManager::new(Arc::new(db), CheckpointOptions::new());
        m.save_async(1, pending(1)).unwrap();
        m.flush().unwrap();
        storage.set(Failing::Writes);
        // Handed over; the write fails in the background.
        m.save_async(2, pending(2)).unwrap();
        // The next call reports it, and does not start its own commit.
        let err = m.save_async(3, pending(3)).unwrap_err();
        assert!(matches!(err, Error::Io { op: "write", .. }), "{err:?}");
        assert_eq!(m.in_flight(), None);
        // The writer is poisoned now: the next commit fails too, reported
        // by flush.
        m.save_async(3, pending(3)).unwrap();
        assert!(matches!(m.flush(), Err(Error::Poisoned { .. })));
        assert!(matches!(m.save(4, |_| Ok(())), Err(Error::Poisoned { .. })));
    }
    storage.set(Failing::Nothing);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![1]);
    let w = db
        .snapshot(1)
        .unwrap()
        .tensor("w")
        .unwrap()
        .to_owned::<f32>()
        .unwrap();
    assert!(w.iter().all(|&x| x == 1.0));
}

const CHILD_ENV: &str = "CKPTDB_TEST_ASYNC_CRASH";
const BIG: usize = 16 << 20; // f32 elements: 64 MiB

fn big(step: u64) -> Array1<f32> {
    Array1::from_iter((0..BIG).map(|i| (i as u64 ^ step) as f32))
}

/// The child: three durable steps, then a big one handed over and the
/// process killed (after `delay_ms`) while its commit runs — or, with no
/// delay given, right after `wait` said the step is durable.
fn child(path: &Path, delay_ms: Option<u64>) -> ! {
    let m = CheckpointManager::open(path, CheckpointOptions::new()).unwrap();
    for step in 1..=3u64 {
        m.save(step, |tx| {
            tx.put_tensor("w", &Array1::from_elem(1000, step as f32))
        })
        .unwrap();
    }
    let mut p = PendingStep::new();
    p.put_tensor_owned("w", big(4)).unwrap();
    m.save_async(4, p).unwrap();
    match delay_ms {
        Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
        None => m.wait(4).unwrap(),
    }
    std::process::abort();
}

#[test]
fn crash_during_async_commit_loses_at_most_that_commit() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (delay, path) = spec.split_once(':').unwrap();
        child(&PathBuf::from(path), delay.parse().ok());
    }
    let _alone = spawning_alone();
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for (i, delay_ms) in [Some(0u64), Some(20), None].into_iter().enumerate() {
        let path = dir.path().join(format!("run{i}.ckpt"));
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_during_async_commit_loses_at_most_that_commit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}:{}",
                    delay_ms.map_or("wait".into(), |d| d.to_string()),
                    path.display()
                ),
            )
            .status()
            .unwrap();
        assert!(!status.success(), "the child must die by abort");
        let db = Db::open(&path).unwrap();
        let steps = db.steps();
        assert!(
            steps == vec![1, 2, 3] || steps == vec![1, 2, 3, 4],
            "delay {delay_ms:?}: {steps:?}"
        );
        for step in 1..=3u64 {
            let w = db
                .snapshot(step)
                .unwrap()
                .tensor("w")
                .unwrap()
                .to_owned::<f32>()
                .unwrap();
            assert!(w.iter().all(|&x| x == step as f32));
        }
        if steps.len() == 4 {
            let snap = db.snapshot(4).unwrap();
            assert!(snap.verify().is_empty());
            let w = snap.tensor("w").unwrap();
            assert_eq!(w.as_slice::<f32>().unwrap(), big(4).as_slice().unwrap());
        }
        outcomes.push(steps.len());
    }
    eprintln!("steps surviving (abort after 0 ms, 20 ms, wait): {outcomes:?}");
    // Once `wait` returned, the step is durable.
    assert_eq!(outcomes.last(), Some(&4), "{outcomes:?}");
}
