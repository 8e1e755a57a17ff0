//! `verify` names a damaged replay entry by the key it is stored under:
//! a table's priorities are stored as `replay:<table>/priorities`, and both
//! `Db::verify_all` and `Snapshot::verify` report that key.

mod replay_util;

use ckptdb::replay::{ReplayOptions, SampleIndex};
use ckptdb::Db;
use replay_util::*;

/// Flips one byte inside the payload of the entry stored under `key` (the
/// priorities payload follows its key, its one-dimensional shape and at
/// most 7 bytes of padding, and is `4 × capacity` bytes long).
fn damage_payload_of(dir: &std::path::Path, key: &str) {
    let log = dir.join("log");
    let mut hit = 0;
    for ent in std::fs::read_dir(&log).unwrap() {
        let path = ent.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let Some(at) = bytes.windows(key.len()).position(|w| w == key.as_bytes()) else {
            continue;
        };
        bytes[at + key.len() + 8 + 8 + 100] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        hit += 1;
    }
    assert_eq!(hit, 1, "the entry {key:?} is stored exactly once");
}

#[test]
fn verify_names_damaged_priorities_by_their_stored_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let cap = 64u64;
    {
        let db = Db::open(&path).unwrap();
        let mut t = db
            .replay_table(
                "buf",
                &cartpole(),
                ReplayOptions::new(cap, 8).prioritized(0.6),
            )
            .unwrap();
        push_range(&mut t, 0..40);
        let indices: Vec<SampleIndex> = (0..40).map(|s| t.get_slot(s).unwrap().index()).collect();
        let prio: Vec<f64> = (0..40).map(|s| 1.0 + s as f64).collect();
        assert_eq!(t.update_priorities(&indices, &prio).unwrap(), 40);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    damage_payload_of(&path, "replay:buf/priorities");

    let db = Db::open_read_only(&path).unwrap();
    let report = db.verify_all(&mut |_, _| {}).unwrap();
    let keys: Vec<&str> = report.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["replay:buf/priorities"]);
    assert_eq!(report.problems[0].steps, [1]);

    let snap = db.snapshot(1).unwrap();
    let bad: Vec<String> = snap.verify().into_iter().map(|(i, _)| i.key).collect();
    assert_eq!(bad, ["replay:buf/priorities"]);
}
