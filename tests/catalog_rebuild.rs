//! Deleting or corrupting `index.redb` changes nothing the user can see.

mod common;

use ckptdb::Db;
use common::{content, dump};

fn build(path: &std::path::Path) -> Db {
    let db = Db::open(path).unwrap();
    for s in 1..=30u64 {
        let mut tx = db.begin_step_from_latest(s).unwrap();
        // "frozen" never changes (dedup); "w" changes every 3 steps.
        tx.put_blob("frozen", &content(0, "frozen", 5000)).unwrap();
        tx.put_blob("w", &content(s / 3, "w", 2000)).unwrap();
        tx.put_metric("loss", 10.0 - s as f64 / 10.0).unwrap();
        if s > 5 {
            tx.drop_step(s - 5).unwrap();
        }
        tx.commit().unwrap();
    }
    db
}

#[test]
fn deleted_catalog_is_rebuilt_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = build(&path);
    let before = dump(&db);
    let history = db.history("w").unwrap();
    let frozen_history = db.history("frozen").unwrap();
    drop(db);
    std::fs::remove_file(path.join("index.redb")).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(dump(&db), before);
    assert_eq!(db.steps(), vec![26, 27, 28, 29, 30]);
    assert_eq!(db.history("w").unwrap(), history);
    assert_eq!(history, vec![26, 27, 30]);
    assert_eq!(frozen_history, vec![26]);
    assert_eq!(db.history("frozen").unwrap(), frozen_history);
    // Dedup still works against the rebuilt catalog.
    let mut tx = db.begin_step(31).unwrap();
    tx.put_blob("frozen", &content(0, "frozen", 5000)).unwrap();
    let info = tx.commit().unwrap();
    assert_eq!(info.new_bytes, 0);
}

#[test]
fn corrupt_catalog_is_rebuilt_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let before = dump(&build(&path));
    let cat = path.join("index.redb");
    let len = std::fs::metadata(&cat).unwrap().len() as usize;
    std::fs::write(&cat, vec![0xA5u8; len]).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(dump(&db), before);
    assert_eq!(db.history("w").unwrap(), vec![26, 27, 30]);
}

#[test]
fn stale_catalog_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(build(&path));
    let stale = std::fs::read(path.join("index.redb")).unwrap();
    let db = Db::open(&path).unwrap();
    for s in 31..=40u64 {
        let mut tx = db.begin_step_from_latest(s).unwrap();
        tx.put_blob("w", &content(s, "w", 100)).unwrap();
        tx.drop_step(s - 5).unwrap();
        tx.commit().unwrap();
    }
    let before = dump(&db);
    drop(db);
    std::fs::write(path.join("index.redb"), stale).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(dump(&db), before);
    assert_eq!(db.history("w").unwrap(), vec![36, 37, 38, 39, 40]);
    assert_eq!(db.history("frozen").unwrap(), vec![36]);
}
