//! Many steps and keys survive a reopen exactly.

mod common;

use ckptdb::{Db, DbOptions, Kind};
use common::{content, dump};

#[test]
fn many_steps_and_keys_roundtrip_across_reopen_and_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    // Small segments so the workload rolls many times.
    let opts = || DbOptions::default().segment_size(64 << 10);
    let before = {
        let db = Db::open_with(&path, opts()).unwrap();
        for step in (10..=400u64).step_by(10) {
            let mut tx = db.begin_step(step).unwrap();
            for k in 0..25 {
                let key = format!("layer{}/param{k}", k % 4);
                tx.put_blob(&key, &content(step, &key, 64 + k * 97))
                    .unwrap();
            }
            // A large entry, bigger than a segment, still fits in one.
            if step % 100 == 0 {
                tx.put_blob("big", &content(step, "big", 100 << 10))
                    .unwrap();
            }
            tx.put_value("config", &serde_json::json!({"lr": 0.001, "step": step}))
                .unwrap();
            tx.put_metric("loss", 1.0 / step as f64).unwrap();
            tx.commit().unwrap();
        }
        dump(&db)
    };
    assert_eq!(before.len(), 40);
    let s200 = &before[&200];
    assert_eq!(s200.entries.len(), 27);
    assert_eq!(s200.entries["big"].1, content(200, "big", 100 << 10));
    assert_eq!(
        s200.entries["layer1/param5"],
        (Kind::Blob, content(200, "layer1/param5", 64 + 5 * 97))
    );
    assert_eq!(s200.metrics["loss"], 1.0 / 200.0);
    assert!(
        common::segments(&path).len() > 10,
        "the workload must roll segments"
    );

    let db = Db::open_with(&path, opts()).unwrap();
    assert_eq!(dump(&db), before);
    let ro = Db::open_read_only(&path).unwrap();
    assert_eq!(dump(&ro), before);
    let cfg: serde_json::Value = db.snapshot(370).unwrap().value("config").unwrap();
    assert_eq!(cfg["step"], 370);
    assert_eq!(db.latest_step(), Some(400));
    assert_eq!(db.last_committed_step(), Some(400));
}

#[test]
fn empty_database_has_no_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.ckpt");
    let db = Db::open(&path).unwrap();
    assert!(db.steps().is_empty());
    assert!(db.latest().unwrap().is_none());
    drop(db);
    let ro = Db::open_read_only(&path).unwrap();
    assert!(ro.steps().is_empty());
    assert!(matches!(
        ro.snapshot(1),
        Err(ckptdb::Error::StepNotFound { step: 1 })
    ));
}
