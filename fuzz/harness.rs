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

/// The replay table as the model sees it: every row ever pushed, by
/// serial number. Slot `serial % capacity` holds the newest row with that
/// residue, and the table holds the last `min(total, capacity)` rows.
#[derive(Clone, Debug, Default, PartialEq)]
struct RingModel {
    rows: Vec<Vec<u8>>,
}

impl RingModel {
    fn len(&self, capacity: u64) -> u64 {
        (self.rows.len() as u64).min(capacity)
    }

    /// The row in `slot`, with its serial number.
    fn at_slot(&self, slot: u64, capacity: u64) -> Option<(u64, &[u8])> {
        let total = self.rows.len() as u64;
        if slot >= self.len(capacity) {
            return None;
        }
        // The newest serial congruent to `slot` modulo the capacity.
        let last = total - 1;
        let serial = last - (last + capacity - slot) % capacity;
        Some((serial, &self.rows[serial as usize]))
    }
}

/// What a table shows equals the model: counts, every row by position and
/// by slot.
fn check_replay<'a>(
    len: u64,
    total: u64,
    get: impl Fn(u64) -> ckptdb::Result<ckptdb::replay::Row<'a>>,
    model: &RingModel,
    capacity: u64,
) {
    assert_eq!(total, model.rows.len() as u64);
    assert_eq!(len, model.len(capacity));
    let oldest = total - len;
    for i in 0..len {
        let row = get(i).unwrap();
        assert_eq!(row.bytes(), &model.rows[(oldest + i) as usize][..]);
        assert_eq!(row.index().serial, oldest + i);
        assert_eq!(row.index().slot, (oldest + i) % capacity);
    }
    assert!(get(len).is_err());
}

/// Every sampled row's columns equal the model's row in that slot.
fn check_batch(
    batch: &ckptdb::replay::Batch,
    schema: &ckptdb::replay::Schema,
    model: &RingModel,
    capacity: u64,
) {
    let mut offset = 0;
    for f in schema.fields() {
        let size = f.dtype.size() * f.shape.iter().product::<u64>() as usize;
        let col = batch.column(&f.name).unwrap().bytes();
        for (k, ix) in batch.indices().iter().enumerate() {
            let (serial, row) = model
                .at_slot(ix.slot, capacity)
                .expect("sampled an empty slot");
            assert_eq!(ix.serial, serial);
            assert_eq!(&col[k * size..(k + 1) * size], &row[offset..offset + size]);
        }
        offset += size;
    }
}

/// Target `replay_table`: the input is a schema text (up to the first
/// `0x00` byte), three geometry bytes and a program of replay operations
/// checked against a model of the ring: push a row of input bytes (bools
/// forced to 0/1 unless bit 3 asks for a raw, maybe invalid, row), sample
/// uniformly, distinct or by priority, update priorities, commit a step
/// recording the table, reopen the database, reopen the table at an older
/// step, and read an older step's table read-only.
pub fn replay_table(data: &[u8]) {
    use ckptdb::replay::{ReplayOptions, Schema};
    use rand::SeedableRng;

    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(schema) = Schema::parse(&String::from_utf8_lossy(text)) else {
        return;
    };
    // Parsing what `Display` prints gives the same schema back.
    assert_eq!(Schema::parse(&schema.to_string()).unwrap(), schema);
    let rs = schema.row_size();
    // Rows are cut from the input, so big rows would only test memcpy.
    if rs > 256 || rest.len() < 3 {
        return;
    }
    let capacity = 1 + u64::from(rest[0] % 24);
    // A page holds at most the whole ring.
    let page_size = 1 + u64::from(rest[1]) % capacity.min(6);
    let mut opts = ReplayOptions::new(capacity, page_size)
        .write_batch(rs * page_size as usize * (1 + (rest[2] as usize >> 4) % 3));
    if rest[2] & 1 != 0 {
        opts = opts.prioritized(0.6);
    }
    let bools: Vec<(usize, usize)> = {
        let mut at = 0;
        let mut v = Vec::new();
        for f in schema.fields() {
            let size = f.dtype.size() * f.shape.iter().product::<u64>() as usize;
            if f.dtype == DType::Bool {
                v.push((at, size));
            }
            at += size;
        }
        v
    };
    let mut prog = rest[3..].iter().copied();
    let mut next = move || prog.next();

    let tmp = scratch();
    let path = tmp.path().join("db");
    let dbopts = || DbOptions::default().segment_size(4096);
    let mut db = Db::open_with(&path, dbopts()).unwrap();
    let mut now = RingModel::default();
    let mut committed: std::collections::BTreeMap<u64, RingModel> = Default::default();
    let mut next_step = 1u64;
    let mut ops = 0;
    // The table borrows the database; reopening replaces both, so each
    // round of the loop opens the table for a run of operations.
    'reopen: loop {
        let mut table = match db.replay_table("t", &schema, opts) {
            Ok(t) => t,
            Err(e) => panic!("reopening the table failed: {e}"),
        };
        check_replay(
            table.len(),
            table.total_inserted(),
            |i| table.get(i),
            &now,
            capacity,
        );
        while let Some(op) = next() {
            ops += 1;
            if ops > 96 {
                break 'reopen;
            }
            match op % 8 {
                0 | 1 => {
                    let n = 1 + (op >> 4) as usize % 4;
                    for _ in 0..n {
                        let mut row: Vec<u8> = (0..rs).map(|_| next().unwrap_or(op)).collect();
                        let raw = op & 0x08 != 0;
                        if !raw {
                            for &(at, size) in &bools {
                                for b in &mut row[at..at + size] {
                                    *b &= 1;
                                }
                            }
                        }
                        let valid = bools
                            .iter()
                            .all(|&(at, size)| row[at..at + size].iter().all(|&b| b <= 1));
                        match table.push_bytes(&row) {
                            Ok(()) => {
                                assert!(valid, "a bool byte other than 0 or 1 was accepted");
                                now.rows.push(row);
                            }
                            Err(e) => {
                                assert!(!valid, "a valid row was refused: {e}");
                                assert!(matches!(e, ckptdb::Error::InvalidArgument(_)), "{e:?}");
                            }
                        }
                    }
                    // A row of the wrong length is refused, table unchanged.
                    if op & 0x80 != 0 {
                        assert!(table.push_bytes(&vec![0u8; rs + 1]).is_err());
                    }
                }
                2 => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(op));
                    let n = (next().unwrap_or(0) % 8) as usize;
                    let len = table.len();
                    let b = match op >> 3 & 3 {
                        0 => table.sample_uniform(&mut rng, n),
                        1 => table.sample_uniform_distinct(&mut rng, n),
                        _ => table.sample_prioritized(&mut rng, n, 0.4),
                    };
                    match b {
                        Ok(b) => {
                            assert_eq!(b.len(), n);
                            check_batch(&b, &schema, &now, capacity);
                        }
                        // Sampling from an empty table, more distinct rows
                        // than it holds, or by priority from a uniform table.
                        Err(_) => assert!(
                            (len == 0 && n > 0)
                                || (op >> 3 & 3 == 1 && n as u64 > len)
                                || (op >> 3 & 3 >= 2 && opts.alpha().is_none())
                        ),
                    }
                }
                3 if opts.alpha().is_some() => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(op));
                    if let Ok(b) = table.sample_uniform(&mut rng, 3) {
                        let p = 0.5 + f64::from(next().unwrap_or(1));
                        table.update_priorities(b.indices(), &[p, p, p]).unwrap();
                        for ix in b.indices() {
                            let w = table.priority_weight(ix.slot).unwrap();
                            assert!((w - p.powf(0.6)).abs() <= 1e-3 * w, "{w} vs {p}");
                        }
                    }
                }
                // Commit a step recording the table (bit 3: abandon it).
                3 | 4 => {
                    let mut tx = db.begin_step(next_step).unwrap();
                    tx.put_replay(&mut table).unwrap();
                    if op & 0x08 == 0 {
                        tx.commit().unwrap();
                        committed.insert(next_step, now.clone());
                    }
                    next_step += 1;
                }
                // Reopen the database: the table is the newest commit's.
                5 => {
                    drop(table);
                    drop(db);
                    db = Db::open_with(&path, dbopts()).unwrap();
                    now = committed.values().next_back().cloned().unwrap_or_default();
                    continue 'reopen;
                }
                // Continue from an older step.
                6 => {
                    let Some((&step, m)) = committed
                        .iter()
                        .nth(next().unwrap_or(0) as usize % committed.len().max(1))
                    else {
                        continue;
                    };
                    drop(table);
                    table = db.replay_table_at("t", &schema, opts, step).unwrap();
                    now = m.clone();
                    check_replay(
                        table.len(),
                        table.total_inserted(),
                        |i| table.get(i),
                        &now,
                        capacity,
                    );
                }
                // An older step's table, read-only, equals what it recorded.
                _ => {
                    for (&step, m) in &committed {
                        let view = db.snapshot(step).unwrap().replay("t").unwrap();
                        check_replay(
                            view.len(),
                            view.total_inserted(),
                            |i| view.get(i),
                            m,
                            capacity,
                        );
                    }
                }
            }
            check_replay(
                table.len(),
                table.total_inserted(),
                |i| table.get(i),
                &now,
                capacity,
            );
        }
        break;
    }
    drop(db);
    let ro = Db::open_read_only(&path).unwrap();
    for (&step, m) in &committed {
        let view = ro.snapshot(step).unwrap().replay("t").unwrap();
        check_replay(
            view.len(),
            view.total_inserted(),
            |i| view.get(i),
            m,
            capacity,
        );
    }
}
