//! `ckptdb compact` reclaims the space of dropped steps and changes nothing
//! a reader can see.

mod common;

use ckptdb::{Db, DbOptions};
use common::{ckptdb, content, dump, json};

fn segment_bytes(path: &std::path::Path) -> u64 {
    common::segments(path)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn compact_reclaims_dropped_steps_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Db::open_with(&path, DbOptions::default().segment_size(64 << 10)).unwrap();
        for s in 1..=40u64 {
            let mut tx = db.begin_step(s).unwrap();
            tx.put_blob("w", &content(s, "w", 20_000)).unwrap();
            tx.put_blob("frozen", &content(0, "frozen", 10_000))
                .unwrap();
            tx.commit().unwrap();
        }
        // Keep only the last two steps: most segments hold nothing live.
        let mut tx = db.begin_step_from(41, 40).unwrap();
        for s in 1..=39 {
            tx.drop_step(s).unwrap();
        }
        tx.commit().unwrap();
    }
    let before = dump(&Db::open_read_only(&path).unwrap());
    let disk_before = segment_bytes(&path);

    let out = json(&["compact", path.to_str().unwrap()]);
    let after_bytes = out["bytes_after"].as_u64().unwrap();
    assert_eq!(out["bytes_before"].as_u64().unwrap(), disk_before);
    assert_eq!(after_bytes, segment_bytes(&path));
    assert!(out["segments_deleted"].as_u64().unwrap() >= 5, "{out}");
    // What is left is the live data plus less than two segments.
    let live = 20_000 * 2 + 10_000;
    assert!(
        after_bytes < live + 2 * (64 << 10),
        "{after_bytes} bytes left"
    );
    assert!(after_bytes * 4 < disk_before);

    let db = Db::open_read_only(&path).unwrap();
    assert_eq!(dump(&db), before);
    assert_eq!(db.steps(), vec![40, 41]);
    let verify = ckptdb(&["verify", path.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);

    // Human output names both sizes.
    let text = ckptdb(&["compact", path.to_str().unwrap()]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("->"), "{}", text.stdout);
}

#[test]
fn compact_refuses_a_locked_or_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("a", b"x").unwrap();
    tx.commit().unwrap();
    let r = ckptdb(&["compact", path.to_str().unwrap()]);
    common::assert_one_line_error(&r, 2, "locked");
    drop(db);
    let missing = dir.path().join("missing");
    let r = ckptdb(&["compact", missing.to_str().unwrap()]);
    common::assert_one_line_error(&r, 2, "not a ckptdb database");
    assert!(!missing.exists(), "compact must not create a database");
}
