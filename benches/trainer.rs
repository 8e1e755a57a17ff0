//! Trainer-layer benchmarks, each reported against a baseline measured in
//! the same run.
//!
//! - `async_stall`: how long `save_async` blocks the training thread for a
//!   model of `MODEL` bytes, next to a plain memcpy (`to_vec`) of the same
//!   bytes. The goal is a ratio of at most 1.5. Only the handover is timed:
//!   the previous commit is flushed outside the timer.
//! - `disk_bound` (not timed): commits with keep-last-3 and reports the
//!   largest ratio of segment bytes on disk to `3 × live + one segment`
//!   (the goal: below 1).
//!
//! `CKPTDB_BENCH_SCALE` (a float, default 1.0) scales every size: at 1.0 the
//! stall benchmark hands over 1 GiB and the disk benchmark makes 1,000
//! commits of a 100 MiB model (100 GB of writes); `CKPTDB_BENCH_SCALE=0.1`
//! is a quick run. `CKPTDB_BENCH_DISK_SCALE` overrides the scale of the disk
//! benchmark alone.

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ckptdb::trainer::{CheckpointManager, CheckpointOptions, PendingStep};
use ckptdb::{Db, DbOptions};
use criterion::{Criterion, SamplingMode};
use ndarray::Array1;

fn scale() -> f64 {
    scale_from("CKPTDB_BENCH_SCALE").unwrap_or(1.0)
}

fn scale_from(var: &str) -> Option<f64> {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
}

/// Tensors of the model: 8 of equal size.
const TENSORS: usize = 8;

fn model(bytes: u64) -> Vec<Array1<f32>> {
    let per = (bytes / TENSORS as u64 / 4).max(1) as usize;
    (0..TENSORS)
        .map(|t| Array1::from_iter((0..per).map(|i| (i + t) as f32)))
        .collect()
}

/// Total time and iterations, to print the ratio at the end.
#[derive(Default)]
struct Totals {
    time: Duration,
    iters: u64,
}

impl Totals {
    fn mean(&self) -> f64 {
        self.time.as_secs_f64() / self.iters.max(1) as f64
    }
}

fn async_stall(c: &mut Criterion) {
    let bytes = ((1u64 << 30) as f64 * scale()) as u64;
    let mut weights = model(bytes);
    let dir = tempfile::tempdir().expect("tempdir");
    let m = CheckpointManager::open(
        dir.path().join("run.ckpt"),
        CheckpointOptions::new().keep_last(1),
    )
    .expect("open");
    let memcpy = Arc::new(Mutex::new(Totals::default()));
    let stall = Arc::new(Mutex::new(Totals::default()));

    let mut g = c.benchmark_group("async_stall");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(criterion::Throughput::Bytes(bytes));
    let totals = memcpy.clone();
    g.bench_function("memcpy_baseline", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let copies: Vec<Vec<f32>> = weights
                    .iter()
                    .map(|w| black_box(w.as_slice().unwrap_or(&[]).to_vec()))
                    .collect();
                spent += t.elapsed();
                drop(black_box(copies));
            }
            let mut tot = totals.lock().unwrap_or_else(|e| e.into_inner());
            tot.time += spent;
            tot.iters += iters;
            spent
        })
    });
    let totals = stall.clone();
    let mut step = 0u64;
    g.bench_function("save_async", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                // The previous commit finishes outside the timer.
                m.flush().expect("flush");
                step += 1;
                // A new model every step, so every commit really writes.
                weights[0][0] = step as f32;
                let t = Instant::now();
                let mut p = PendingStep::new();
                for (i, w) in weights.iter().enumerate() {
                    p.put_tensor(&format!("model/layer{i}"), w).expect("put");
                }
                p.put_metric("loss", 1.0 / step as f64).expect("metric");
                m.save_async(step, p).expect("save_async");
                spent += t.elapsed();
            }
            let mut tot = totals.lock().unwrap_or_else(|e| e.into_inner());
            tot.time += spent;
            tot.iters += iters;
            spent
        })
    });
    g.finish();
    m.flush().expect("flush");
    let base = memcpy.lock().unwrap_or_else(|e| e.into_inner()).mean();
    let ours = stall.lock().unwrap_or_else(|e| e.into_inner()).mean();
    println!(
        "async_stall: {:.1} MiB, memcpy {:.1} ms, save_async {:.1} ms, ratio {:.2} (goal <= 1.5)",
        bytes as f64 / (1 << 20) as f64,
        base * 1e3,
        ours * 1e3,
        ours / base
    );
}

fn segment_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path.join("log"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn disk_bound() {
    let s = scale_from("CKPTDB_BENCH_DISK_SCALE").unwrap_or_else(scale);
    let bytes = ((100u64 << 20) as f64 * s) as u64;
    let commits = ((1000.0 * s) as u64).max(10);
    let segment = DbOptions::default().segment_size_bytes();
    let segment = ((segment as f64 * s) as u64).max(4096);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.ckpt");
    let db = Db::open_with(&path, DbOptions::default().segment_size(segment)).expect("open");
    let m = CheckpointManager::new(Arc::new(db), CheckpointOptions::new().keep_last(3));
    let mut weights = model(bytes);
    let mut worst: f64 = 0.0;
    for step in 1..=commits {
        // Every byte changes: nothing dedups, every commit writes the model.
        for w in &mut weights {
            w.mapv_inplace(|x| x + 1.0);
        }
        m.save(step, |tx| {
            for (i, w) in weights.iter().enumerate() {
                tx.put_tensor(&format!("model/layer{i}"), w)?;
            }
            Ok(())
        })
        .expect("save");
        let live: u64 = m.db().step_infos().iter().map(|i| i.logical_bytes).sum();
        let bound = 3 * live + segment;
        worst = worst.max(segment_bytes(&path) as f64 / bound as f64);
    }
    println!(
        "disk_bound: {commits} commits of {:.1} MiB, keep-last-3, segment {:.1} MiB: \
         worst disk / (3 x live + one segment) = {worst:.2} (goal < 1)",
        bytes as f64 / (1 << 20) as f64,
        segment as f64 / (1 << 20) as f64
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    async_stall(&mut c);
    c.final_summary();
    disk_bound();
}
