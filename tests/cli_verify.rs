//! `ckptdb verify` finds a flipped payload bit and a damaged entry header,
//! names the entry and its location, and exits 1.

#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};

use ckptdb::ndarray::Array1;
use ckptdb::{Db, DbOptions, Location};
use common::{assert_one_line_error, ckptdb, json};

fn segment_file(db: &Path, at: Location) -> PathBuf {
    db.join("log").join(format!("{:020}.seg", at.segment))
}

/// Offset of the payload of the entry at `at` with this key and rank: the
/// 64-byte fixed header, key and shape, rounded up to 64.
fn payload_offset(at: Location, key: &str, rank: usize) -> u64 {
    at.offset + (64 + key.len() as u64 + 8 * rank as u64).next_multiple_of(64)
}

fn flip(file: &Path, offset: u64, mask: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[offset as usize] ^= mask;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_flipped_payload_bit_fails_verify_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let (w_at, other_at) = {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        tx.put_tensor("w", &Array1::from_iter((0..1000).map(|i| i as f32)))
            .unwrap();
        tx.put_tensor("other", &Array1::from_iter((0..10).map(|i| -i as f64)))
            .unwrap();
        tx.commit().unwrap();
        // Step 2 shares "w" (dedup) and replaces "other".
        let mut tx = db.begin_step_from(2, 1).unwrap();
        tx.put_tensor("other", &Array1::from_iter((0..10).map(|i| i as f64)))
            .unwrap();
        tx.commit().unwrap();
        let s1 = db.snapshot(1).unwrap();
        let s2 = db.snapshot(2).unwrap();
        let w1 = s1.entry("w").unwrap();
        assert_eq!(s2.entry("w").unwrap().location, w1.location, "w is shared");
        (w1.location, s1.entry("other").unwrap().location)
    };
    assert_eq!(json(&[&"verify".into(), &path])["ok"], true);

    // One bit in the middle of w's 4000-byte payload.
    flip(
        &segment_file(&path, w_at),
        payload_offset(w_at, "w", 1) + 2001,
        0x10,
    );
    let r = ckptdb(&[&"verify".into(), &path, &"--json".into()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["entries"], 3);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["key"], "w");
    assert_eq!(problems[0]["steps"], serde_json::json!([1, 2]));
    assert_eq!(problems[0]["segment"], w_at.segment);
    assert_eq!(problems[0]["offset"], w_at.offset);
    assert!(problems[0]["error"]
        .as_str()
        .unwrap()
        .contains("checksum mismatch"));

    // The text form lists the entry with its location, and also exits 1.
    let r = ckptdb(&[&"verify".into(), &path]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .starts_with("CORRUPT: 2 of 2 steps damaged, 1 problem (3 entries, "),
        "{}",
        r.stdout
    );
    let row = r.stdout.lines().find(|l| l.starts_with("w ")).unwrap();
    assert!(
        row.contains(&format!("segment {} offset {}", w_at.segment, w_at.offset)),
        "{row}"
    );

    // Reading the damaged tensor fails with one line, not garbage.
    let r = ckptdb(&[&"stats".into(), &path, &"2".into(), &"w".into()]);
    assert_one_line_error(&r, 2, "checksum mismatch");

    // A damaged entry header (a bit of the key) in the middle of the log
    // breaks the entry chain: recovery would take it for a torn tail and
    // see no commit after it. verify reports the break and its location.
    flip(&segment_file(&path, other_at), other_at.offset + 64, 0x01);
    let r = ckptdb(&[&"verify".into(), &path, &"--json".into()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    let log = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "(log)")
        .unwrap_or_else(|| panic!("no log problem in {v}"));
    assert_eq!(log["segment"], other_at.segment);
    assert_eq!(log["offset"], other_at.offset);
    assert!(
        log["error"]
            .as_str()
            .unwrap()
            .contains("intact entries follow"),
        "{log}"
    );
}

#[test]
fn a_hole_in_the_last_unsynced_transaction_is_not_reported() {
    // A crash can persist a commit record but not an entry written before
    // it (pages reach the disk in any order until the sync). That is a torn
    // tail, which recovery drops; verify must not call it corruption.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let lost = {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        tx.put_tensor("a", &Array1::from_iter((0..100).map(|i| i as f32)))
            .unwrap();
        tx.commit().unwrap();
        let mut tx = db.begin_step(2).unwrap();
        tx.put_tensor("b", &Array1::from_iter((0..100).map(|i| -i as f32)))
            .unwrap();
        tx.commit().unwrap();
        let at = db.snapshot(2).unwrap().entry("b").unwrap().location;
        // The process dies instead of closing: a clean close would leave
        // the catalog's evidence that commit 2 was durable, and losing it
        // then is a lost commit, not a torn tail.
        std::mem::forget(db);
        at
    };
    let file = segment_file(&path, lost);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[lost.offset as usize..lost.offset as usize + 64].fill(0);
    std::fs::write(&file, bytes).unwrap();
    let v = json(&[&"verify".into(), &path]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"], 1, "the torn step 2 is not visible");
}

/// (offset, kind byte, payload offset, payload length) of every entry of a
/// segment, read from the documented header layout.
fn walk_entries(segment: &[u8]) -> Vec<(u64, u8, u64, u64)> {
    let mut out = Vec::new();
    let mut off = 64usize;
    while off + 64 <= segment.len() && &segment[off..off + 4] == b"CKPE" {
        let h = &segment[off..];
        let payload_len = u64::from_le_bytes(h[16..24].try_into().unwrap());
        let key_len = u16::from_le_bytes([h[28], h[29]]) as usize;
        let rank = h[30] as usize;
        let payload_at = off + (64 + key_len + 8 * rank).next_multiple_of(64);
        out.push((off as u64, h[6], payload_at as u64, payload_len));
        off = payload_at + (payload_len as usize).next_multiple_of(64);
    }
    out
}

#[test]
fn a_damaged_commit_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, options: DbOptions| {
        let path = dir.path().join(name);
        let db = Db::open_with(&path, options).unwrap();
        for step in [1u64, 2] {
            let mut tx = db.begin_step(step).unwrap();
            // Step 2's 6000 bytes do not fit in step 1's 4 KiB segment.
            let n = if step == 1 { 16 } else { 1500 };
            tx.put_tensor("x", &Array1::from_elem(n, step as f32))
                .unwrap();
            tx.commit().unwrap();
        }
        let segs: Vec<PathBuf> = [1u64, 2]
            .map(|s| segment_file(&path, db.snapshot(s).unwrap().entry("x").unwrap().location))
            .into();
        (path, segs)
    };

    // Step 1's commit record, in its own older segment, carries step 1's
    // manifest: verify reports that manifest; step 2 is still read.
    let (path, segs) = make("split.ckpt", DbOptions::default().segment_size(4096));
    assert_ne!(segs[0], segs[1]);
    let entries = walk_entries(&std::fs::read(&segs[0]).unwrap());
    assert_eq!(entries.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 6]);
    let (commit1, _, payload_at, len) = entries[1];
    flip(&segs[0], payload_at + len / 2, 0x40);
    let r = ckptdb(&[&"verify".into(), &path, &"--json".into()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["key"], "(manifest)");
    assert_eq!(problems[0]["steps"], serde_json::json!([1]));
    assert_eq!(problems[0]["offset"], commit1);
    assert_eq!(v["entries"], 1, "step 2's tensor is still checked");
    assert_eq!(json(&[&"show".into(), &path, &"2".into()])["step"], 2);
    assert_one_line_error(
        &ckptdb(&[&"show".into(), &path, &"1".into()]),
        2,
        "checksum mismatch",
    );

    // In one segment, recovery stops at the damaged record and sees no
    // commit after it; verify reports the break at the record.
    let (path, segs) = make("one.ckpt", DbOptions::default());
    assert_eq!(segs[0], segs[1]);
    let entries = walk_entries(&std::fs::read(&segs[0]).unwrap());
    assert_eq!(
        entries.iter().map(|e| e.1).collect::<Vec<_>>(),
        [1, 6, 1, 6]
    );
    let (commit1, _, payload_at, len) = entries[1];
    flip(&segs[0], payload_at + len / 2, 0x40);
    let r = ckptdb(&[&"verify".into(), &path, &"--json".into()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["problems"][0]["key"], "(log)", "{v}");
    assert_eq!(v["problems"][0]["offset"], commit1);
    assert!(v["problems"][0]["error"]
        .as_str()
        .unwrap()
        .contains("commit record fails its checksum"));
}
