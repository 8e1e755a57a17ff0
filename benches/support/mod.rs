//! Helpers the benchmark binaries share: the size scale, deterministic
//! tensor contents and a scratch directory.

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
