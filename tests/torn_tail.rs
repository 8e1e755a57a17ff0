//! A commit torn at any byte reopens as exactly the previous state or the
//! new one.

mod common;

use ckptdb::Db;
use common::{content, copy_db, dump};

#[test]
fn every_truncation_of_the_newest_commit_gives_old_or_new_state() {
    let dir = common::scratch_dir();
    let base = dir.path().join("base");
    let db = Db::open(&base).unwrap();
    for s in 1..=3u64 {
        let mut tx = db.begin_step(s).unwrap();
        tx.put_blob("a", &content(s, "a", 300)).unwrap();
        tx.put_blob("b", &content(s, "b", 700)).unwrap();
        tx.put_metric("m", s as f64).unwrap();
        tx.commit().unwrap();
    }
    let old_state = dump(&db);
    // The catalog as it was before the last commit: a crash before the last
    // commit's fsync leaves it there.
    let old_catalog = std::fs::read(base.join("index.redb")).unwrap();
    let seg = common::segments(&base).pop().unwrap();
    let start = std::fs::metadata(&seg).unwrap().len();
    let mut tx = db.begin_step_from(4, 3).unwrap();
    tx.put_blob("a", &content(4, "a", 300)).unwrap();
    tx.put_blob("c", &content(4, "c", 1500)).unwrap();
    tx.put_metric("m", 4.0).unwrap();
    tx.commit().unwrap();
    let new_state = dump(&db);
    drop(db);
    let end = std::fs::metadata(&seg).unwrap().len();
    assert!(end - start > 2000);
    let full = std::fs::read(&seg).unwrap();

    let mut saw_old = 0;
    let mut saw_new = 0;
    for cut in start..=end {
        let case = dir.path().join(format!("cut{cut}"));
        copy_db(&base, &case);
        std::fs::write(case.join("index.redb"), &old_catalog).unwrap();
        let seg_copy = case.join("log").join(seg.file_name().unwrap());
        std::fs::write(&seg_copy, &full[..cut as usize]).unwrap();

        // A reader never changes anything and sees one of the two states.
        let ro = Db::open_read_only(&case).unwrap();
        let seen = dump(&ro);
        assert!(
            seen == old_state || seen == new_state,
            "reader, cut at {cut}"
        );
        drop(ro);
        assert_eq!(std::fs::metadata(&seg_copy).unwrap().len(), cut);

        let db = Db::open(&case).unwrap();
        let seen = dump(&db);
        if cut == end {
            assert_eq!(seen, new_state);
        }
        if seen == old_state {
            saw_old += 1;
            // The torn bytes are gone and the next commit lands cleanly.
            assert_eq!(std::fs::metadata(&seg_copy).unwrap().len(), start);
            let mut tx = db.begin_step(4).unwrap();
            tx.put_blob("z", b"after").unwrap();
            tx.commit().unwrap();
            drop(db);
            let db = Db::open(&case).unwrap();
            assert_eq!(db.steps(), vec![1, 2, 3, 4]);
            assert_eq!(db.snapshot(4).unwrap().blob("z").unwrap(), b"after");
        } else {
            assert_eq!(seen, new_state, "cut at {cut}");
            saw_new += 1;
        }
        std::fs::remove_dir_all(&case).unwrap();
    }
    assert_eq!(saw_new, 1, "only the complete commit shows the new step");
    assert_eq!(saw_old as u64, end - start);
}
