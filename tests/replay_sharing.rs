//! Pages shared by several snapshots are stored once; pages that fill while
//! a step transaction holds the writer are kept and recorded correctly.

mod replay_util;

use ckptdb::replay::ReplayOptions;
use ckptdb::Db;
use replay_util::*;

#[test]
fn unchanged_pages_are_referenced_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    // Pages of 100 rows of 46 bytes: 4600 bytes each.
    let opts = ReplayOptions::new(10_000, 100);
    let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
    push_range(&mut t, 0..5_050);
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut t).unwrap();
    let info = tx.commit().unwrap();
    // 50 full pages appended before the commit, and the partial page.
    assert_eq!(info.new_bytes, 5_050 * ROW_BYTES as u64);
    let before = db.disk_usage().unwrap();
    // Nothing pushed: the next step writes no page, and shares the partial.
    let mut tx = db.begin_step(2).unwrap();
    tx.put_replay(&mut t).unwrap();
    let info = tx.commit().unwrap();
    assert_eq!(info.new_bytes, 0);
    // Ten more rows: one more partial page (50 → 60 rows), no full page.
    push_range(&mut t, 5_050..5_060);
    let mut tx = db.begin_step(3).unwrap();
    tx.put_replay(&mut t).unwrap();
    let info = tx.commit().unwrap();
    assert_eq!(info.new_bytes, 60 * ROW_BYTES as u64);
    let grown = db.disk_usage().unwrap() - before;
    // Two commit records and one partial page, not a copy of 50 pages.
    assert!(grown < 50_000, "grew by {grown} bytes");

    for step in 1..=3 {
        let snap = db.snapshot(step).unwrap();
        assert!(snap.verify().is_empty());
        let v = snap.replay("buf").unwrap();
        let n = if step == 3 { 5_060 } else { 5_050 };
        let got: Vec<u64> = (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "step {step}");
    }
}

#[test]
fn pages_filled_while_a_transaction_is_open_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(200, 10);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        push_range(&mut t, 0..15);
        let mut tx = db.begin_step(1).unwrap();
        // The writer is held by `tx`: these pages cannot go to the log now.
        push_range(&mut t, 15..47);
        assert_eq!(which(&t.get(30).unwrap()), 30);
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        // Pushing again adopts the pages the commit wrote.
        push_range(&mut t, 47..60);
        let mut tx = db.begin_step(2).unwrap();
        push_range(&mut t, 60..75);
        tx.put_replay(&mut t).unwrap();
        // This one is abandoned: its pages must be written again.
        tx.abort().unwrap();
        let mut tx = db.begin_step(3).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        push_range(&mut t, 75..80);
        let got: Vec<u64> = (0..t.len()).map(|i| which(&t.get(i).unwrap())).collect();
        assert_eq!(got, (0..80).collect::<Vec<_>>());
    }
    let db = Db::open(&path).unwrap();
    for (step, n) in [(1, 47), (3, 75)] {
        let v = db.snapshot(step).unwrap().replay("buf").unwrap();
        let got: Vec<u64> = (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect();
        assert_eq!(got, (0..n).collect::<Vec<_>>(), "step {step}");
    }
}

#[test]
fn two_tables_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut a = db
        .replay_table("a", &cartpole(), ReplayOptions::new(50, 7))
        .unwrap();
    let mut b = db
        .replay_table("b", &cartpole(), ReplayOptions::new(30, 4).prioritized(0.6))
        .unwrap();
    push_range(&mut a, 0..77);
    push_range(&mut b, 100..133);
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut a).unwrap();
    tx.put_replay(&mut b).unwrap();
    tx.commit().unwrap();
    let s = db.latest().unwrap().unwrap();
    assert_eq!(s.replay_tables(), vec!["a".to_string(), "b".to_string()]);
    let va = s.replay("a").unwrap();
    let vb = s.replay("b").unwrap();
    assert_eq!(which(&va.get(0).unwrap()), 27);
    assert_eq!(which(&vb.get(0).unwrap()), 103);
    assert!(s.verify().is_empty());
}

#[test]
fn pushing_while_another_thread_commits_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(100, 8);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        push_range(&mut t, 0..5);
        let (began_tx, began_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let db = &db;
            s.spawn(move || {
                let mut tx = db.begin_step(1).unwrap();
                tx.put_blob("weights", &[1, 2, 3]).unwrap();
                began_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                tx.commit().unwrap();
            });
            began_rx.recv().unwrap();
            // The writer is held by the other thread's transaction: these
            // pages stay in memory, and nothing blocks.
            push_range(&mut t, 5..40);
            assert_eq!(which(&t.get(20).unwrap()), 20);
            done_tx.send(()).unwrap();
        });
        push_range(&mut t, 40..43);
        let mut tx = db.begin_step(2).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    let db = Db::open(&path).unwrap();
    let v = db.snapshot(2).unwrap().replay("buf").unwrap();
    let got: Vec<u64> = (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect();
    assert_eq!(got, (0..43).collect::<Vec<_>>());
    assert!(db.snapshot(1).unwrap().replay("buf").is_err());
}
