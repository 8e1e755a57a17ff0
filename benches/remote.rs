//! The remote (feature `s3`): what a live mirror costs and how fast it
//! moves bytes, against what a user would compare it with.
//!
//! - `push_per_commit`: a growing database mirrored to an in-memory
//!   object store, one push per commit; the bytes the process reads from
//!   its files (`rchar` of `/proc/self/io`) and the time of each push.
//!
//! `CKPTDB_BENCH_SCALE` multiplies the sizes; `CKPTDB_BENCH_ROUNDS` sets
//! the number of interleaved rounds (default 5). A filter argument runs
//! only the cases whose name contains it:
//! `cargo bench --features s3 --bench remote -- push_per_commit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ckptdb::remote::object_store::memory::InMemory;
use ckptdb::remote::{Mirror, Remote};
use ckptdb::{DType, Db, DbOptions};

// Scratch data goes to the system's temporary directory, not `support`'s.
#[allow(dead_code)]
mod support;
use support::{scale, tensor_bytes};

const MIB: usize = 1 << 20;

fn scaled(bytes: usize) -> usize {
    ((bytes as f64 * scale()) as usize).max(64 << 10) / 64 * 64
}

/// Bytes this process has read through `read`-like calls so far.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A database that grows by one step of `step_bytes` per commit, every
/// step kept, mirrored after each commit: what the push reads grows with
/// what it has to check.
fn push_per_commit() {
    let step_bytes = scaled(8 * MIB);
    let commits = 48u64;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open_with(
            dir.path().join("run.ckpt"),
            DbOptions::default().segment_size(256 << 20),
        )
        .unwrap(),
    );
    let remote = Remote::with_store(Arc::new(InMemory::new()), "s3://bench/run").unwrap();
    let mirror = Mirror::start(db.clone(), remote).unwrap();
    let mut rows = Vec::new();
    for s in 1..=commits {
        let bytes = tensor_bytes(step_bytes, s);
        let mut tx = db.begin_step(s).unwrap();
        tx.put_tensor_raw("w", DType::F32, &[(bytes.len() / 4) as u64], &bytes)
            .unwrap();
        tx.commit().unwrap();
        let (read, start) = (rchar(), Instant::now());
        mirror.wait_remote(s).unwrap();
        rows.push((s, rchar() - read, start.elapsed()));
    }
    mirror.flush().unwrap();
    println!(
        "push_per_commit: {commits} commits of {} MiB, every step kept",
        step_bytes / MIB
    );
    for &(s, read, t) in &rows {
        if s == 1 || s % 8 == 0 {
            println!(
                "  push after commit {s:>3}: read {:>8.1} MiB ({:.2}x the step), {:>9.3?}",
                read as f64 / MIB as f64,
                read as f64 / step_bytes as f64,
                t
            );
        }
    }
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let time: Duration = rows.iter().map(|r| r.2).sum();
    println!(
        "  all pushes: read {:.1} MiB for {:.1} MiB committed, {time:.3?}",
        total as f64 / MIB as f64,
        (step_bytes as u64 * commits) as f64 / MIB as f64
    );
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases: [(&str, fn()); 1] = [("push_per_commit", push_per_commit)];
    for (name, case) in cases {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            case();
        }
    }
}
