//! The newest commit record is intact but an entry written just before it
//! never reached the disk (the disk reordered the writes and the machine
//! stopped before the sync): recovery falls back to the previous root.

mod common;

use ckptdb::{Db, Error};
use common::{content, dump};

struct Case {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    old_state: std::collections::BTreeMap<u64, common::StepDump>,
    old_catalog: Vec<u8>,
}

/// A database whose last commit's entry "lost" has zeroed payload bytes.
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    for s in 1..=2u64 {
        let mut tx = db.begin_step(s).unwrap();
        tx.put_blob("kept", &content(s, "kept", 3000)).unwrap();
        tx.commit().unwrap();
    }
    let old_state = dump(&db);
    let old_catalog = std::fs::read(path.join("index.redb")).unwrap();
    let mut tx = db.begin_step(3).unwrap();
    tx.put_blob("lost", &content(3, "lost", 5000)).unwrap();
    tx.commit().unwrap();
    let lost = db.snapshot(3).unwrap().entry("lost").unwrap();
    drop(db);
    let seg = common::segments(&path).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let payload = (lost.location.offset + 128) as usize;
    bytes[payload..payload + 4096].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    Case {
        _dir: dir,
        path,
        old_state,
        old_catalog,
    }
}

#[test]
fn newest_root_with_a_lost_entry_falls_back_to_the_previous_root() {
    let c = case();
    // The catalog as a crash before the sync leaves it.
    std::fs::write(c.path.join("index.redb"), &c.old_catalog).unwrap();
    let db = Db::open(&c.path).unwrap();
    assert_eq!(db.steps(), vec![1, 2]);
    assert_eq!(dump(&db), c.old_state);
    // The next commit reuses the step number and reads back intact.
    let mut tx = db.begin_step(3).unwrap();
    tx.put_blob("again", b"fine").unwrap();
    tx.commit().unwrap();
    drop(db);
    let db = Db::open(&c.path).unwrap();
    assert_eq!(db.steps(), vec![1, 2, 3]);
    assert_eq!(db.snapshot(3).unwrap().blob("again").unwrap(), b"fine");
    assert!(!db.snapshot(3).unwrap().contains("lost"));
}

#[test]
fn without_a_catalog_the_log_alone_decides() {
    let c = case();
    std::fs::remove_file(c.path.join("index.redb")).unwrap();
    let db = Db::open(&c.path).unwrap();
    assert_eq!(dump(&db), c.old_state);
}

#[test]
fn a_catalog_proving_the_commit_durable_refuses_to_cut_it_off() {
    let c = case();
    // The catalog saw commit 3 become durable: the log has since lost data.
    // The writer must not silently truncate an acknowledged commit.
    let seg = common::segments(&c.path).pop().unwrap();
    let before = std::fs::read(&seg).unwrap();
    match Db::open(&c.path) {
        Err(e @ Error::LostCommits { .. }) => {
            let Error::LostCommits { lost, .. } = &e else {
                unreachable!()
            };
            assert_eq!(lost.commits, 1);
            assert_eq!(lost.lost_steps, vec![3]);
            assert_eq!(lost.kept_step, Some(2));
            assert!(e.is_corruption());
            // Said in the user's terms: which step, and what each way
            // forward costs; no file offsets or root generations.
            let msg = e.to_string();
            assert!(
                msg.contains("1 durable commit is missing from the log: step 3 lost"),
                "{msg}"
            );
            assert!(
                msg.contains("restore the missing or damaged segment files"),
                "{msg}"
            );
            assert!(
                msg.contains("delete ")
                    && msg.contains(
                        "index.redb to accept the loss and continue from step 2 (3 gone for good)"
                    ),
                "{msg}"
            );
            assert!(
                !msg.contains("offset") && !msg.contains("generation"),
                "{msg}"
            );
        }
        other => panic!("expected lost commits, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing truncated");
    // A reader still shows what is readable, and reports the bad entry.
    let ro = Db::open_read_only(&c.path).unwrap();
    assert_eq!(ro.steps(), vec![1, 2, 3]);
    assert!(matches!(
        ro.snapshot(3).unwrap().blob("lost"),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(
        ro.snapshot(2).unwrap().blob("kept").unwrap(),
        &content(2, "kept", 3000)[..]
    );
}
