//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*` (run by
//! `cargo fuzz` on nightly) and `tests/fuzz_corpus.rs` (which replays the
//! committed seed corpus with stable Rust in `cargo test`).
//!
//! Each function takes arbitrary bytes. Errors from the database are fine;
//! a panic (other than a failed assertion of this harness), a wrong byte or
//! a crash of the process is a bug.
//!
//! The crate root that includes this file must also include
//! `tests/crash_model/mod.rs` as `crash_model`.

use std::path::Path;

use ckptdb::storage::fault::{Fault, FaultStorage};
use ckptdb::{DType, Db, DbOptions, Kind};

use crate::crash_model::{read_model, tensor_of, Action, Failure, Model, Session, TxSpec, Val};

fn scratch() -> tempfile::TempDir {
    crate::crash_model::scratch_dir()
}

/// Reads everything a database shows, through every accessor. Errors are
/// allowed (the bytes are arbitrary); panics are not.
fn read_all(db: &Db) {
    let _ = db.step_infos();
    let _ = db.tags();
    for s in db.steps() {
        let Ok(snap) = db.snapshot(s) else { continue };
        let infos: Vec<_> = snap.entries().collect();
        for info in infos {
            let _ = snap.raw_bytes(&info.key);
            match info.kind {
                Kind::Tensor => {
                    if let Ok(t) = snap.tensor(&info.key) {
                        let _ = t.bytes();
                        match t.dtype() {
                            DType::F32 => {
                                let _ = t.view::<f32>();
                            }
                            DType::U8 => {
                                let _ = t.to_owned::<u8>();
                            }
                            DType::F64 => {
                                let _ = t.as_slice::<f64>();
                            }
                            _ => {}
                        }
                    }
                }
                Kind::Value => {
                    let _ = snap.value::<serde_json::Value>(&info.key);
                }
                Kind::Blob => {
                    let _ = snap.blob(&info.key);
                }
                _ => {}
            }
        }
        let _ = snap.verify();
        for k in ["a", "b", "w"] {
            let _ = db.history(k);
        }
    }
}

/// Target `segment_open`: the input is split into segment files of a
/// database (a 0xFF 0x00 0xFF 0x00 separator starts the next segment),
/// which is then opened read-only, then as the writer, read whole, and
/// written to.
pub fn segment_open(data: &[u8]) {
    let tmp = scratch();
    let path = tmp.path().join("db");
    let log = path.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let sep: &[u8] = &[0xFF, 0x00, 0xFF, 0x00];
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
        if parts.len() == 3 {
            break;
        }
    }
    parts.push(rest);
    for (id, part) in parts.iter().enumerate() {
        let name = ckptdb::fuzzing::segment_file_name(id as u64);
        std::fs::write(log.join(name), part).unwrap();
    }
    if let Ok(ro) = Db::open_read_only(&path) {
        read_all(&ro);
        let _ = ro.refresh();
    }
    let Ok(db) = Db::open(&path) else { return };
    read_all(&db);
    // A writer that opened must be able to commit and read back.
    let step = db.last_committed_step().map_or(1, |s| s.saturating_add(1));
    if step == u64::MAX {
        return;
    }
    let mut tx = db.begin_step(step).unwrap();
    tx.put_blob("fuzz/after", b"written after open").unwrap();
    tx.commit().unwrap();
    assert_eq!(
        db.snapshot(step).unwrap().blob("fuzz/after").unwrap(),
        b"written after open"
    );
}

/// Target `entry_decode`: the input is an entry header, a segment header,
/// a commit record and a manifest all at once.
pub fn entry_decode(data: &[u8]) {
    if let Ok(h) = ckptdb::fuzzing::decode_entry_header(data) {
        let enc = ckptdb::fuzzing::encode_entry_header(&h);
        // The decoded fields re-encode to the bytes they came from (the
        // padding after the header is not covered by the header).
        assert_eq!(&enc[..h.header_len()], &data[..h.header_len()]);
        assert_eq!(ckptdb::fuzzing::decode_entry_header(&enc), Ok(h.clone()));
        assert!(h.entry_size() >= h.payload_offset());
    }
    if let Ok((id, _prev)) = ckptdb::fuzzing::decode_segment_header(data) {
        let _ = ckptdb::fuzzing::segment_file_name(id);
    }
    let _ = ckptdb::fuzzing::decode_commit_record(data);
    let _ = ckptdb::fuzzing::decode_manifest(data);
}

/// Target `api_ops`: the input is a program of API operations on one
/// database — transactions (with replay pushes and records), compactions,
/// reopens, and crashes (now, or at the n-th storage operation of the next
/// transaction) — checked against the model.
///
/// Each operation is one byte (`op % 8`: 0–4 a transaction, 5 a reopen, 6
/// a crash now, 7 a crash later), sometimes followed by argument bytes.
/// Bit 3 (`0x08`) turns a transaction into one with replay rows (an
/// argument byte: rows pushed before it and inside it) and a reopen into a
/// compaction; programs without that bit decode as they always did.
pub fn api_ops(data: &[u8]) {
    let tmp = scratch();
    let path = tmp.path().join("db");
    let mut model = Model::default();
    let mut next_step = 1u64;
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let opts = |fs: &FaultStorage| DbOptions::default().segment_size(4096).storage(fs.shared());
    let mut fs = FaultStorage::new(Fault::None);
    let mut db = Some(Db::open_with(&path, opts(&fs)).unwrap());
    let mut ops = 0;
    while let Some(op) = next() {
        ops += 1;
        if ops > 64 {
            break;
        }
        match op % 8 {
            // A transaction: a few puts, maybe a drop, then commit or not.
            0..=4 => {
                let Some(d) = db.as_ref() else { continue };
                let from_latest = op & 0x10 != 0;
                let parent = if from_latest {
                    model.steps.keys().next_back().copied()
                } else {
                    None
                };
                let mut spec = TxSpec {
                    step: next_step,
                    parent,
                    ..TxSpec::default()
                };
                next_step += 1;
                let n = next().unwrap_or(0) % 4;
                for _ in 0..n {
                    let b = next().unwrap_or(0);
                    let key = ["a", "b", "w", "x/y"][(b % 4) as usize].to_owned();
                    let seed = (b >> 2) as u64 % 5;
                    let v = match (b >> 5) % 3 {
                        0 => tensor_of(seed, DType::F32, &[3, 1 + seed % 3]),
                        1 => Val::blob(crate::crash_model::bytes_of(seed, 10 + 50 * seed as usize)),
                        _ => Val::value(&serde_json::json!([seed, "v"])),
                    };
                    spec.puts.push((key, v));
                }
                if op & 0x20 != 0 && model.steps.len() > 1 {
                    spec.drops.push(*model.steps.keys().next().unwrap());
                }
                spec.metrics.push(("m".into(), op as f64));
                // Bit 3: replay rows pushed before the transaction (full
                // pages go to the log at once) and inside it, and both
                // tables recorded.
                let mut actions = Vec::new();
                if op & 0x08 != 0 {
                    let r = next().unwrap_or(0);
                    actions.push(Action::Push {
                        table: "buf".into(),
                        rows: (r % 32) as u64,
                    });
                    spec.pushes.push(("aux".into(), (r >> 5) as u64 * 3));
                    spec.records = vec!["buf".into(), "aux".into()];
                }
                actions.push(if op & 0x40 != 0 {
                    Action::Abandon(spec)
                } else {
                    Action::Commit(spec)
                });
                // The tables are opened for this operation only: they start
                // from the newest step, as after a reopen.
                model = model.reopen();
                let failed = match Session::open(d) {
                    Err(e) => Some((Failure::Before(e), None)),
                    Ok(mut session) => {
                        let mut failed = None;
                        for a in &actions {
                            match session.run(a) {
                                Ok(()) => model = a.apply(&model),
                                Err(f) => {
                                    failed = Some((f, Some(a)));
                                    break;
                                }
                            }
                        }
                        failed
                    }
                };
                if let Some((f, action)) = failed {
                    // Only a crash set up by an earlier op fails a call.
                    assert!(fs.crashed(), "an API call failed without a fault: {f:?}");
                    let in_flight = match (f, action) {
                        (Failure::InCommit(_), Some(a)) => a.apply(&model),
                        _ => model.clone(),
                    };
                    drop(db.take());
                    model = recover(&path, &model, &in_flight, op & 0x80 != 0);
                    fs = FaultStorage::new(Fault::None);
                    db = Some(Db::open_with(&path, opts(&fs)).unwrap());
                }
            }
            // Space reclamation (bit 3; bit 4 forces copy-forward).
            5 if op & 0x08 != 0 => {
                let Some(d) = db.as_ref() else { continue };
                let r = if op & 0x10 != 0 {
                    d.compact_with(1.0)
                } else {
                    d.compact()
                };
                if let Err(e) = r {
                    assert!(fs.crashed(), "compaction failed without a fault: {e}");
                    // Not a commit: either root shows the same state.
                    drop(db.take());
                    model = recover(&path, &model, &model, op & 0x80 != 0);
                    fs = FaultStorage::new(Fault::None);
                    db = Some(Db::open_with(&path, opts(&fs)).unwrap());
                }
            }
            // Reopen cleanly.
            5 => {
                drop(db.take());
                fs = FaultStorage::new(Fault::None);
                db = Some(Db::open_with(&path, opts(&fs)).unwrap());
                assert_eq!(read_model(db.as_ref().unwrap()).unwrap(), model);
            }
            // Crash now.
            6 => {
                let seed = next().unwrap_or(0) as u64;
                fs.crash(seed).unwrap();
                drop(db.take());
                model = recover(&path, &model, &model, seed & 1 != 0);
                fs = FaultStorage::new(Fault::None);
                db = Some(Db::open_with(&path, opts(&fs)).unwrap());
            }
            // Crash at the k-th storage operation from now (during the next
            // transactions, or during the reopen that follows).
            _ => {
                let k = 1 + next().unwrap_or(0) as u64 % 12;
                let seed = next().unwrap_or(0) as u64;
                drop(db.take());
                fs = FaultStorage::new(Fault::Crash { at: k, seed });
                match Db::open_with(&path, opts(&fs)) {
                    Ok(d) => db = Some(d),
                    Err(_) => {
                        model = recover(&path, &model, &model, seed & 1 != 0);
                        fs = FaultStorage::new(Fault::None);
                        db = Some(Db::open_with(&path, opts(&fs)).unwrap());
                    }
                }
            }
        }
        if let Some(d) = &db {
            if !fs.crashed() {
                assert_eq!(read_model(d).unwrap(), model);
            }
        }
    }
    // Whatever happened, a clean reopen shows the model.
    drop(db.take());
    let d = Db::open(&path).unwrap();
    assert_eq!(read_model(&d).unwrap(), model);
}

/// Reopens after a crash: the database must show `acked` or `in_flight`.
/// Returns the one it shows.
/// The catalog is derived, so the result must not depend on `drop_catalog`.
fn recover(path: &Path, acked: &Model, in_flight: &Model, drop_catalog: bool) -> Model {
    if drop_catalog {
        let _ = std::fs::remove_file(path.join("index.redb"));
    }
    let d = Db::open(path).unwrap();
    let m = read_model(&d).unwrap();
    assert!(
        &m == acked || &m == in_flight,
        "after a crash the database is neither the acknowledged state nor the one in flight"
    );
    m
}
