//! Recovery cost: reopening a database for writing after an unclean shutdown,
//! with 1 GiB and with 16 GiB of history (sizes × `CKPTDB_BENCH_SCALE`).
//!
//! The history is commits of one 64 MiB tensor with keep-last-3 and no
//! compaction, so both databases have the same live set and differ only in
//! how much log lies behind it. "Unclean": the catalog is one commit behind
//! (its last update was never made durable) and the newest segment ends with
//! a torn entry. Each measured open starts from that state again. The
//! target is a flat cost: the 16 GiB open should take as long as the 1 GiB
//! one.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckptdb::{DType, Db, DbOptions};
use criterion::{criterion_group, BenchmarkId, Criterion};

const MIB: u64 = 1 << 20;

fn scale() -> f64 {
    std::env::var("CKPTDB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: u64) -> u64 {
    (((n as f64 * scale()) as u64) / 4).max(1) * 4
}

fn options() -> DbOptions {
    DbOptions::default().segment_size(scaled(256 * MIB).max(4096))
}

/// A database with `history` bytes of commits, left as an unclean shutdown
/// leaves it. Returns its path, the stale catalog and the torn tail.
struct Unclean {
    path: PathBuf,
    stale_catalog: Vec<u8>,
    newest_segment: PathBuf,
    clean_len: u64,
}

fn build(dir: &Path, history: u64) -> Unclean {
    let path = dir.join(format!("db-{history}"));
    let tensor = scaled(64 * MIB);
    let commits = (history / tensor).max(4);
    let mut stale_catalog = Vec::new();
    {
        let db = Db::open_with(&path, options()).unwrap();
        for step in 1..=commits {
            if step == commits {
                stale_catalog = std::fs::read(path.join("index.redb")).unwrap();
            }
            // Distinct content every step, so dedup never applies.
            let values: Vec<f32> = (0..tensor / 4)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(step) % 10007) as f32)
                .collect();
            let mut tx = db.begin_step(step).unwrap();
            tx.put_tensor_raw(
                "model/weight",
                DType::F32,
                &[tensor / 4],
                bytemuck::cast_slice(&values),
            )
            .unwrap();
            if step > 3 {
                tx.drop_step(step - 3).unwrap();
            }
            tx.commit().unwrap();
        }
    }
    let mut segments: Vec<PathBuf> = std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let newest_segment = segments.pop().unwrap();
    let clean_len = std::fs::metadata(&newest_segment).unwrap().len();
    Unclean {
        path,
        stale_catalog,
        newest_segment,
        clean_len,
    }
}

impl Unclean {
    /// Puts the database back into the unclean state (not measured).
    fn reset(&self) {
        std::fs::write(self.path.join("index.redb"), &self.stale_catalog).unwrap();
        let f = OpenOptions::new()
            .write(true)
            .open(&self.newest_segment)
            .unwrap();
        f.set_len(self.clean_len).unwrap();
        // A torn entry: a header that stops half-way, then garbage.
        let mut tail = b"CKPE".to_vec();
        tail.resize(4096, 0xA5);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.newest_segment)
            .unwrap();
        f.write_all(&tail).unwrap();
    }

    fn history_bytes(&self) -> u64 {
        std::fs::read_dir(self.path.join("log"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    for (name, history) in [
        ("1GiB", scaled(1024 * MIB)),
        ("16GiB", scaled(16 * 1024 * MIB)),
    ] {
        let db = build(dir.path(), history);
        println!("recovery/{name}: {} bytes of log", db.history_bytes());
        g.bench_with_input(BenchmarkId::new("reopen_unclean", name), &db, |b, db| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    db.reset();
                    let start = Instant::now();
                    let opened = Db::open_with(&db.path, options()).unwrap();
                    t += start.elapsed();
                    assert_eq!(opened.steps().len(), 3);
                }
                t
            })
        });
    }
    g.finish();
}

criterion_group!(benches, recovery);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
