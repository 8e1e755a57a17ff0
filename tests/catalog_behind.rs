//! A commit returns before the catalog has applied it; every use of the
//! catalog after the commit still sees the commit: dedup at the very next
//! put, history at once, and a writer reopened at once finds the catalog
//! closed and current (not rebuilt).

mod common;

use std::os::unix::fs::MetadataExt;

use ckptdb::Db;
use common::content;

/// Enough small entries that the catalog's apply outlasts the commit.
const KEYS: u64 = 3000;

fn key(i: u64) -> String {
    format!("layer{i:05}/w")
}

#[test]
fn every_use_of_the_catalog_after_a_commit_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    for i in 0..KEYS {
        tx.put_blob(&key(i), &content(i, "w", 512)).unwrap();
    }
    let first = tx.commit().unwrap();
    assert_eq!(first.new_bytes, KEYS * 512);

    // History straight after the commit names it.
    assert_eq!(db.history(&key(7)).unwrap(), vec![1]);

    // The next step's puts find every payload of step 1 through the
    // catalog: only the one changed key is written.
    let mut tx = db.begin_step(2).unwrap();
    tx.put_blob(&key(0), &content(KEYS, "changed", 512))
        .unwrap();
    for i in 1..KEYS {
        tx.put_blob(&key(i), &content(i, "w", 512)).unwrap();
    }
    let second = tx.commit().unwrap();
    assert_eq!(second.new_bytes, 512);
    assert_eq!(second.logical_bytes, KEYS * 512);

    // Closing waits for the last apply (of all the step's rows, which takes
    // longer than the commit's fsync): once the handle is gone nothing
    // holds the catalog's file lock any more, and reopened at once the
    // writer opens the same file (a rebuild would replace it), current.
    let catalog = path.join("index.redb");
    let inode = std::fs::metadata(&catalog).unwrap().ino();
    drop(db);
    let file = std::fs::File::open(&catalog).unwrap();
    file.try_lock()
        .expect("the catalog is still open after its Db was dropped");
    drop(file);
    let db = Db::open(&path).unwrap();
    assert_eq!(std::fs::metadata(&catalog).unwrap().ino(), inode);
    // History names the steps where a key's bytes changed.
    assert_eq!(db.history(&key(0)).unwrap(), vec![1, 2]);
    assert_eq!(db.history(&key(KEYS - 1)).unwrap(), vec![1]);
    let mut tx = db.begin_step(3).unwrap();
    tx.put_blob(&key(0), &content(KEYS, "changed", 512))
        .unwrap();
    assert_eq!(tx.commit().unwrap().new_bytes, 0);
    assert_eq!(db.steps(), vec![1, 2, 3]);
}
