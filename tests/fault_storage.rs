//! The fault-injecting storage itself: what a crash keeps, tears, drops and
//! makes vanish, and how failures are counted.

use std::collections::BTreeSet;

use ckptdb::storage::fault::{Fault, FaultStorage, IoFault};
use ckptdb::storage::Storage;

#[test]
fn synced_bytes_survive_and_unsynced_writes_vary_by_seed() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = dir.join("f");
        let fs = FaultStorage::new(Fault::None);
        let f = fs.create_new(&p).unwrap();
        f.write_at(0, b"durable!").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_at(8, b"AAAA").unwrap();
        f.write_at(12, b"BBBB").unwrap();
        fs.crash(seed).unwrap();
        let got = std::fs::read(&p).unwrap();
        assert_eq!(&got[..8], b"durable!", "seed {seed}");
        assert!(got.len() <= 16);
        // Whatever landed of the unsynced writes is at its place (torn
        // writes may garble bytes, but never move them).
        outcomes.insert(got[8..].to_vec());
        // After the crash every operation fails.
        assert!(f.write_at(0, b"x").is_err());
        assert!(f.sync_data().is_err());
        assert!(fs.create_new(&dir.join("g")).is_err());
    }
    // Kept, dropped and torn all happen across seeds.
    assert!(outcomes.contains(&b"AAAABBBB"[..]));
    assert!(outcomes.contains(&[][..]));
    assert!(outcomes.len() > 4, "{outcomes:?}");
}

#[test]
fn later_write_may_land_without_an_earlier_one() {
    // Reordering: the second write survives while the first is lost.
    let mut hole = false;
    for seed in 0..64 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let fs = FaultStorage::new(Fault::None);
        let f = fs.create_new(&p).unwrap();
        fs.sync_dir(tmp.path()).unwrap();
        f.write_at(0, b"first").unwrap();
        f.write_at(5, b"second").unwrap();
        fs.crash(seed).unwrap();
        let got = std::fs::read(&p).unwrap();
        if got == b"\0\0\0\0\0second" {
            hole = true;
        }
    }
    assert!(hole);
}

#[test]
fn created_file_without_dir_sync_may_vanish() {
    let mut vanished = 0;
    let mut kept = 0;
    for seed in 0..32 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let fs = FaultStorage::new(Fault::None);
        let f = fs.create_new(&p).unwrap();
        f.write_at(0, b"data").unwrap();
        f.sync_data().unwrap();
        fs.crash(seed).unwrap();
        if p.exists() {
            assert_eq!(std::fs::read(&p).unwrap(), b"data");
            kept += 1;
        } else {
            vanished += 1;
        }
        // With the directory synced it never vanishes.
        let q = tmp.path().join("q");
        let fs = FaultStorage::new(Fault::None);
        let f = fs.create_new(&q).unwrap();
        f.write_at(0, b"data").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(tmp.path()).unwrap();
        fs.crash(seed).unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b"data");
    }
    assert!(vanished > 0 && kept > 0);
}

#[test]
fn unsynced_truncation_may_be_lost() {
    let mut lost = false;
    let mut applied = false;
    for seed in 0..32 {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"committed+tail").unwrap();
        let fs = FaultStorage::new(Fault::None);
        let f = fs.open(&p).unwrap();
        f.set_len(9).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"committed");
        fs.crash(seed).unwrap();
        match std::fs::read(&p).unwrap().as_slice() {
            b"committed" => applied = true,
            b"committed+tail" => lost = true,
            other => panic!("{other:?}"),
        }
    }
    assert!(lost && applied);
}

#[test]
fn failures_are_counted_once_or_persistently() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new(Fault::Fail {
        at: 3,
        error: IoFault::Enospc,
        persistent: false,
    });
    let f = fs.create_new(&tmp.path().join("f")).unwrap(); // op 1
    f.write_at(0, b"a").unwrap(); // op 2
    let e = f.write_at(1, b"b").unwrap_err(); // op 3
    assert_eq!(e.raw_os_error(), Some(28));
    f.write_at(1, b"c").unwrap(); // op 4
    assert_eq!(fs.ops(), 4);
    assert!(fs.failed() && !fs.crashed());

    let fs = FaultStorage::new(Fault::Fail {
        at: 2,
        error: IoFault::Eio,
        persistent: true,
    });
    let f = fs.create_new(&tmp.path().join("g")).unwrap();
    for _ in 0..3 {
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
    }
}

#[test]
fn crash_at_an_operation_leaves_that_write_unsynced() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("f");
    // op 1 create, op 2 sync_dir, op 3 write, op 4 sync, op 5 write (crash).
    let fs = FaultStorage::new(Fault::Crash { at: 5, seed: 1 });
    let f = fs.create_new(&p).unwrap();
    fs.sync_dir(tmp.path()).unwrap();
    f.write_at(0, b"kept").unwrap();
    f.sync_data().unwrap();
    assert!(f.write_at(4, b"maybe").is_err());
    assert!(fs.crashed());
    let got = std::fs::read(&p).unwrap();
    assert_eq!(&got[..4], b"kept");
    assert!(got.len() <= 9);
}
