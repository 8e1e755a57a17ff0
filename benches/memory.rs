//! Peak memory of a save: commit 16 f32 tensors (1 GiB in all, ×
//! `CKPTDB_BENCH_SCALE`) and compare the process's peak resident set
//! (`VmHWM`) with the live tensor bytes. The target is at most 1.1×: the
//! commit writes payloads straight from the caller's buffers and keeps no
//! second copy of the model.
//!
//! Peak memory is not a timing, so this is a plain program rather than a
//! criterion benchmark: `cargo bench --bench memory`.

use ckptdb::{DType, Db};

/// The process's peak resident set, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let scale: f64 = std::env::var("CKPTDB_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let per_tensor = (((64u64 << 20) as f64 * scale) as usize / 4).max(1);
    let tensors: Vec<Vec<f32>> = (0..16u64)
        .map(|t| {
            (0..per_tensor)
                .map(|i| ((i as u64 * 31 + t) % 1009) as f32)
                .collect()
        })
        .collect();
    let live: u64 = tensors.iter().map(|t| (t.len() * 4) as u64).sum();
    let dir = tempfile::tempdir_in(".")
        .or_else(|_| tempfile::tempdir())
        .expect("scratch dir");
    let db = Db::open(dir.path().join("db")).expect("open");
    let before = peak_rss();
    let mut tx = db.begin_step(1).expect("begin");
    for (i, t) in tensors.iter().enumerate() {
        tx.put_tensor_raw(
            &format!("layer{i:02}/weight"),
            DType::F32,
            &[t.len() as u64],
            bytemuck::cast_slice(t),
        )
        .expect("put");
    }
    tx.commit().expect("commit");
    let after = peak_rss();
    println!(
        "memory/save: live tensors {} MiB, peak RSS {} MiB before the save and {} MiB after: {:.3}x the live bytes (target <= 1.1x)",
        live >> 20,
        before >> 20,
        after >> 20,
        after as f64 / live as f64
    );
}
