//! `ckptdb report` against `ckptdb verify` of the same database: 50 steps
//! of 256 MiB (40 f32 tensors of 6.4 MiB), 10% of the tensors changing per
//! step, so about 1.5 GiB is stored once and shared by deduplication (sizes
//! × `CKPTDB_BENCH_SCALE`). Both commands read each stored byte; the goal
//! is a report in at most 1.2× the time of one verify. Interleaved rounds
//! of the two built binaries, min and median, after one warm-up run of
//! each (the database then sits in the page cache for both).
//!
//! The database is written into a temporary directory and removed after.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckptdb::ndarray::Array1;
use ckptdb::Db;

const STEPS: u64 = 50;
const TENSORS: usize = 40;
const CHANGED: usize = 4;
const ROUNDS: usize = 5;

fn scale() -> f64 {
    std::env::var("CKPTDB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn values(step: u64, tensor: usize, len: usize) -> Array1<f32> {
    let k = step.wrapping_mul(0x9E37_79B9) ^ tensor as u64;
    Array1::from_iter((0..len as u64).map(|i| ((i ^ k) % 100_003) as f32 * 1e-3))
}

fn build(path: &Path, len: usize) -> u64 {
    let db = Db::open(path).unwrap();
    let mut stored = 0u64;
    for step in 1..=STEPS {
        let mut tx = if step == 1 {
            db.begin_step(step).unwrap()
        } else {
            db.begin_step_from(step, step - 1).unwrap()
        };
        let changed: Vec<usize> = if step == 1 {
            (0..TENSORS).collect()
        } else {
            (0..CHANGED)
                .map(|j| (step as usize * CHANGED + j) % TENSORS)
                .collect()
        };
        for t in changed {
            tx.put_tensor(&format!("layer{t:02}/w"), &values(step, t, len))
                .unwrap();
            stored += len as u64 * 4;
        }
        tx.put_metric("loss", 1.0 / step as f64).unwrap();
        tx.commit().unwrap();
    }
    stored
}

fn run(args: &[&std::ffi::OsStr]) -> Duration {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ckptdb"))
        .args(args)
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "ckptdb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn min_median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    let len = ((256 << 20) as f64 * scale() / 4.0 / TENSORS as f64) as usize;
    let dir = tempfile::tempdir().unwrap();
    // `CKPTDB_BENCH_KEEP=DIR` writes the database there and leaves it, for
    // profiling the two commands by hand.
    let path = match std::env::var_os("CKPTDB_BENCH_KEEP") {
        Some(keep) => Path::new(&keep).join("run.ckpt"),
        None => dir.path().join("run.ckpt"),
    };
    let t = Instant::now();
    let stored = build(&path, len.max(1));
    println!(
        "built {STEPS} steps of {:.1} MiB, {:.2} GiB stored, in {:.1?}",
        (len * 4 * TENSORS) as f64 / (1 << 20) as f64,
        stored as f64 / (1u64 << 30) as f64,
        t.elapsed()
    );
    let html = dir.path().join("report.html");
    let p = path.as_os_str();
    let verify = |_: ()| run(&["verify".as_ref(), p]);
    let report = |_: ()| run(&["report".as_ref(), p, "-o".as_ref(), html.as_os_str()]);
    verify(());
    report(());
    let (mut tv, mut tr) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        tv.push(verify(()));
        tr.push(report(()));
    }
    let ratios: Vec<f64> = tv
        .iter()
        .zip(&tr)
        .map(|(v, r)| r.as_secs_f64() / v.as_secs_f64())
        .collect();
    let (vmin, vmed) = min_median(tv);
    let (rmin, rmed) = min_median(tr);
    println!("verify: min {vmin:.2?}, median {vmed:.2?} ({ROUNDS} rounds)");
    println!("report: min {rmin:.2?}, median {rmed:.2?}");
    println!(
        "report / verify: {:.2}x of the minima, {:.2}x of the medians, per round {:?}",
        rmin.as_secs_f64() / vmin.as_secs_f64(),
        rmed.as_secs_f64() / vmed.as_secs_f64(),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>()
    );
}
