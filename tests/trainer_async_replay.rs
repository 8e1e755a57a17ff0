//! An asynchronous save carries replay tables: the step holds exactly the
//! rows pushed before `save_async`, while the loop goes on pushing, and
//! retention with space reclamation between saves never takes a page the
//! next step names.

mod replay_util;

use std::sync::Arc;

use ckptdb::replay::ReplayOptions;
use ckptdb::trainer::{CheckpointManager, CheckpointOptions, PendingStep};
use ckptdb::{Db, DbOptions};
use replay_util::*;

fn rows_of(view: &ckptdb::replay::ReplayView) -> Vec<u64> {
    (0..view.len())
        .map(|i| which(&view.get(i).unwrap()))
        .collect()
}

#[test]
fn save_async_records_the_table_as_it_was_when_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    // Small segments and pages, one step kept: every save makes older
    // segments dead, and reclamation deletes them between saves.
    let db = Arc::new(Db::open_with(&path, DbOptions::default().segment_size(64 << 10)).unwrap());
    let manager = CheckpointManager::new(db.clone(), CheckpointOptions::new().keep_last(1));
    let opts = ReplayOptions::new(300, 16).write_batch(4096);
    let mut table = db.replay_table("buf", &cartpole(), opts).unwrap();
    let mut pushed = 0u64;
    for step in 1..=12u64 {
        let n = 37 * step; // not a multiple of the page: a partial page each time
        push_range(&mut table, pushed..pushed + n);
        pushed += n;
        let mut pending = PendingStep::new();
        pending.put_metric("rows", pushed as f64).unwrap();
        pending.put_replay(&mut table).unwrap();
        manager.save_async(step, pending).unwrap();
        // Pushed while the commit may be in flight: not part of `step`.
        push_range(&mut table, pushed..pushed + 5);
        pushed += 5;
        manager.flush().unwrap();
        let snap = db.snapshot(step).unwrap();
        let view = snap.replay("buf").unwrap();
        let end = pushed - 5;
        let start = end.saturating_sub(300);
        assert_eq!(view.total_inserted(), end, "step {step}");
        assert_eq!(
            rows_of(&view),
            (start..end).collect::<Vec<_>>(),
            "step {step}"
        );
    }
    assert_eq!(db.steps(), vec![12]);
    drop(table);
    drop(manager);
    drop(db);

    let db = Db::open(&path).unwrap();
    let report = db.verify_all(&mut |_, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let view = db.latest().unwrap().unwrap().replay("buf").unwrap();
    let end = pushed - 5;
    assert_eq!(rows_of(&view), (end - 300..end).collect::<Vec<_>>());
}

#[test]
fn a_table_of_another_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Db::open(dir.path().join("a.ckpt")).unwrap();
    let b = Arc::new(Db::open(dir.path().join("b.ckpt")).unwrap());
    let manager = CheckpointManager::new(b.clone(), CheckpointOptions::new());
    let mut table = a
        .replay_table("buf", &cartpole(), ReplayOptions::new(64, 8))
        .unwrap();
    push_range(&mut table, 0..20);
    let mut pending = PendingStep::new();
    pending.put_replay(&mut table).unwrap();
    manager.save_async(1, pending).unwrap();
    let err = manager.flush().unwrap_err();
    assert!(
        matches!(&err, ckptdb::Error::InvalidArgument(m) if m.contains("belongs to another database")),
        "{err}"
    );
    assert!(b.steps().is_empty());
}
