//! Storage benchmarks, each with its baseline in the same run:
//!
//! - `save`: commit 16 f32 tensors (1 GiB in all at full scale), durable,
//!   against raw `write` + `fdatasync` of the same bytes to one file (the
//!   hardware limit) and the `safetensors` crate's `serialize_to_file` +
//!   `fsync`.
//! - `small`: 10,000 tensors of 4 KiB, commit and open, against safetensors
//!   (over a `memmap2` map for the open). `benches/baselines.rs` compares
//!   the same cases, and loads with a sum of every element, in interleaved
//!   rounds.
//! - `open_view`: read-only open + tensor handle + unverified view for
//!   tensors of 1 MiB, 64 MiB and 4 GiB (flat in size), against reading the
//!   largest tensor; a checked first view against summing the tensor once.
//! - `full_read`: summing every f32 of a snapshot through views, against
//!   summing a raw map of the same bytes.
//! - `incremental`: a commit where 10% of the tensors changed, against a
//!   full commit.
//!
//! `CKPTDB_BENCH_SCALE` (default 1.0) multiplies every size, so the suite
//! runs in minutes on a small machine: `CKPTDB_BENCH_SCALE=0.0625 cargo bench
//! --bench storage`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ckptdb::{DType, Db};
use criterion::{criterion_group, BenchmarkId, Criterion};

mod support;
use support::{scale, scratch, tensor_bytes};

const MIB: usize = 1 << 20;

/// `n` bytes scaled, rounded to whole f32s (at least one).
fn scaled(n: usize) -> usize {
    (((n as f64 * scale()) as usize) / 4).max(1) * 4
}

/// Runs `f` `iters` times, each in a fresh scratch directory, and returns
/// the time spent inside `f` (creating and deleting directories is not
/// measured).
fn timed_in_fresh_dirs(iters: u64, mut f: impl FnMut(&Path) -> Duration) -> Duration {
    (0..iters).map(|_| f(scratch().path())).sum()
}

/// Times `work` alone.
fn timed(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

fn commit_tensors(db: &Db, step: u64, tensors: &[Vec<u8>]) {
    let mut tx = db.begin_step(step).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        tx.put_tensor_raw(
            &format!("layer{i:02}/weight"),
            DType::F32,
            &[(t.len() / 4) as u64],
            t,
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn raw_write_fsync(path: &Path, tensors: &[Vec<u8>]) {
    let mut f = File::create(path).unwrap();
    for t in tensors {
        f.write_all(t).unwrap();
    }
    f.sync_data().unwrap();
}

fn safetensors_write_fsync(path: &Path, tensors: &[Vec<u8>]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![t.len() / 4], t)
                    .unwrap();
            (format!("layer{i:02}/weight"), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
    File::open(path).unwrap().sync_all().unwrap();
}

fn save(c: &mut Criterion) {
    let tensors: Vec<Vec<u8>> = (0..16).map(|i| tensor_bytes(scaled(64 * MIB), i)).collect();
    let total: usize = tensors.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("save");
    g.sample_size(10)
        .throughput(criterion::Throughput::Bytes(total as u64));
    g.bench_function("raw_write_fsync", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_dirs(iters, |dir| {
                timed(|| raw_write_fsync(&dir.join("raw.bin"), &tensors))
            })
        })
    });
    g.bench_function("safetensors_fsync", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_dirs(iters, |dir| {
                timed(|| safetensors_write_fsync(&dir.join("model.safetensors"), &tensors))
            })
        })
    });
    g.bench_function("ckptdb_commit", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_dirs(iters, |dir| {
                let db = Db::open(dir.join("db")).unwrap();
                timed(|| commit_tensors(&db, 1, &tensors))
            })
        })
    });
    g.finish();
}

fn small(c: &mut Criterion) {
    let n = ((10_000.0 * scale().sqrt()) as usize).max(100);
    let tensors: Vec<Vec<u8>> = (0..n as u64).map(|i| tensor_bytes(4096, i)).collect();
    let mut g = c.benchmark_group("small");
    g.sample_size(10);
    g.bench_function("safetensors_commit", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_dirs(iters, |dir| {
                timed(|| safetensors_write_fsync(&dir.join("m.safetensors"), &tensors))
            })
        })
    });
    g.bench_function("ckptdb_commit", |b| {
        b.iter_custom(|iters| {
            timed_in_fresh_dirs(iters, |dir| {
                let db = Db::open(dir.join("db")).unwrap();
                timed(|| commit_tensors(&db, 1, &tensors))
            })
        })
    });
    let dir = scratch();
    let st_path = dir.path().join("m.safetensors");
    safetensors_write_fsync(&st_path, &tensors);
    let db_path = dir.path().join("db");
    commit_tensors(&Db::open(&db_path).unwrap(), 1, &tensors);
    g.bench_function("safetensors_open", |b| {
        b.iter(|| {
            // Mapped, as a user loading safetensors would (reading the file
            // first made this baseline slower than what users compare with).
            let file = File::open(&st_path).unwrap();
            // SAFETY: the file is private to this benchmark and never
            // modified while mapped.
            let bytes = unsafe { memmap2::Mmap::map(&file).unwrap() };
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut shapes = 0;
            for name in st.names() {
                shapes += st.tensor(name).unwrap().shape()[0];
            }
            shapes
        })
    });
    g.bench_function("ckptdb_open", |b| {
        b.iter(|| {
            let db = Db::open_read_only(&db_path).unwrap();
            let snap = db.latest().unwrap().unwrap();
            let mut shapes = 0;
            for key in snap.keys() {
                shapes += snap.tensor(key).unwrap().shape()[0];
            }
            shapes
        })
    });
    g.finish();
}

fn open_view(c: &mut Criterion) {
    let dir = scratch();
    let path = dir.path().join("db");
    let sizes = [
        ("1MiB", scaled(MIB)),
        ("64MiB", scaled(64 * MIB)),
        ("4GiB", scaled(4096 * MIB)),
    ];
    {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        for (name, len) in sizes {
            let bytes = tensor_bytes(len, len as u64);
            tx.put_tensor_raw(name, DType::F32, &[(len / 4) as u64], &bytes)
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let mut g = c.benchmark_group("open_view");
    g.sample_size(10);
    for (name, _) in sizes {
        g.bench_with_input(BenchmarkId::new("unverified", name), &name, |b, name| {
            b.iter(|| {
                let db = Db::open_read_only(&path).unwrap();
                let snap = db.latest().unwrap().unwrap();
                let t = snap.tensor(name).unwrap();
                t.view_unverified::<f32>().unwrap().len()
            })
        });
    }
    let big = sizes[2].0;
    g.bench_function("checked_first_view_4GiB", |b| {
        b.iter(|| {
            let db = Db::open_read_only(&path).unwrap();
            let snap = db.latest().unwrap().unwrap();
            let t = snap.tensor(big).unwrap();
            t.view::<f32>().unwrap().len()
        })
    });
    g.bench_function("sum_once_4GiB", |b| {
        let db = Db::open_read_only(&path).unwrap();
        let snap = db.latest().unwrap().unwrap();
        let t = snap.tensor(big).unwrap();
        let s = t.as_slice_unverified::<f32>().unwrap();
        b.iter(|| ndarray::ArrayView1::from(s).sum())
    });
    g.bench_function("read_whole_4GiB", |b| {
        // The segment holding the big tensor: the largest one.
        let seg = std::fs::read_dir(path.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        b.iter(|| std::fs::read(&seg).unwrap().len())
    });
    g.finish();
}

fn full_read(c: &mut Criterion) {
    let dir = scratch();
    let path = dir.path().join("db");
    let tensors: Vec<Vec<u8>> = (0..16)
        .map(|i| tensor_bytes(scaled(64 * MIB), 100 + i))
        .collect();
    commit_tensors(&Db::open(&path).unwrap(), 1, &tensors);
    let mut g = c.benchmark_group("full_read");
    g.sample_size(10);
    let db = Db::open_read_only(&path).unwrap();
    let snap = db.latest().unwrap().unwrap();
    g.bench_function("ckptdb_views", |b| {
        b.iter(|| {
            snap.keys()
                .map(|k| {
                    snap.tensor(k)
                        .unwrap()
                        .view_unverified::<f32>()
                        .unwrap()
                        .sum()
                })
                .sum::<f32>()
        })
    });
    let raw = dir.path().join("raw.bin");
    raw_write_fsync(&raw, &tensors);
    let file = File::open(&raw).unwrap();
    // SAFETY: the file is private to this benchmark and never modified
    // while mapped.
    let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
    g.bench_function("raw_mmap", |b| {
        b.iter(|| {
            // The same summation as through the views: ndarray's sum over
            // a slice of each tensor's bytes.
            map.chunks(tensors[0].len())
                .map(|c| ndarray::ArrayView1::from(bytemuck::cast_slice::<u8, f32>(c)).sum())
                .sum::<f32>()
        })
    });
    g.finish();
}

fn incremental(c: &mut Criterion) {
    let base: Vec<Vec<u8>> = (0..20)
        .map(|i| tensor_bytes(scaled(32 * MIB), 200 + i))
        .collect();
    let total: usize = base.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("incremental");
    g.sample_size(10);
    let mut report = None;
    // "full" commits every tensor anew; "ten_percent" starts from the parent
    // step and puts only the two changed tensors; "dedup" puts all twenty
    // again and lets content dedup find the eighteen unchanged ones.
    for (name, changed) in [("full", 20usize), ("ten_percent", 2), ("dedup", 2)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for it in 0..iters {
                    let dir = scratch();
                    let db = Db::open(dir.path().join("db")).unwrap();
                    commit_tensors(&db, 1, &base);
                    let fresh: Vec<Vec<u8>> = (0..changed)
                        .map(|i| tensor_bytes(base[i].len(), 1000 + it + i as u64))
                        .collect();
                    let start = Instant::now();
                    let mut tx = if name == "ten_percent" {
                        db.begin_step_from(2, 1).unwrap()
                    } else {
                        db.begin_step(2).unwrap()
                    };
                    let puts = if name == "ten_percent" {
                        changed
                    } else {
                        base.len()
                    };
                    for i in 0..puts {
                        let bytes = if i < changed { &fresh[i] } else { &base[i] };
                        tx.put_tensor_raw(
                            &format!("layer{i:02}/weight"),
                            DType::F32,
                            &[(bytes.len() / 4) as u64],
                            bytes,
                        )
                        .unwrap();
                    }
                    tx.commit().unwrap();
                    t += start.elapsed();
                    let written = db.step_infos()[1].new_bytes;
                    if name == "ten_percent" {
                        report = Some(written as f64 / total as f64);
                    }
                }
                t
            })
        });
    }
    g.finish();
    if let Some(r) = report {
        println!(
            "incremental: a 10%-changed commit wrote {:.3} of the full snapshot's bytes",
            r
        );
    }
}

criterion_group!(benches, save, small, open_view, full_read, incremental);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
