//! Corruption sweeps: damage a database byte by byte — every byte of every
//! entry header and segment header, a sample of payload bytes (commit
//! records included), truncation at every entry boundary and at other
//! offsets — then open it read-only and as the writer and read everything.
//! Every read must return the exact bytes that step held, or a typed error;
//! a step that shows up must be one that was committed, and the set of live
//! steps must be the one of some committed root (a damaged root may send
//! recovery back to an older one). Never a panic, never a SIGBUS.

mod crash_model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckptdb::{Db, DbOptions, Error, Kind, Location};
use crash_model::{copy_dir, run_until_failure, scratch_dir, workload, Model, StepModel};

/// What a clean database holds, and every state it went through.
struct Fixture {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    /// Content of every step ever committed.
    steps: BTreeMap<u64, StepModel>,
    /// The live sets of every root, oldest first (empty set included).
    live_sets: Vec<Vec<u64>>,
    /// The entries of each segment: (offset, header length, entry size, kind).
    entries: BTreeMap<u64, Vec<(u64, usize, u64, Kind)>>,
}

fn fixture() -> Fixture {
    let tmp = scratch_dir();
    let path = tmp.path().join("run.ckpt");
    let actions = workload(8);
    let db = Db::open_with(&path, DbOptions::default().segment_size(4096)).unwrap();
    let (_, _, failure) = run_until_failure(&db, &actions);
    assert!(failure.is_none());
    drop(db);
    let mut steps = BTreeMap::new();
    let mut live_sets = vec![Vec::new()];
    let mut m = Model::default();
    for a in &actions {
        let next = a.apply(&m);
        if next != m {
            live_sets.push(next.steps.keys().copied().collect());
            for (s, v) in &next.steps {
                steps.insert(*s, v.clone());
            }
        }
        m = next;
    }
    let mut entries = BTreeMap::new();
    for ent in std::fs::read_dir(path.join("log")).unwrap() {
        let ent = ent.unwrap();
        let id: u64 = ent.file_name().to_str().unwrap()[..20].parse().unwrap();
        let bytes = std::fs::read(ent.path()).unwrap();
        let mut off = 64u64;
        let mut list = Vec::new();
        while (off as usize) < bytes.len() {
            let h = ckptdb::fuzzing::decode_entry_header(&bytes[off as usize..]).unwrap();
            list.push((off, h.header_len(), h.entry_size(), h.kind));
            off += h.entry_size();
        }
        assert_eq!(off as usize, bytes.len());
        entries.insert(id, list);
    }
    assert!(entries.len() >= 3, "want several segments");
    Fixture {
        _tmp: tmp,
        path,
        steps,
        live_sets,
        entries,
    }
}

fn seg_path(db: &Path, id: u64) -> PathBuf {
    db.join("log").join(ckptdb::fuzzing::segment_file_name(id))
}

fn typed(e: &Error) -> bool {
    e.is_corruption()
        || matches!(
            e,
            Error::Io { .. } | Error::IncompatibleVersion { .. } | Error::NotADatabase { .. }
        )
}

/// Reads everything `db` shows and checks it against the fixture. Returns
/// the locations `verify` reported as bad.
fn check_db(f: &Fixture, db: &Db, case: &str) -> Vec<Location> {
    let live = db.steps();
    assert!(
        f.live_sets.contains(&live),
        "{case}: live steps {live:?} are not those of any committed root"
    );
    let mut bad = Vec::new();
    for s in live {
        let want = f
            .steps
            .get(&s)
            .unwrap_or_else(|| panic!("{case}: step {s} was never committed"));
        let snap = match db.snapshot(s) {
            Ok(snap) => snap,
            Err(e) => {
                assert!(typed(&e), "{case}: snapshot {s}: untyped error {e}");
                continue;
            }
        };
        let keys: Vec<&str> = snap.keys().collect();
        let want_keys: Vec<&str> = want.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, want_keys, "{case}: keys of step {s}");
        assert_eq!(snap.metrics(), &want.metrics, "{case}: metrics of step {s}");
        for (k, v) in &want.entries {
            match snap.raw_bytes(k) {
                Ok(b) => assert_eq!(b, &v.bytes[..], "{case}: WRONG BYTES for {s}/{k}"),
                Err(e) => assert!(typed(&e), "{case}: {s}/{k}: untyped error {e}"),
            }
            if v.kind == Kind::Tensor {
                if let Ok(t) = snap.tensor(k) {
                    if let Ok(b) = t.bytes() {
                        assert_eq!(b, &v.bytes[..], "{case}: WRONG BYTES for tensor {s}/{k}");
                    }
                }
            }
        }
        // Replay tables: exact rows, or a typed error.
        for (name, t) in &want.replay {
            let view = match snap.replay(name) {
                Ok(v) => v,
                Err(e) => {
                    assert!(typed(&e), "{case}: replay {s}/{name}: untyped error {e}");
                    continue;
                }
            };
            assert_eq!(view.len(), t.rows.len() as u64, "{case}: {s}/{name}");
            for (i, id) in t.rows.iter().enumerate() {
                match view.get(i as u64) {
                    Ok(row) => assert_eq!(
                        row.bytes(),
                        &crash_model::row_bytes(name, *id)[..],
                        "{case}: WRONG BYTES for row {i} of {s}/{name}"
                    ),
                    Err(e) => assert!(typed(&e), "{case}: {s}/{name} row {i}: untyped error {e}"),
                }
            }
        }
        for (info, e) in snap.verify() {
            assert!(typed(&e), "{case}: verify {s}: untyped error {e}");
            // A user entry, or an entry of a replay table the step records.
            let table = info
                .key
                .strip_prefix("replay:")
                .and_then(|k| k.split('/').next());
            assert!(
                want.entries.contains_key(&info.key)
                    || table.is_some_and(|t| want.replay.contains_key(t)),
                "{case}: verify {s} names {}",
                info.key
            );
            bad.push(info.location);
        }
    }
    bad
}

/// Opens the damaged database at `path` read-only and checks it; then, on
/// a copy, as the writer (which may cut a damaged tail off).
fn check_damaged(f: &Fixture, path: &Path, case: &str, writer: bool) -> Option<Vec<Location>> {
    let bad = match Db::open_read_only(path) {
        Ok(db) => Some(check_db(f, &db, &format!("{case} (read-only)"))),
        Err(e) => {
            assert!(typed(&e), "{case}: read-only open: untyped error {e}");
            None
        }
    };
    if writer {
        let tmp = scratch_dir();
        let copy = tmp.path().join("w.ckpt");
        copy_dir(path, &copy);
        match Db::open(&copy) {
            Ok(db) => {
                check_db(f, &db, &format!("{case} (writer)"));
            }
            Err(e) => assert!(typed(&e), "{case}: writer open: untyped error {e}"),
        }
    }
    bad
}

/// Flips bytes of the segment file in place (restoring them afterwards) and
/// checks each damaged state.
fn flip_each(
    f: &Fixture,
    id: u64,
    offsets: impl IntoIterator<Item = u64>,
    xor: u8,
    what: &str,
) -> u64 {
    let p = seg_path(&f.path, id);
    let clean = std::fs::read(&p).unwrap();
    let mut n = 0;
    for off in offsets {
        let mut bytes = clean.clone();
        bytes[off as usize] ^= xor;
        std::fs::write(&p, &bytes).unwrap();
        // The writer pass costs a copy and a catalog: every third byte.
        check_damaged(
            f,
            &f.path,
            &format!("{what} byte {off} of segment {id}"),
            off.is_multiple_of(3),
        );
        n += 1;
    }
    std::fs::write(&p, &clean).unwrap();
    n
}

#[test]
fn every_header_byte_flipped() {
    let f = fixture();
    // The catalog would refuse a log that lost a durable commit; without it
    // the writer must recover from the log alone.
    std::fs::remove_file(f.path.join("index.redb")).unwrap();
    let mut tried = 0;
    for (&id, list) in &f.entries {
        tried += flip_each(&f, id, 0..64, 0xff, "segment header");
        let headers = list
            .iter()
            .flat_map(|&(off, hlen, _, _)| off..off + hlen as u64);
        tried += flip_each(&f, id, headers, 0xff, "entry header");
    }
    eprintln!("{tried} header bytes flipped");
    assert!(tried > 2000);
}

#[test]
fn payload_bytes_flipped_are_caught_and_named_by_verify() {
    let f = fixture();
    std::fs::remove_file(f.path.join("index.redb")).unwrap();
    let mut tried = 0;
    let mut named = 0;
    for (&id, list) in &f.entries {
        let p = seg_path(&f.path, id);
        let clean = std::fs::read(&p).unwrap();
        for &(off, hlen, size, kind) in list {
            let start = off + hlen.div_ceil(64) as u64 * 64;
            let h = ckptdb::fuzzing::decode_entry_header(&clean[off as usize..]).unwrap();
            let end = start + h.payload_len;
            if end == start {
                continue;
            }
            assert!(end <= off + size);
            let len = end - start;
            // Eight bytes spread over the payload (fewer when it is short).
            let mut picks: Vec<u64> = (0..8).map(|i| start + len * i / 8).collect();
            picks.push(end - 1);
            picks.dedup();
            for pos in picks {
                let mut bytes = clean.clone();
                bytes[pos as usize] ^= 0x01;
                std::fs::write(&p, &bytes).unwrap();
                let case = format!("payload byte {pos} of {kind:?} entry at {id}/{off}");
                let bad = check_damaged(&f, &f.path, &case, pos == start);
                tried += 1;
                // A data entry some live step names must be reported by
                // verify, by its location.
                if kind != Kind::Commit {
                    if let Some(bad) = bad {
                        if bad.contains(&Location {
                            segment: id,
                            offset: off,
                        }) {
                            named += 1;
                        }
                    }
                }
            }
        }
        std::fs::write(&p, &clean).unwrap();
    }
    eprintln!("{tried} payload bytes flipped, {named} named by verify");
    assert!(tried > 300);
    assert!(named > 40, "verify named only {named} damaged entries");
}

#[test]
fn truncation_at_every_entry_boundary_and_more() {
    let f = fixture();
    std::fs::remove_file(f.path.join("index.redb")).unwrap();
    let mut tried = 0;
    for (&id, list) in &f.entries {
        let p = seg_path(&f.path, id);
        let clean = std::fs::read(&p).unwrap();
        let mut cuts: Vec<u64> = vec![0, 1, 32, 63, 64];
        for &(off, hlen, size, _) in list {
            cuts.extend([
                off,
                off + 1,
                off + hlen as u64,
                off + size - 1,
                off + size / 2,
            ]);
        }
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts.into_iter().filter(|&c| c < clean.len() as u64) {
            std::fs::write(&p, &clean[..cut as usize]).unwrap();
            check_damaged(&f, &f.path, &format!("segment {id} cut at {cut}"), true);
            tried += 1;
        }
        std::fs::write(&p, &clean).unwrap();
    }
    eprintln!("{tried} truncations");
    assert!(tried > 100);
}

#[test]
fn verify_names_the_damaged_entry() {
    let f = fixture();
    let db = Db::open_read_only(&f.path).unwrap();
    let last = *db.steps().last().unwrap();
    let snap = db.snapshot(last).unwrap();
    let info = snap.entry("policy/w").unwrap();
    drop(snap);
    drop(db);
    let p = seg_path(&f.path, info.location.segment);
    let mut bytes = std::fs::read(&p).unwrap();
    let h = ckptdb::fuzzing::decode_entry_header(&bytes[info.location.offset as usize..]).unwrap();
    let payload = info.location.offset + h.payload_offset();
    bytes[payload as usize + 3] ^= 0x10;
    std::fs::write(&p, &bytes).unwrap();
    let db = Db::open_read_only(&f.path).unwrap();
    let snap = db.snapshot(last).unwrap();
    let bad = snap.verify();
    // Only the damaged entry (its twin policy/w_copy was written by the
    // same transaction, so it is a separate entry: dedup looks at committed
    // entries only).
    let keys: Vec<&str> = bad.iter().map(|(i, _)| i.key.as_str()).collect();
    assert_eq!(keys, ["policy/w"]);
    assert_eq!(
        snap.raw_bytes("policy/w_copy").unwrap(),
        &f.steps[&last].entries["policy/w"].bytes[..]
    );
    for (i, e) in &bad {
        assert_eq!(i.location, info.location);
        assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
        assert!(e.to_string().contains("policy/w"), "{e}");
    }
    assert!(snap.raw_bytes("policy/w").unwrap_err().is_corruption());
    // Untouched entries still read.
    assert!(snap.raw_bytes("opt/count").is_ok());
}

#[test]
fn damaged_catalog_is_rebuilt_or_refused_never_trusted() {
    // index.redb is derived from the log. Damage in it must never change
    // what the database shows: the writer either rebuilds it or refuses to
    // open with a typed error.
    let f = fixture();
    let clean = std::fs::read(f.path.join("index.redb")).unwrap();
    let want = {
        let db = Db::open_read_only(&f.path).unwrap();
        crash_model::read_model(&db).unwrap()
    };
    let step = (clean.len() / 300).max(1);
    let mut tried = 0;
    let mut refused = 0;
    for off in (0..clean.len()).step_by(step) {
        let tmp = scratch_dir();
        let path = tmp.path().join("db");
        copy_dir(&f.path, &path);
        let mut bytes = clean.clone();
        bytes[off] ^= 0xff;
        std::fs::write(path.join("index.redb"), &bytes).unwrap();
        match Db::open(&path) {
            Ok(db) => {
                assert_eq!(
                    crash_model::read_model(&db).unwrap(),
                    want,
                    "catalog byte {off}"
                );
                // Dedup consults the catalog: a new commit must still be
                // exact, and so must what it inherits.
                let next = db.last_committed_step().unwrap() + 1;
                let mut tx = db.begin_step_from_latest(next).unwrap();
                tx.put_tensor_raw("policy/w", ckptdb::DType::U8, &[3], &[1, 2, 3])
                    .unwrap();
                let b = &want.steps.values().next_back().unwrap().entries["policy/b"];
                tx.put_tensor_raw("again", b.dtype.unwrap(), &b.shape, &b.bytes)
                    .unwrap();
                tx.commit().unwrap();
                drop(db);
                let db = Db::open(&path).unwrap();
                let snap = db.snapshot(next).unwrap();
                assert_eq!(snap.raw_bytes("policy/w").unwrap(), &[1, 2, 3]);
                assert_eq!(snap.raw_bytes("again").unwrap(), &b.bytes[..]);
                assert_eq!(snap.raw_bytes("policy/b").unwrap(), &b.bytes[..]);
            }
            Err(e) => {
                assert!(
                    typed(&e) || matches!(e, Error::Catalog(_)),
                    "catalog byte {off}: {e}"
                );
                refused += 1;
            }
        }
        tried += 1;
    }
    eprintln!("{tried} catalog bytes flipped, {refused} refused");
    assert!(tried > 200);
}
