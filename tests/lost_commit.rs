//! A durable commit lost from the log (the newest segment cut back, its
//! commit record damaged, the segment deleted) is noticed by every reader,
//! not only by the writer: a read-only open reports it, `ckptdb verify`
//! exits 1 saying so, and steps a lost commit had dropped are not listed.

mod common;

use std::path::{Path, PathBuf};

use ckptdb::{Db, DbOptions, Error};
use common::{ckptdb, content};

/// Steps 1 and 2 in one segment; returns the segment and its length
/// before step 2's commit was appended (step 2 writes no entry, so its
/// commit record starts there).
fn two_steps(dir: &Path) -> (PathBuf, PathBuf, u64) {
    let path = dir.join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("w", &content(1, "w", 3000)).unwrap();
    tx.commit().unwrap();
    let seg = common::segments(&path).pop().unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    let mut tx = db.begin_step_from(2, 1).unwrap();
    tx.put_metric("loss", 0.5).unwrap();
    tx.commit().unwrap();
    drop(db);
    assert_eq!(common::segments(&path), vec![seg.clone()]);
    (path, seg, before)
}

/// What every reader must say about a log that lost the commit of step 2.
fn assert_step_2_lost(path: &Path) {
    let ro = Db::open_read_only(path).unwrap();
    assert_eq!(ro.steps(), vec![1], "the log holds step 1 only");
    let lost = ro
        .lost_commits()
        .expect("the read-only open reports the loss");
    assert_eq!(lost.commits, 1);
    assert_eq!(lost.lost_steps, vec![2]);
    assert_eq!(lost.kept_step, Some(1));
    assert_eq!(
        ro.snapshot(1).unwrap().blob("w").unwrap(),
        &content(1, "w", 3000)[..]
    );

    // verify: exit 1, and a plain sentence.
    let r = ckptdb(&[Path::new("verify"), path]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("CORRUPT: 0 of 1 steps damaged, 1 problem"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("1 durable commit is missing from the log: step 2 lost"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("continue from step 1"), "{}", r.stdout);
    let r = ckptdb(&[Path::new("verify"), path, Path::new("--json")]);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["key"], "(log)");
    assert_eq!(v["problems"][0]["steps"], serde_json::json!([2]));

    // Other read-only commands show the older state and warn.
    let r = ckptdb(&[Path::new("ls"), path]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("warning: 1 durable commit is missing"),
        "{}",
        r.stderr
    );

    // The writer refuses with the same sentence.
    match Db::open(path) {
        Err(e @ Error::LostCommits { .. }) => assert_eq!(e.to_string(), lost.explain(path)),
        other => panic!("expected lost commits, got {other:?}"),
    }
}

#[test]
fn a_cut_newest_commit_is_reported_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (path, seg, before) = two_steps(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(before).unwrap();
    assert_step_2_lost(&path);
}

#[test]
fn a_damaged_newest_commit_record_is_reported_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (path, seg, before) = two_steps(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let h = ckptdb::fuzzing::decode_entry_header(&bytes[before as usize..]).unwrap();
    assert_eq!(h.kind, ckptdb::Kind::Commit);
    bytes[(before + h.payload_offset()) as usize + 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    assert_step_2_lost(&path);
}

/// Steps 1 and 2 in segments of their own and step 3 after them; then
/// step 4 drops 1 and 2 and their space is reclaimed. Returns the segment
/// holding step 3's commit: the ones after it hold step 4 and the
/// reclamation.
fn dropped_and_reclaimed(path: &Path) -> PathBuf {
    let db = Db::open_with(path, DbOptions::default().segment_size(4096)).unwrap();
    for s in 1..=3u64 {
        let mut tx = db.begin_step(s).unwrap();
        let len = if s < 3 { 6000 } else { 100 };
        tx.put_blob("w", &content(s, "w", len)).unwrap();
        tx.commit().unwrap();
    }
    let before: Vec<PathBuf> = common::segments(path);
    let step_3_root = before.last().unwrap().clone();
    let mut tx = db.begin_step(4).unwrap();
    tx.put_blob("w", &content(4, "w", 6000)).unwrap();
    tx.drop_step(1).unwrap();
    tx.drop_step(2).unwrap();
    tx.commit().unwrap();
    db.compact_with(0.0).unwrap();
    drop(db);
    let after = common::segments(path);
    assert!(
        !after.contains(&before[0]),
        "step 1's segment is reclaimed: {after:?}"
    );
    assert!(after.contains(&step_3_root), "{after:?}");
    assert!(after.last().unwrap() > &step_3_root);
    step_3_root
}

/// Deletes the segments after `kept`.
fn delete_after(path: &Path, kept: &Path) {
    for seg in common::segments(path)
        .into_iter()
        .filter(|s| s.as_path() > kept)
    {
        std::fs::remove_file(seg).unwrap();
    }
}

#[test]
fn after_the_newest_segment_is_deleted_dropped_steps_stay_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let kept = dropped_and_reclaimed(&path);
    delete_after(&path, &kept);
    let ro = Db::open_read_only(&path).unwrap();
    // The root left names steps 1–3, but step 4 had dropped 1 and 2.
    assert_eq!(ro.steps(), vec![3]);
    assert_eq!(ro.lost_commits().unwrap().lost_steps, vec![4]);
    assert_eq!(
        ro.snapshot(3).unwrap().blob("w").unwrap(),
        &content(3, "w", 100)[..]
    );
    assert!(matches!(
        ro.snapshot(1),
        Err(Error::StepNotFound { step: 1 })
    ));
    let r = ckptdb(&[Path::new("verify"), &path]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let r = ckptdb(&[Path::new("ls"), &path, Path::new("--json")]);
    let v = r.json();
    // The rows, whether the document is the list or holds it.
    let rows = v.as_array().or_else(|| v["steps"].as_array()).unwrap();
    let steps: Vec<u64> = rows.iter().map(|s| s["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![3]);
}

#[test]
fn a_segment_the_live_root_names_that_is_missing_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let kept = dropped_and_reclaimed(&path);
    delete_after(&path, &kept);
    // Without the catalog's evidence, the root left lists step 1, whose
    // segment is gone: that is damage, not an I/O error.
    std::fs::remove_file(path.join("index.redb")).unwrap();
    let ro = Db::open_read_only(&path).unwrap();
    assert!(ro.lost_commits().is_none());
    assert_eq!(ro.steps(), vec![1, 2, 3]);
    let e = ro.snapshot(1).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
    assert!(e.is_corruption());
    assert!(
        e.to_string()
            .contains("the segment is missing, but the newest commit names it"),
        "{e}"
    );
    let report = ro.verify_all(&mut |_, _| {}).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.problems.iter().all(|p| p.error.is_corruption()),
        "{:?}",
        report.problems
    );
    let r = ckptdb(&[Path::new("verify"), &path]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
}
