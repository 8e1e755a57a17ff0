//! Helpers the benchmark binaries share: the size scale, deterministic
//! tensor contents, a scratch directory and interleaved rounds. Each bench
//! uses part of it.
#![allow(dead_code)]

use std::time::Duration;

/// `CKPTDB_BENCH_SCALE` (1.0 by default): every size is multiplied by it.
pub fn scale() -> f64 {
    std::env::var("CKPTDB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Deterministic tensor bytes; `salt` makes every call's content distinct
/// so dedup never applies where a benchmark measures full writes.
pub fn tensor_bytes(len: usize, salt: u64) -> Vec<u8> {
    let v: Vec<f32> = (0..len / 4)
        .map(|i| ((i as u64).wrapping_mul(2654435761).wrapping_add(salt) % 10007) as f32 * 1e-3)
        .collect();
    bytemuck::cast_slice(&v).to_vec()
}

/// A scratch directory under `CKPTDB_BENCH_DIR` (or `.`), else the system's.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("CKPTDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .or_else(|_| tempfile::tempdir())
        .expect("scratch directory")
}

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs every contender once untimed (as round `usize::MAX`: it warms the
/// page cache, the allocator, a server), then `CKPTDB_BENCH_ROUNDS`
/// (default `default_rounds`) interleaved rounds: each round runs every
/// contender once, in the same order, so a burst of load on a shared
/// machine hits all of them alike. Prints each contender's minimum and
/// median and their ratios to the first contender's, over the same rounds.
pub fn rounds(
    case: &str,
    default_rounds: usize,
    contenders: &mut [(&str, &mut dyn FnMut(usize) -> Duration)],
) {
    let n: usize = env_or("CKPTDB_BENCH_ROUNDS", default_rounds).max(1);
    for (_, f) in contenders.iter_mut() {
        f(usize::MAX);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for r in 0..n {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            times[i].push(f(r));
        }
    }
    for t in &mut times {
        t.sort();
    }
    let min = |i: usize| times[i][0];
    let med = |i: usize| times[i][n / 2];
    let width = contenders
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    println!("{case} ({n} interleaved rounds)");
    for (i, (name, _)) in contenders.iter().enumerate() {
        println!(
            "  {name:<width$} min {:>10.3?}  median {:>10.3?}  ratio to {}: min {:.2}x  median {:.2}x",
            min(i),
            med(i),
            contenders[0].0,
            min(i).as_secs_f64() / min(0).as_secs_f64(),
            med(i).as_secs_f64() / med(0).as_secs_f64(),
        );
    }
}
