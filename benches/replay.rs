//! Replay table throughput against an in-memory `Vec` ring buffer measured
//! in the same run: push of CartPole rows, uniform and prioritized sampling
//! of 256-row batches from a full 1M-capacity table.
//!
//! Goals: push ≥ 2M rows/s and ≥ 0.5× the `Vec` ring; uniform sampling
//! ≥ 0.5× the `Vec` ring; prioritized within 5× of uniform.
//!
//! # What the push benchmarks measure
//!
//! Every full page is written to the log, so pushing for long writes
//! `row bytes × rows/s` to the file system without end. Once the kernel's
//! dirty-page limit is reached (a few GiB), writes are throttled to what the
//! disk can take, and a push benchmark on one ever-growing table would
//! measure the disk's sustained bandwidth (on a ~260 MB/s disk: ~175 ns per
//! 46-byte row, whatever the library does) — and, depending on how long
//! earlier benchmarks ran, a mix of both. So each push sample runs on a
//! fresh database that is deleted after it: unlinking discards its dirty
//! pages before they reach the disk, and the number is the library plus
//! the page cache. Sustained pushing is bounded by the disk: rows/s ≤ disk
//! write bandwidth / row bytes.

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use ckptdb::replay::{Field, ReplayOptions, ReplayTable, Schema};
use ckptdb::Db;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

const CAPACITY: usize = 1_000_000;
const PAGE: u64 = 4096;
const BATCH: usize = 256;

#[derive(Clone, Copy, Default)]
struct Transition {
    obs: [f32; 4],
    action: i64,
    reward: f32,
    next_obs: [f32; 4],
    terminated: bool,
    truncated: bool,
}

fn transition(i: u64) -> Transition {
    let x = i as f32;
    Transition {
        obs: [x, x, x, x],
        action: (i % 2) as i64,
        reward: 1.0,
        next_obs: [x, x, x, x],
        terminated: i.is_multiple_of(200),
        truncated: false,
    }
}

/// `t` as a packed row: the fields' little-endian bytes in schema order.
fn packed(t: &Transition) -> [u8; 46] {
    let mut row = [0u8; 46];
    row[0..16].copy_from_slice(bytemuck::cast_slice(&t.obs));
    row[16..24].copy_from_slice(&t.action.to_le_bytes());
    row[24..28].copy_from_slice(&t.reward.to_le_bytes());
    row[28..44].copy_from_slice(bytemuck::cast_slice(&t.next_obs));
    row[44] = t.terminated as u8;
    row[45] = t.truncated as u8;
    row
}

/// The baseline: a ring of structs in a `Vec`, as a trainer keeps it.
struct VecRing {
    rows: Vec<Transition>,
    next: usize,
    len: usize,
}

/// What a sampled batch is in the baseline: one array per field.
#[allow(dead_code)] // only handed to black_box
struct VecBatch {
    obs: Array2<f32>,
    action: Array1<i64>,
    reward: Array1<f32>,
    next_obs: Array2<f32>,
    terminated: Array1<bool>,
    truncated: Array1<bool>,
}

impl VecRing {
    fn new(capacity: usize) -> VecRing {
        VecRing {
            rows: Vec::with_capacity(capacity),
            next: 0,
            len: 0,
        }
    }

    fn push(&mut self, t: Transition) {
        if self.rows.len() < self.rows.capacity() {
            self.rows.push(t);
        } else {
            self.rows[self.next] = t;
        }
        self.next = (self.next + 1) % self.rows.capacity();
        self.len = self.rows.len();
    }

    fn sample<R: Rng>(&self, rng: &mut R, n: usize) -> VecBatch {
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..self.len)).collect();
        let mut obs = Vec::with_capacity(n * 4);
        let mut next_obs = Vec::with_capacity(n * 4);
        let mut action = Vec::with_capacity(n);
        let mut reward = Vec::with_capacity(n);
        let mut terminated = Vec::with_capacity(n);
        let mut truncated = Vec::with_capacity(n);
        for &i in &idx {
            let t = &self.rows[i];
            obs.extend_from_slice(&t.obs);
            next_obs.extend_from_slice(&t.next_obs);
            action.push(t.action);
            reward.push(t.reward);
            terminated.push(t.terminated);
            truncated.push(t.truncated);
        }
        VecBatch {
            obs: Array2::from_shape_vec((n, 4), obs).unwrap(),
            action: Array1::from(action),
            reward: Array1::from(reward),
            next_obs: Array2::from_shape_vec((n, 4), next_obs).unwrap(),
            terminated: Array1::from(terminated),
            truncated: Array1::from(truncated),
        }
    }
}

fn schema() -> Schema {
    Schema::parse(
        "obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[], truncated: bool[]",
    )
    .unwrap()
}

fn push(table: &mut ReplayTable<'_>, t: &Transition) {
    table
        .push(&[
            Field::vector("obs", &t.obs),
            Field::scalar("action", &t.action),
            Field::scalar("reward", &t.reward),
            Field::vector("next_obs", &t.next_obs),
            Field::scalar("terminated", &t.terminated),
            Field::scalar("truncated", &t.truncated),
        ])
        .unwrap();
}

/// The time `run(table, iters)` takes on a replay table of a fresh
/// database, which is deleted afterwards (see the module documentation).
fn on_fresh_table(iters: u64, run: impl FnOnce(&mut ReplayTable<'_>, u64)) -> Duration {
    on_fresh(ReplayOptions::new(CAPACITY as u64, PAGE), iters, run)
}

/// [`on_fresh_table`] with the table's options.
fn on_fresh(
    opts: ReplayOptions,
    iters: u64,
    run: impl FnOnce(&mut ReplayTable<'_>, u64),
) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("bench.ckpt")).unwrap();
    let mut table = db.replay_table("buf", &schema(), opts).unwrap();
    let start = Instant::now();
    run(&mut table, iters);
    start.elapsed()
}

/// Transition `i` computed in registers from an opaque step number.
#[inline(always)]
fn in_registers(i: u64) -> Transition {
    transition(black_box(i))
}

/// Transition `i` read back from memory, where something else left it.
#[inline(always)]
fn from_memory(i: u64) -> Transition {
    black_box(transition(i))
}

/// Pushes of packed rows of the transitions `make` hands over.
fn bench_packed(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    opts: ReplayOptions,
    make: impl Fn(u64) -> Transition + Copy,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            on_fresh(opts, iters, |table, n| {
                for i in 0..n {
                    table.push_bytes(&packed(&make(i))).unwrap();
                }
            })
        })
    });
}

fn bench_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(3));
    // Two ways a producer hands a transition over. Built from an opaque
    // step number, it is computed in registers: the ring's push is one
    // 56-byte store and a modulo, its best case. Read back from memory
    // (`black_box` of the value), it is what an environment's output is;
    // the ring's push then also waits for the value's stores.
    let mut ring = VecRing::new(CAPACITY);
    let mut i = 0u64;
    g.bench_function("vec_ring", |b| {
        b.iter(|| {
            ring.push(in_registers(i));
            i += 1;
        })
    });
    g.bench_function("vec_ring_from_memory", |b| {
        b.iter(|| {
            ring.push(from_memory(i));
            i += 1;
        })
    });
    drop(ring);
    // What a caller pays to keep the rows in a file itself rather than on
    // the heap: the same packed rows gathered in 2 MiB buffers and written
    // to a fresh file with `pwrite` (no sync), all on the pushing thread.
    g.bench_function("file_write", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let file = std::fs::File::create(dir.path().join("rows")).unwrap();
            let mut buf = vec![0u8; 2 << 20];
            let (mut len, mut offset) = (0, 0);
            let start = Instant::now();
            for i in 0..iters {
                let row = packed(&in_registers(i));
                if len + row.len() > buf.len() {
                    file.write_all_at(&buf[..len], offset).unwrap();
                    offset += len as u64;
                    len = 0;
                }
                buf[len..len + row.len()].copy_from_slice(&row);
                len += row.len();
            }
            file.write_all_at(&buf[..len], offset).unwrap();
            start.elapsed()
        })
    });
    g.bench_function("ckptdb", |b| {
        b.iter_custom(|iters| {
            on_fresh_table(iters, |table, n| {
                for i in 0..n {
                    push(table, &in_registers(i));
                }
            })
        })
    });
    // Packed rows (schema order, no padding), as a caller with its own
    // `#[repr(C, packed)]` transition type pushes them.
    let uniform = ReplayOptions::new(CAPACITY as u64, PAGE);
    bench_packed(&mut g, "ckptdb_packed", uniform, in_registers);
    bench_packed(&mut g, "ckptdb_packed_from_memory", uniform, from_memory);
    // A prioritized table also gives each new row the maximum priority in
    // its sum-tree.
    let prioritized = uniform.prioritized(0.6);
    bench_packed(
        &mut g,
        "ckptdb_packed_prioritized",
        prioritized,
        in_registers,
    );
    // The same rows pushed 1024 at a time, as a vectorized environment
    // produces them.
    let rows: Vec<Transition> = (0..1024).map(transition).collect();
    let obs: Vec<f32> = rows.iter().flat_map(|t| t.obs).collect();
    let next_obs: Vec<f32> = rows.iter().flat_map(|t| t.next_obs).collect();
    let action: Vec<i64> = rows.iter().map(|t| t.action).collect();
    let reward: Vec<f32> = rows.iter().map(|t| t.reward).collect();
    let terminated: Vec<bool> = rows.iter().map(|t| t.terminated).collect();
    let truncated: Vec<bool> = rows.iter().map(|t| t.truncated).collect();
    g.throughput(Throughput::Elements(1024));
    g.bench_function("ckptdb_batch_1024", |b| {
        b.iter_custom(|iters| {
            on_fresh_table(iters, |table, n| {
                for _ in 0..n {
                    table
                        .push_batch(&[
                            Field::rows("obs", 1024, &obs, &[4]),
                            Field::vector("action", &action),
                            Field::vector("reward", &reward),
                            Field::rows("next_obs", 1024, &next_obs, &[4]),
                            Field::vector("terminated", &terminated),
                            Field::vector("truncated", &truncated),
                        ])
                        .unwrap()
                }
            })
        })
    });
    g.finish();
}

fn bench_sample(c: &mut Criterion) {
    let mut g = c.benchmark_group("sample_256_of_1m");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(50);
    let mut ring = VecRing::new(CAPACITY);
    for i in 0..CAPACITY as u64 {
        ring.push(transition(i));
    }
    let mut rng = StdRng::seed_from_u64(1);
    g.bench_function("vec_ring_uniform", |b| {
        b.iter(|| black_box(ring.sample(&mut rng, BATCH)))
    });
    drop(ring);

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("bench.ckpt")).unwrap();
    let opts = ReplayOptions::new(CAPACITY as u64, PAGE).prioritized(0.6);
    let mut table = db.replay_table("buf", &schema(), opts).unwrap();
    for i in 0..CAPACITY as u64 {
        push(&mut table, &transition(i));
    }
    // Spread the priorities so the sum-tree is not flat.
    let batch = table.sample_uniform_distinct(&mut rng, 100_000).unwrap();
    let prio: Vec<f64> = (0..batch.len()).map(|k| 0.1 + (k % 97) as f64).collect();
    table.update_priorities(batch.indices(), &prio).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut table).unwrap();
    tx.commit().unwrap();

    g.bench_function("ckptdb_uniform", |b| {
        b.iter(|| black_box(table.sample_uniform(&mut rng, BATCH).unwrap()))
    });
    let view = db.latest().unwrap().unwrap().replay("buf").unwrap();
    g.bench_function("ckptdb_view_uniform", |b| {
        b.iter(|| black_box(view.sample_uniform(&mut rng, BATCH).unwrap()))
    });
    g.bench_function("ckptdb_prioritized", |b| {
        b.iter(|| black_box(table.sample_prioritized(&mut rng, BATCH, 0.4).unwrap()))
    });
    let fixed = table.sample_uniform(&mut rng, BATCH).unwrap();
    let p = vec![1.5; fixed.len()];
    g.bench_function("ckptdb_update_priorities", |b| {
        b.iter(|| table.update_priorities(fixed.indices(), &p).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_push, bench_sample);
criterion_main!(benches);
