//! Steps built from their parent write only what changed, keep complete
//! snapshots, and record key history.

mod common;

use ckptdb::Db;
use common::content;

const KEYS: usize = 20;
const LEN: usize = 32 << 10;

fn key(i: usize) -> String {
    format!("model/layer{:02}/weight", i)
}

#[test]
fn ten_percent_changed_writes_at_most_eleven_percent() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    for i in 0..KEYS {
        tx.put_blob(&key(i), &content(1, &key(i), LEN)).unwrap();
    }
    let full = tx.commit().unwrap();
    assert_eq!(full.new_bytes, (KEYS * LEN) as u64);

    // From the parent: only 2 of 20 tensors are put.
    let mut tx = db.begin_step_from(2, 1).unwrap();
    for i in [3, 11] {
        tx.put_blob(&key(i), &content(2, &key(i), LEN)).unwrap();
    }
    let inc = tx.commit().unwrap();
    assert_eq!(inc.logical_bytes, full.logical_bytes);
    assert!(
        inc.new_bytes * 100 <= full.new_bytes * 11,
        "{} of {}",
        inc.new_bytes,
        full.new_bytes
    );

    // Without a parent, re-putting everything still writes only the change
    // (content dedup).
    let mut tx = db.begin_step(3).unwrap();
    for i in 0..KEYS {
        let src = if i == 5 || i == 6 {
            3
        } else if i == 3 || i == 11 {
            2
        } else {
            1
        };
        tx.put_blob(&key(i), &content(src, &key(i), LEN)).unwrap();
    }
    let dedup = tx.commit().unwrap();
    assert_eq!(dedup.new_bytes, 2 * LEN as u64);

    // Every snapshot is complete.
    let s2 = db.snapshot(2).unwrap();
    assert_eq!(s2.len(), KEYS);
    for i in 0..KEYS {
        let src = if i == 3 || i == 11 { 2 } else { 1 };
        assert_eq!(s2.blob(&key(i)).unwrap(), &content(src, &key(i), LEN)[..]);
    }
    assert_eq!(db.history(&key(3)).unwrap(), vec![1, 2]);
    assert_eq!(db.history(&key(5)).unwrap(), vec![1, 3]);
    assert_eq!(db.history(&key(0)).unwrap(), vec![1]);
    assert!(matches!(
        db.history("never/there"),
        Err(ckptdb::Error::NotFound { .. })
    ));
}

#[test]
fn remove_prefixes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(10).unwrap();
    for k in [
        "policy/agent_0/w",
        "policy/agent_1/w",
        "policy/agent_1/b",
        "policy/agent_10/w",
        "optim/m",
    ] {
        tx.put_blob(k, k.as_bytes()).unwrap();
    }
    tx.put_metric("eval_return", 12.5).unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_step_from_latest(20).unwrap();
    assert!(tx.remove("optim/m"));
    assert!(!tx.remove("optim/m"));
    tx.put_blob("policy/agent_0/w", b"changed").unwrap();
    tx.commit().unwrap();
    drop(db);

    let db = Db::open_read_only(&path).unwrap();
    let s20 = db.snapshot(20).unwrap();
    assert!(!s20.contains("optim/m"));
    assert!(db.snapshot(10).unwrap().contains("optim/m"));
    assert_eq!(
        s20.keys_with_prefix("policy/agent_1/").collect::<Vec<_>>(),
        vec!["policy/agent_1/b", "policy/agent_1/w"]
    );
    assert_eq!(s20.keys().count(), 4);
    assert_eq!(s20.blob("policy/agent_0/w").unwrap(), b"changed");
    assert!(
        s20.metrics().is_empty(),
        "metrics are per step, not inherited"
    );
    assert_eq!(db.snapshot(10).unwrap().metrics()["eval_return"], 12.5);
    assert_eq!(db.history("policy/agent_0/w").unwrap(), vec![10, 20]);
    assert_eq!(db.history("policy/agent_1/w").unwrap(), vec![10]);
    assert_eq!(db.history("optim/m").unwrap(), vec![10]);

    let infos = db.step_infos();
    assert_eq!(
        infos.iter().map(|i| i.step).collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(infos[1].new_bytes, 7);
    assert_eq!(infos[1].logical_bytes, s20.logical_bytes());
    assert_eq!(s20.new_bytes(), 7);
    let age = std::time::SystemTime::now()
        .duration_since(s20.time())
        .unwrap();
    assert!(age.as_secs() < 600);
}
