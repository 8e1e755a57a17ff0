//! Bad input gets a typed error and leaves the database unchanged.

mod common;

use ckptdb::{Db, Error};
use common::dump;

fn db_with_steps(path: &std::path::Path) -> Db {
    let db = Db::open(path).unwrap();
    for s in [5u64, 10] {
        let mut tx = db.begin_step(s).unwrap();
        tx.put_blob("w", &[s as u8; 10]).unwrap();
        tx.commit().unwrap();
    }
    db
}

#[test]
fn non_monotonic_step_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = db_with_steps(&path);
    let before = dump(&db);
    for bad in [10u64, 9, 0] {
        assert!(
            matches!(db.begin_step(bad), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    // Also when the newest step was dropped by retention.
    let mut tx = db.begin_step(11).unwrap();
    tx.drop_step(10).unwrap();
    tx.put_blob("w", b"x").unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_step(12).unwrap();
    tx.drop_step(11).unwrap();
    tx.commit().unwrap();
    assert!(matches!(db.begin_step(11), Err(Error::InvalidArgument(_))));
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![5, 12]);
    assert_eq!(dump(&db)[&5], before[&5]);
    assert!(matches!(db.begin_step(12), Err(Error::InvalidArgument(_))));
}

#[test]
fn dropped_transaction_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = db_with_steps(&path);
    let before = dump(&db);
    let seg_len = |p: &std::path::Path| {
        common::segments(p)
            .iter()
            .map(|s| std::fs::metadata(s).unwrap().len())
            .sum::<u64>()
    };
    let len_before = seg_len(&path);
    {
        let mut tx = db.begin_step(20).unwrap();
        tx.put_blob("w", &[7; 100_000]).unwrap();
        tx.put_blob("v", &[8; 1000]).unwrap();
        // dropped here without commit
    }
    assert_eq!(seg_len(&path), len_before, "rollback must cut the log back");
    assert_eq!(db.steps(), vec![5, 10]);
    // The step number was not used up.
    let mut tx = db.begin_step(20).unwrap();
    tx.put_blob("w", b"real").unwrap();
    tx.commit().unwrap();
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![5, 10, 20]);
    assert_eq!(db.snapshot(20).unwrap().blob("w").unwrap(), b"real");
    assert_eq!(dump(&db)[&10], before[&10]);
    assert!(!db.snapshot(20).unwrap().contains("v"));
}

#[test]
fn foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A directory holding someone else's files.
    let other = dir.path().join("photos");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"meow").unwrap();
    assert!(matches!(Db::open(&other), Err(Error::NotADatabase { .. })));
    assert!(matches!(
        Db::open_read_only(&other),
        Err(Error::NotADatabase { .. })
    ));
    assert_eq!(std::fs::read(other.join("cat.jpg")).unwrap(), b"meow");
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        1,
        "nothing created"
    );

    // A plain file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(Db::open(&file), Err(Error::NotADatabase { .. })));

    // A missing path, read-only.
    assert!(matches!(
        Db::open_read_only(dir.path().join("missing")),
        Err(Error::NotADatabase { .. })
    ));
}

#[test]
fn stray_file_under_log_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(db_with_steps(&path));
    std::fs::write(path.join("log").join("notes.txt"), b"hello").unwrap();
    for r in [
        Db::open(&path).map(|_| ()),
        Db::open_read_only(&path).map(|_| ()),
    ] {
        match r {
            Err(Error::Corruption { path: p, .. }) => assert!(p.ends_with("notes.txt")),
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }
    std::fs::remove_file(path.join("log").join("notes.txt")).unwrap();
    assert_eq!(Db::open(&path).unwrap().steps(), vec![5, 10]);
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(db_with_steps(&path));
    // Rewrite the segment header with version 2 and a valid crc.
    let seg = common::segments(&path).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    for r in [
        Db::open(&path).map(|_| ()),
        Db::open_read_only(&path).map(|_| ()),
    ] {
        assert!(
            matches!(
                r,
                Err(Error::IncompatibleVersion {
                    found: 2,
                    supported: 1,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    // Nothing was changed by the refused opens.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = db_with_steps(&path);
    assert!(matches!(Db::open(&path), Err(Error::Locked { .. })));
    // Readers are welcome.
    assert_eq!(Db::open_read_only(&path).unwrap().steps(), vec![5, 10]);
    // A read-only handle cannot write.
    let ro = Db::open_read_only(&path).unwrap();
    assert!(matches!(ro.begin_step(11), Err(Error::ReadOnly)));
    drop(db);
    assert!(Db::open(&path).is_ok());
}
