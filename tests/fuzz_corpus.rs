//! Replays the committed seed corpus of every fuzz target (`fuzz/seeds/`)
//! through the same harness `cargo fuzz` runs, with stable Rust. A crash
//! input found by fuzzing is added to the seeds to become a regression test.
//!
//! `CKPTDB_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_corpus -- --test-threads=1`
//! regenerates the
//! generated seeds (small files made from a real database).

mod crash_model;
#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use ckptdb::{DType, Db, DbOptions};

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{target}: only {} seeds", files.len());
    files
}

/// A small real database: segments of one and two commits.
fn sample_db(dir: &Path) -> PathBuf {
    let path = dir.join("db");
    let db = Db::open_with(&path, DbOptions::default().segment_size(4096)).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
    tx.put_tensor_raw("w", DType::F32, &[3, 4], bytemuck::cast_slice(&w))
        .unwrap();
    tx.put_blob("b", b"blob").unwrap();
    tx.put_value("a", &serde_json::json!({"lr": 0.1})).unwrap();
    tx.put_metric("loss", 0.5).unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_step_from(2, 1).unwrap();
    tx.put_tensor_raw("u", DType::U8, &[5], &[1, 2, 3, 4, 5])
        .unwrap();
    tx.commit().unwrap();
    let mut tx = db.begin_step_from(3, 2).unwrap();
    tx.put_blob("big", &crash_model::bytes_of(3, 2900)).unwrap();
    tx.drop_step(1).unwrap();
    tx.commit().unwrap();
    path
}

fn write_seeds() {
    let tmp = crash_model::scratch_dir();
    let path = sample_db(tmp.path());
    let seg = |id: u64| {
        std::fs::read(
            path.join("log")
                .join(ckptdb::fuzzing::segment_file_name(id)),
        )
        .unwrap()
    };
    let s0 = seg(0);
    let s1 = seg(1);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        assert!(
            bytes.len() < 4096,
            "{target}/{name} is {} bytes",
            bytes.len()
        );
        std::fs::create_dir_all(seeds_dir(target)).unwrap();
        std::fs::write(seeds_dir(target).join(name), bytes).unwrap();
    };
    write("segment_open", "one-segment", &s0);
    // Segment 0 cut to its header (to stay small): segment 1's pointer back
    // to the root in segment 0 leads nowhere.
    let mut two = s0[..64].to_vec();
    two.extend_from_slice(&[0xFF, 0x00, 0xFF, 0x00]);
    two.extend_from_slice(&s1);
    write("segment_open", "two-segments", &two);
    write("segment_open", "torn-tail", &s0[..s0.len() - 70]);
    // Regression: a run of new segments whose headers were all lost.
    let mut torn = s0.clone();
    torn.extend_from_slice(&[0xFF, 0x00, 0xFF, 0x00]);
    torn.extend_from_slice(&[0u8; 64]);
    torn.extend_from_slice(&[0xFF, 0x00, 0xFF, 0x00]);
    torn.extend_from_slice(b"CKPTSEG\0 torn");
    write("segment_open", "torn-segment-headers", &torn);
    write("segment_open", "header-only", &s0[..64]);

    write("entry_decode", "segment-header", &s0[..64]);
    let first = ckptdb::fuzzing::decode_entry_header(&s0[64..]).unwrap();
    write(
        "entry_decode",
        "entry-header",
        &s0[64..64 + first.payload_offset() as usize],
    );
    // The last entry of segment 0 is a commit record: its payload.
    let mut off = 64usize;
    let mut last = None;
    while off < s0.len() {
        let h = ckptdb::fuzzing::decode_entry_header(&s0[off..]).unwrap();
        if h.kind == ckptdb::Kind::Commit {
            last = Some((off, h.clone()));
        }
        off += h.entry_size() as usize;
    }
    let (off, h) = last.unwrap();
    let p = off + h.payload_offset() as usize;
    write(
        "entry_decode",
        "commit-record",
        &s0[p..p + h.payload_len as usize],
    );

    write(
        "api_ops",
        "commits",
        &[0, 2, 0x01, 0x45, 0x10, 1, 0x22, 5, 0x11, 0],
    );
    write(
        "api_ops",
        "crash-now",
        &[0, 1, 0x07, 0x10, 2, 0x31, 0x62, 6, 9, 5],
    );
    write(
        "api_ops",
        "crash-at-op",
        &[0, 1, 3, 7, 4, 11, 0x10, 2, 5, 9, 0x30, 1, 7, 0x51, 5],
    );
    write(
        "api_ops",
        "abort-and-drop",
        &[0x40, 2, 1, 2, 0, 1, 3, 0x30, 0, 0x10, 0, 0x20, 0],
    );
    // Replay pushes and records (bit 3 of a transaction), compactions
    // (bit 3 of a reopen; bit 4 forces copy-forward), and a crash among
    // them.
    write(
        "api_ops",
        "replay-compact",
        &[
            0x08, 1, 0x03, 0x6A, 0x0D, 0x18, 0, 0xFF, 0x1D, 0x28, 0, 0x40, 0x1D, 5, 0x08, 0, 0x21,
            7, 3, 1, 0x18, 0, 0x7F, 5,
        ],
    );
    // Replay table programs: a schema, geometry bytes (capacity, page
    // size, write batch and priorities), then operations with their row
    // bytes (see `harness::replay_table`).
    let replay = |name: &str, schema: &str, geometry: [u8; 3], program: &[u8]| {
        let mut seed = schema.as_bytes().to_vec();
        seed.push(0);
        seed.extend_from_slice(&geometry);
        seed.extend_from_slice(program);
        write("replay_table", name, &seed);
    };
    let rows = |op: u8, n: usize, row_size: usize, first: u8| -> Vec<u8> {
        let mut v = vec![op];
        v.extend((0..n * row_size).map(|i| first.wrapping_add(i as u8)));
        v
    };
    let mut commits = rows(0x30, 4, 9, 1);
    commits.extend([0x04]);
    commits.extend(rows(0x10, 2, 9, 40));
    commits.extend([0x02, 5, 0x04]);
    commits.extend(rows(0x00, 1, 9, 70));
    commits.extend([0x05, 0x07, 0x06, 0]);
    commits.extend(rows(0x00, 1, 9, 90));
    commits.extend([0x04, 0x07]);
    replay(
        "commit-reopen-older",
        "obs: f32[2], done: bool[]",
        [5, 2, 0],
        &commits,
    );
    let mut prio = rows(0x30, 4, 11, 3);
    prio.extend([0x03, 7, 0x12, 6, 0x04]);
    prio.extend(rows(0x20, 3, 11, 9));
    prio.extend([0x03, 2, 0x04, 0x05, 0x1A, 4, 0x07]);
    replay("prioritized", "a: u8[3], r: f64[]", [9, 3, 1], &prio);
    let mut bad = vec![0x08, 2, 0, 0, 0, 0, 0, 0x88, 1, 1, 7, 0, 0, 0];
    bad.extend([0x0A, 5, 0x0A, 1, 0x12, 1, 0x04, 0x05]);
    replay("bad-rows", "flag: bool[2], x: i32[]", [2, 1, 0x20], &bad);
    replay("bad-schema", "x: f33[1], y: u8[", [1, 1, 1], &[0, 1]);
}

#[test]
fn seed_corpus_replays() {
    if std::env::var_os("CKPTDB_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds();
    }
    for (p, bytes) in corpus("entry_decode") {
        eprintln!("entry_decode {}", p.display());
        harness::entry_decode(&bytes);
    }
    for (p, bytes) in corpus("segment_open") {
        eprintln!("segment_open {}", p.display());
        harness::segment_open(&bytes);
    }
    for (p, bytes) in corpus("api_ops") {
        eprintln!("api_ops {}", p.display());
        harness::api_ops(&bytes);
    }
    for (p, bytes) in corpus("replay_table") {
        eprintln!("replay_table {}", p.display());
        harness::replay_table(&bytes);
    }
}

#[test]
fn generated_seeds_are_what_they_claim() {
    // The seeds decode as intended, so the fuzzers start from valid inputs.
    let seg = std::fs::read(seeds_dir("entry_decode").join("segment-header")).unwrap();
    assert_eq!(ckptdb::fuzzing::decode_segment_header(&seg).unwrap().0, 0);
    let hdr = std::fs::read(seeds_dir("entry_decode").join("entry-header")).unwrap();
    assert!(ckptdb::fuzzing::decode_entry_header(&hdr).is_ok());
    let rec = std::fs::read(seeds_dir("entry_decode").join("commit-record")).unwrap();
    assert!(ckptdb::fuzzing::decode_commit_record(&rec).is_ok());
    // A whole segment opens to the steps it holds.
    let tmp = crash_model::scratch_dir();
    let log = tmp.path().join("db/log");
    std::fs::create_dir_all(&log).unwrap();
    let one = std::fs::read(seeds_dir("segment_open").join("one-segment")).unwrap();
    std::fs::write(log.join(ckptdb::fuzzing::segment_file_name(0)), one).unwrap();
    let db = Db::open_read_only(tmp.path().join("db")).unwrap();
    assert_eq!(db.steps(), vec![1, 2]);
    for step in db.steps() {
        assert!(
            db.snapshot(step).unwrap().verify().is_empty(),
            "step {step}"
        );
    }
}
