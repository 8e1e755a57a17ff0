//! A flipped bit in a committed entry is detected, named, and never returned
//! as data.

mod common;

use ckptdb::{Db, Error};
use common::content;

#[test]
fn flipped_payload_bits_are_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    for k in ["w1", "w2", "w3"] {
        tx.put_blob(k, &content(1, k, 4096)).unwrap();
    }
    tx.put_tensor("t", &ndarray::Array1::<f32>::linspace(0., 1., 256))
        .unwrap();
    tx.commit().unwrap();
    drop(db);
    let entries: Vec<_> = Db::open_read_only(&path)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap()
        .entries()
        .collect();
    let seg = common::segments(&path).pop().unwrap();
    let clean = std::fs::read(&seg).unwrap();

    for e in &entries {
        // Payload starts at the first 64-byte boundary after the header.
        let header = 64 + e.key.len() as u64 + 8 * e.shape.len() as u64;
        let payload = e.location.offset + header.div_ceil(64) * 64;
        for bit in [0u64, 7, 8 * e.bytes / 2 + 3, 8 * e.bytes - 1] {
            let mut bytes = clean.clone();
            bytes[(payload + bit / 8) as usize] ^= 1 << (bit % 8);
            std::fs::write(&seg, &bytes).unwrap();
            let ro = Db::open_read_only(&path).unwrap();
            let snap = ro.latest().unwrap().unwrap();
            match snap.raw_bytes(&e.key) {
                Err(Error::ChecksumMismatch { key, offset, .. }) => {
                    assert_eq!(key, e.key);
                    assert_eq!(offset, e.location.offset);
                }
                other => panic!(
                    "{}: bit {bit} not detected: {:?}",
                    e.key,
                    other.map(|b| b.len())
                ),
            }
            // Other entries still read correctly.
            for o in entries.iter().filter(|o| o.key != e.key) {
                assert_eq!(crc32fast::hash(snap.raw_bytes(&o.key).unwrap()), o.crc32);
            }
            let bad = snap.verify();
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].0.key, e.key);
        }
    }
    std::fs::write(&seg, &clean).unwrap();
}

#[test]
fn flipped_header_bits_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("only", &content(1, "only", 1000)).unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_step(2).unwrap();
    tx.put_blob("other", b"x").unwrap();
    tx.commit().unwrap();
    drop(db);
    let e = Db::open_read_only(&path)
        .unwrap()
        .snapshot(1)
        .unwrap()
        .entry("only")
        .unwrap();
    let seg = common::segments(&path).pop().unwrap();
    let clean = std::fs::read(&seg).unwrap();
    let header_len = 64 + "only".len();
    for byte in 0..header_len {
        let mut bytes = clean.clone();
        bytes[e.location.offset as usize + byte] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let ro = Db::open_read_only(&path).unwrap();
        let snap = ro
            .snapshot(1)
            .unwrap_or_else(|e| panic!("byte {byte}: {e}"));
        let r = snap.blob("only");
        assert!(
            matches!(&r, Err(e) if e.is_corruption()),
            "header byte {byte}: {:?}",
            r.map(|b| b.len())
        );
    }
    std::fs::write(&seg, &clean).unwrap();
}
