//! Whole segment files lost or misnamed: a deleted middle segment, a
//! swapped pair of segment names, and a newest segment whose header names
//! a root in an older segment that was deleted. Every read gives the exact
//! bytes a step held or a typed error (`is_corruption()` where the log
//! names what is missing), and `ckptdb verify` exits 1.

#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};

use ckptdb::{Db, DbOptions, Error};
use common::{ckptdb, content};

const LEN: usize = 6000;

/// Steps 1 to 4, each writing a blob larger than the 4 KiB segment size,
/// so that every step's blob has a segment of its own; step k also shares
/// step 1's "const". Returns the segments, ascending.
fn four_steps(path: &Path) -> Vec<PathBuf> {
    let db = Db::open_with(path, DbOptions::default().segment_size(4096)).unwrap();
    for s in 1..=4u64 {
        let mut tx = if s == 1 {
            db.begin_step(s).unwrap()
        } else {
            db.begin_step_from(s, s - 1).unwrap()
        };
        if s == 1 {
            tx.put_blob("const", &content(0, "const", 100)).unwrap();
        }
        tx.put_blob("w", &content(s, "w", LEN)).unwrap();
        tx.put_metric("step", s as f64).unwrap();
        tx.commit().unwrap();
    }
    drop(db);
    common::segments(path)
}

/// The segment a step's "w" lives in.
fn w_segment(path: &Path, step: u64) -> PathBuf {
    let db = Db::open_read_only(path).unwrap();
    let at = db.snapshot(step).unwrap().entry("w").unwrap().location;
    path.join("log")
        .join(ckptdb::fuzzing::segment_file_name(at.segment))
}

/// A read of step `s`: the exact bytes, or a typed error.
fn read_exact_or_typed(db: &Db, s: u64) -> Result<(), Error> {
    let snap = db.snapshot(s)?;
    assert_eq!(snap.blob("w")?, &content(s, "w", LEN)[..], "step {s}");
    assert_eq!(snap.blob("const")?, &content(0, "const", 100)[..]);
    assert_eq!(snap.metrics()["step"], s as f64);
    Ok(())
}

fn assert_verify_fails(path: &Path) {
    let r = ckptdb(&[Path::new("verify"), path]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("CORRUPT: "), "{}", r.stdout);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn a_deleted_middle_segment_is_corruption_of_the_steps_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let segs = four_steps(&path);
    let gone = w_segment(&path, 2);
    assert!(gone != segs[0] && gone != *segs.last().unwrap(), "{segs:?}");
    std::fs::remove_file(&gone).unwrap();

    let db = Db::open_read_only(&path).unwrap();
    assert_eq!(db.steps(), vec![1, 2, 3, 4]);
    for s in [1, 3, 4] {
        read_exact_or_typed(&db, s).unwrap();
    }
    let e = read_exact_or_typed(&db, 2).unwrap_err();
    assert!(e.is_corruption(), "{e:?}");
    let report = db.verify_all(&mut |_, _| {}).unwrap();
    assert!(!report.is_clean());
    assert!(report.problems.iter().all(|p| p.error.is_corruption()));
    assert_verify_fails(&path);
}

#[test]
fn a_swapped_pair_of_segment_names_never_reads_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    four_steps(&path);
    let (a, b) = (w_segment(&path, 2), w_segment(&path, 3));
    assert_ne!(a, b);
    let tmp = path.join("log").join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();

    // Open may refuse (a typed error) or show the steps; a step reads
    // exactly or fails typed, and steps 2 and 3 cannot both read.
    match Db::open_read_only(&path) {
        Err(e) => assert!(e.is_corruption(), "{e:?}"),
        Ok(db) => {
            let mut good = 0;
            for s in db.steps() {
                match read_exact_or_typed(&db, s) {
                    Ok(()) => good += 1,
                    Err(e) => assert!(e.is_corruption(), "step {s}: {e:?}"),
                }
            }
            assert!(good < 4, "the swapped segments went unnoticed");
        }
    }
    assert_verify_fails(&path);
}

#[test]
fn a_newest_segment_naming_a_deleted_root_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let segs = four_steps(&path);
    // Find a segment whose header names a root and that holds no commit of
    // its own: keep it as the newest, and delete the segment of the root
    // it names.
    let mut chosen = None;
    for (i, seg) in segs.iter().enumerate() {
        let bytes = std::fs::read(seg).unwrap();
        let (_, prev) = ckptdb::fuzzing::decode_segment_header(&bytes[..64]).unwrap();
        let Some(prev) = prev else { continue };
        let mut off = 64usize;
        let mut has_commit = false;
        while off < bytes.len() {
            let h = ckptdb::fuzzing::decode_entry_header(&bytes[off..]).unwrap();
            has_commit |= h.kind == ckptdb::Kind::Commit;
            off += h.entry_size() as usize;
        }
        if !has_commit {
            chosen = Some((i, prev));
        }
    }
    let (i, prev) = chosen.unwrap_or_else(|| panic!("no segment without a commit in {segs:?}"));
    for seg in &segs[i + 1..] {
        std::fs::remove_file(seg).unwrap();
    }
    std::fs::remove_file(
        path.join("log")
            .join(ckptdb::fuzzing::segment_file_name(prev.segment)),
    )
    .unwrap();
    // Without the catalog, the log alone tells what is there.
    std::fs::remove_file(path.join("index.redb")).unwrap();

    match Db::open_read_only(&path) {
        Err(e) => {
            assert!(e.is_corruption(), "{e:?}");
            assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
            assert!(e.to_string().contains("the segment is missing"), "{e}");
        }
        Ok(db) => panic!("opened with steps {:?}", db.steps()),
    }
    let r = ckptdb(&[Path::new("ls"), &path]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert_verify_fails(&path);
}
