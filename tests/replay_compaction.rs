//! Space reclamation never takes a page a replay table appended but has not
//! recorded in a step yet.

mod replay_util;

use ckptdb::replay::{ReplayOptions, ReplayTable};
use ckptdb::{Db, DbOptions};
use replay_util::*;

/// The database at `path`, with segments of `segment` bytes so that pages
/// spread over many, which compaction deletes or copies forward.
fn open(path: &std::path::Path, segment: u64) -> Db {
    Db::open_with(path, DbOptions::default().segment_size(segment)).unwrap()
}

/// The table `buf` of CartPole rows, handing its full pages to the log
/// four at a time (outside any transaction, so they are pinned).
fn table(db: &Db, capacity: u64, page: u64) -> ReplayTable<'_> {
    let batch = 4 * page as usize * ROW_BYTES;
    let opts = ReplayOptions::new(capacity, page).write_batch(batch);
    db.replay_table("buf", &cartpole(), opts).unwrap()
}

/// Commits step `step` holding only the table.
fn record(db: &Db, t: &mut ReplayTable<'_>, step: u64) {
    let mut tx = db.begin_step(step).unwrap();
    tx.put_replay(t).unwrap();
    tx.commit().unwrap();
}

#[test]
fn compaction_keeps_pages_not_yet_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = open(&path, 64 << 10);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_blob("old", &vec![7u8; 100_000]).unwrap();
        tx.commit().unwrap();
        // 100-row pages of 46 bytes: 4.6 KB each; 4000 rows span several
        // 64 KiB segments, none of them named by any root yet.
        let mut t = table(&db, 10_000, 100);
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
        record(&db, &mut t, 3);
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
    assert_eq!(rows_after_reopen(&path, 4), (0..4_050).collect::<Vec<_>>());
}

#[test]
fn compaction_keeps_pages_an_open_table_recorded_in_dropped_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = open(&path, 64 << 10);
        let mut t = table(&db, 10_000, 100);
        push_range(&mut t, 0..3_000);
        record(&db, &mut t, 1);
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
    assert_eq!(Db::open(&path).unwrap().steps(), vec![10]);
    assert_eq!(rows_after_reopen(&path, 10), (0..3_130).collect::<Vec<_>>());
}

/// Reads every row of `step`'s table `buf` after a reopen.
fn rows_after_reopen(path: &std::path::Path, step: u64) -> Vec<u64> {
    let db = Db::open(path).unwrap();
    let snap = db.snapshot(step).unwrap();
    assert!(snap.verify().is_empty(), "{:?}", snap.verify());
    let v = snap.replay("buf").unwrap();
    (0..v.len()).map(|i| which(&v.get(i).unwrap())).collect()
}

#[test]
fn recorded_pages_whose_segment_was_reclaimed_are_written_again() {
    // A table records its pages, then a step without the table drops the
    // step that named them: the pages' segments are dead and compaction
    // deletes them, while the open table still holds the pages. Its next
    // record must not name the deleted bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = open(&path, 4096);
        let mut t = table(&db, 1_000, 10);
        push_range(&mut t, 0..200);
        record(&db, &mut t, 1);
        let mut tx = db.begin_step(2).unwrap();
        tx.put_blob("other", b"x").unwrap();
        tx.drop_step(1).unwrap();
        tx.commit().unwrap();
        // The open table pins its pages, so compaction keeps their
        // segments; should a page's segment be gone anyway (a table opened
        // while a transaction held the writer pins late), the next record
        // writes the page again. Either way the rows must read back.
        let before = log_bytes(&path);
        db.compact().unwrap();
        assert!(log_bytes(&path) <= before);
        push_range(&mut t, 200..205);
        record(&db, &mut t, 3);
        // Pushing goes on from the rewritten pages.
        push_range(&mut t, 205..230);
        let mut tx = db.begin_step_from(4, 3).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(rows_after_reopen(&path, 3), (0..205).collect::<Vec<_>>());
    assert_eq!(rows_after_reopen(&path, 4), (0..230).collect::<Vec<_>>());
}

fn log_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn recorded_pages_copied_forward_are_named_at_their_copy() {
    // Compaction copies recorded pages forward (their segments are sparse:
    // a dropped step's blob lies between them) and deletes the originals;
    // the open table's next record must name bytes that exist.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = open(&path, 4096);
        let mut t = table(&db, 1_000, 10);
        push_range(&mut t, 0..30);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_blob("pad", &vec![3u8; 1000]).unwrap();
        tx.commit().unwrap();
        push_range(&mut t, 30..200);
        let mut tx = db.begin_step(2).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.drop_step(1).unwrap();
        tx.commit().unwrap();
        let mut tx = db.begin_step_from(3, 2).unwrap();
        tx.put_blob("x", b"x").unwrap();
        tx.commit().unwrap();
        // Pinned pages are neither copied nor deleted; what compaction may
        // move are the entries of the steps alone.
        db.compact_with(1.0).unwrap();
        let before = log_bytes(&path);
        push_range(&mut t, 200..203);
        let mut tx = db.begin_step_from(4, 3).unwrap();
        tx.drop_step(2).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
        // The copies are shared by content, not written a third time.
        let grown = log_bytes(&path) - before;
        assert!(grown < 2_000, "the log grew by {grown} bytes");
    }
    assert_eq!(rows_after_reopen(&path, 4), (0..203).collect::<Vec<_>>());
}

#[test]
fn a_table_opened_during_a_transaction_survives_compaction_before_it_pins() {
    // Opened while a transaction holds the writer, the table cannot pin its
    // pages yet; the step that named them is dropped and compaction deletes
    // their segments. Its next record writes them again from its maps.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = open(&path, 4096);
        {
            let mut t = table(&db, 1_000, 10);
            push_range(&mut t, 0..200);
            record(&db, &mut t, 1);
        }
        let mut tx = db.begin_step(2).unwrap();
        let mut t = table(&db, 1_000, 10);
        tx.put_blob("other", b"x").unwrap();
        tx.drop_step(1).unwrap();
        tx.commit().unwrap();
        let stats = db.compact().unwrap();
        assert!(stats.segments_deleted >= 1, "{stats:?}");
        push_range(&mut t, 200..205);
        record(&db, &mut t, 3);
    }
    assert_eq!(rows_after_reopen(&path, 3), (0..205).collect::<Vec<_>>());
}
