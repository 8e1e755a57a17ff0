//! Space reclamation never takes a page a replay table appended but has not
//! recorded in a step yet.

mod replay_util;

use ckptdb::replay::ReplayOptions;
use ckptdb::{Db, DbOptions};
use replay_util::*;

#[test]
fn compaction_keeps_pages_not_yet_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = || DbOptions::default().segment_size(64 << 10);
    {
        let db = Db::open_with(&path, opts()).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        tx.put_blob("old", &vec![7u8; 100_000]).unwrap();
        tx.commit().unwrap();
        // 100-row pages of 46 bytes: 4.6 KB each; 4000 rows span several
        // 64 KiB segments, none of them named by any root yet.
        let mut t = db
            .replay_table("buf", &cartpole(), ReplayOptions::new(10_000, 100))
            .unwrap();
        push_range(&mut t, 0..4_000);
        // A step that drops step 1, then a compaction that copies or
        // deletes everything it does not see as live.
        let mut tx = db.begin_step(2).unwrap();
        tx.put_blob("new", b"x").unwrap();
        tx.drop_step(1).unwrap();
        tx.commit().unwrap();
        let stats = db.compact_with(1.0).unwrap();
        assert!(stats.segments_deleted >= 1, "{stats:?}");
        // Now the table is recorded: every page must still be readable.
        push_range(&mut t, 4_000..4_050);
        let mut tx = db.begin_step(3).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        let got: Vec<u64> = (0..t.len()).map(|i| which(&t.get(i).unwrap())).collect();
        assert_eq!(got, (0..4_050).collect::<Vec<_>>());
        drop(t);
        // Once recorded, the pages are ordinary live entries: a later
        // compaction may move them, and they still read back.
        let mut tx = db.begin_step_from(4, 3).unwrap();
        tx.drop_step(2).unwrap();
        tx.commit().unwrap();
        db.compact_with(1.0).unwrap();
    }
    let db = Db::open_with(&path, opts()).unwrap();
    let snap = db.snapshot(4).unwrap();
    assert!(snap.verify().is_empty());
    let v = snap.replay("buf").unwrap();
    let got: Vec<u64> = (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect();
    assert_eq!(got, (0..4_050).collect::<Vec<_>>());
}

#[test]
fn compaction_keeps_pages_an_open_table_recorded_in_dropped_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = || DbOptions::default().segment_size(64 << 10);
    {
        let db = Db::open_with(&path, opts()).unwrap();
        let mut t = db
            .replay_table("buf", &cartpole(), ReplayOptions::new(10_000, 100))
            .unwrap();
        push_range(&mut t, 0..3_000);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        // Steps without the table drop step 1, the only one naming its
        // pages; nothing live references them any more, but the open table
        // will record them again.
        for s in 2..=6u64 {
            let mut tx = db.begin_step(s).unwrap();
            tx.put_blob("w", &vec![s as u8; 30_000]).unwrap();
            tx.drop_step(s - 1).unwrap();
            tx.commit().unwrap();
            db.compact_with(1.0).unwrap();
        }
        push_range(&mut t, 3_000..3_100);
        let mut tx = db.begin_step(7).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.drop_step(6).unwrap();
        tx.commit().unwrap();
        // Recorded again, the pages are live through step 7; more steps and
        // compactions move them, and the table keeps recording correctly.
        for s in 8..=10u64 {
            let mut tx = db.begin_step(s).unwrap();
            tx.put_blob("w", &vec![s as u8; 30_000]).unwrap();
            push_range(&mut t, 3_100 + (s - 8) * 10..3_110 + (s - 8) * 10);
            tx.put_replay(&mut t).unwrap();
            tx.drop_step(s - 1).unwrap();
            tx.commit().unwrap();
            db.compact_with(1.0).unwrap();
        }
        assert!(db.snapshot(10).unwrap().verify().is_empty());
    }
    let db = Db::open_with(&path, opts()).unwrap();
    assert_eq!(db.steps(), vec![10]);
    let snap = db.snapshot(10).unwrap();
    assert!(snap.verify().is_empty(), "{:?}", snap.verify());
    let v = snap.replay("buf").unwrap();
    let got: Vec<u64> = (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect();
    assert_eq!(got, (0..3_130).collect::<Vec<_>>());
}
