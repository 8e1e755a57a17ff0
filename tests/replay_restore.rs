//! Replay tables survive commits, reopening, and restoring older steps:
//! exactly the transitions present at a step come back.

mod replay_util;

use ckptdb::replay::ReplayOptions;
use ckptdb::Db;
use replay_util::*;

fn contents_of(len: u64, get: impl Fn(u64) -> u64) -> Vec<u64> {
    (0..len).map(get).collect()
}

#[test]
fn push_past_capacity_commit_reopen_keeps_last_capacity_rows_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    // 100 slots in pages of 16: the last page is short (4 rows).
    let opts = ReplayOptions::new(100, 16);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        assert_eq!(cartpole().row_size(), ROW_BYTES);
        push_range(&mut t, 0..257);
        assert_eq!(t.len(), 100);
        assert_eq!(t.total_inserted(), 257);
        let live = contents_of(t.len(), |i| which(&t.get(i).unwrap()));
        assert_eq!(live, (157..257).collect::<Vec<_>>());
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    let db = Db::open(&path).unwrap();
    let t = db.replay_table("buf", &cartpole(), opts).unwrap();
    assert_eq!(t.len(), 100);
    assert_eq!(t.capacity(), 100);
    assert_eq!(t.total_inserted(), 257);
    let got = contents_of(t.len(), |i| which(&t.get(i).unwrap()));
    assert_eq!(got, (157..257).collect::<Vec<_>>());
    // Slots: transition 256 went to slot 56.
    assert_eq!(which(&t.get_slot(56).unwrap()), 256);
    assert_eq!(t.get_slot(56).unwrap().index().serial, 256);
    assert!(t.get(100).is_err());

    // A read-only process sees the same.
    let ro = Db::open_read_only(&path).unwrap();
    let view = ro.latest().unwrap().unwrap().replay("buf").unwrap();
    let got = contents_of(view.len(), |i| which(&view.get(i).unwrap()));
    assert_eq!(got, (157..257).collect::<Vec<_>>());
}

#[test]
fn restoring_an_older_step_gives_what_the_table_held_then() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(64, 8);
    let db = Db::open(&path).unwrap();
    let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
    // Step boundaries at a partial page, a full page, and after wrapping.
    let marks = [(1, 13u64), (2, 40), (3, 64), (4, 101), (5, 150)];
    let mut done = 0;
    for &(step, upto) in &marks {
        push_range(&mut t, done..upto);
        done = upto;
        let mut tx = db.begin_step(step).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    // Pushed after the last commit: must not leak into any step.
    push_range(&mut t, 150..170);
    for &(step, upto) in &marks {
        let snap = db.snapshot(step).unwrap();
        let v = snap.replay("buf").unwrap();
        let start = upto.saturating_sub(64);
        assert_eq!(v.total_inserted(), upto, "step {step}");
        let got = contents_of(v.len(), |i| which(&v.get(i).unwrap()));
        assert_eq!(got, (start..upto).collect::<Vec<_>>(), "step {step}");
        // A writable table reopened at that step holds the same and goes on.
        let mut w = db.replay_table_at("buf", &cartpole(), opts, step).unwrap();
        let got = contents_of(w.len(), |i| which(&w.get(i).unwrap()));
        assert_eq!(got, (start..upto).collect::<Vec<_>>(), "step {step}");
        push(&mut w, 1000);
        assert_eq!(which(&w.get(w.len() - 1).unwrap()), 1000);
    }
    drop(t);
    drop(db);
    // After a reopen every step still restores exactly.
    let db = Db::open(&path).unwrap();
    for &(step, upto) in &marks {
        let v = db.snapshot(step).unwrap().replay("buf").unwrap();
        let start = upto.saturating_sub(64);
        let got = contents_of(v.len(), |i| which(&v.get(i).unwrap()));
        assert_eq!(got, (start..upto).collect::<Vec<_>>(), "step {step}");
    }
    // The newest step is what `replay_table` reopens.
    let t = db.replay_table("buf", &cartpole(), opts).unwrap();
    assert_eq!(t.total_inserted(), 150);
}

#[test]
fn uncommitted_pages_vanish_after_a_crash_and_committed_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(1000, 10);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        push_range(&mut t, 0..55);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        // Full pages appended to the log, never committed.
        push_range(&mut t, 55..300);
        // A transaction that is abandoned.
        let mut tx = db.begin_step(2).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.abort().unwrap();
        push_range(&mut t, 300..320);
        assert_eq!(which(&t.get(319).unwrap()), 319);
    }
    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![1]);
    let t = db.replay_table("buf", &cartpole(), opts).unwrap();
    let got = contents_of(t.len(), |i| which(&t.get(i).unwrap()));
    assert_eq!(got, (0..55).collect::<Vec<_>>());
}

#[test]
fn begin_step_from_inherits_and_remove_replay_drops() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let opts = ReplayOptions::new(32, 8);
    let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
    push_range(&mut t, 0..20);
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut t).unwrap();
    tx.commit().unwrap();
    push_range(&mut t, 20..30);
    // Not recorded again: step 2 repeats step 1's table.
    let tx = db.begin_step_from(2, 1).unwrap();
    tx.commit().unwrap();
    assert_eq!(db.snapshot(2).unwrap().replay("buf").unwrap().len(), 20);
    let mut tx = db.begin_step_from(3, 2).unwrap();
    assert!(tx.remove_replay("buf"));
    tx.commit().unwrap();
    assert!(db.snapshot(3).unwrap().replay("buf").is_err());
    assert_eq!(
        db.snapshot(1).unwrap().replay_tables(),
        vec!["buf".to_string()]
    );
}
