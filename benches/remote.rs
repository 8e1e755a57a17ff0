//! The remote (feature `s3`): what a live mirror costs and how fast it
//! moves bytes, against what a user would compare it with. The object
//! store is moto's S3 server on loopback, started as the tests start it
//! (`scripts/moto.sh` installs it); without one the moto cases are skipped.
//!
//! - `push_per_commit`: a growing database mirrored to an in-memory
//!   object store, one push per commit; the bytes the process reads from
//!   its files (`rchar` of `/proc/self/io`) and the time of each push.
//! - `mirror_throughput`: a database holding one 1 GiB step mirrored to
//!   a fresh location (start to `flush`). Baseline: the same bytes from
//!   memory as one plain `object_store` multipart upload with the
//!   mirror's part size.
//! - `commit_cost`: the training thread's time in `begin_step` .. commit
//!   of 12 steps of 32 MiB, with 200 ms of "training" between commits
//!   (`CKPTDB_BENCH_THINK_MS`), mirrored (`Mirror::commit`, local
//!   durability) to moto and to an in-memory store, and not.
//! - `open_remote`: `Remote::open`, `open_db` from an empty cache and a
//!   checked view of the newest step's first tensor (4 MiB), for a
//!   256 MiB and a 2 GiB database.
//!
//! Rounds are interleaved (every contender once per round); the report
//! is each contender's minimum and median and their ratios.
//! `CKPTDB_BENCH_SCALE` multiplies the sizes; `CKPTDB_BENCH_ROUNDS` sets
//! the number of rounds (default 5). A filter argument runs only the
//! cases whose name contains it:
//! `cargo bench --features s3 --bench remote -- mirror_throughput`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ckptdb::remote::object_store::aws::AmazonS3;
use ckptdb::remote::object_store::memory::InMemory;
use ckptdb::remote::object_store::path::Path as ObjectPath;
use ckptdb::remote::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ckptdb::remote::{Mirror, Remote};
use ckptdb::{DType, Db, DbOptions};

// Scratch data goes to the system's temporary directory, not `support`'s.
mod support;
use support::{scale, tensor_bytes};

#[path = "../tests/s3_support/mod.rs"]
mod s3_support;
use s3_support::Moto;

/// The mirror's part size (`PART_BYTES` in `src/remote/mod.rs`).
const PART: usize = 16 << 20;
const BUCKET: &str = "bench";

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

struct Server {
    moto: Moto,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Option<Server> {
        let moto = Moto::start()?;
        moto.create_bucket(BUCKET);
        let store = moto.store(BUCKET);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Server {
            moto,
            store,
            runtime,
        })
    }

    fn remote(&self, prefix: &str) -> Remote {
        let options = self
            .moto
            .options()
            .request_timeout(Duration::from_secs(600));
        Remote::open(&format!("s3://{BUCKET}/{prefix}"), options).unwrap()
    }

    /// Deletes every object under `prefix`, so the server's memory holds
    /// one round's data at a time.
    fn clear(&self, prefix: &str) {
        let mut dirs = vec![ObjectPath::from(prefix)];
        while let Some(dir) = dirs.pop() {
            let listed = self
                .runtime
                .block_on(self.store.list_with_delimiter(Some(&dir)))
                .unwrap();
            for o in listed.objects {
                self.runtime
                    .block_on(self.store.delete(&o.location))
                    .unwrap();
            }
            dirs.extend(listed.common_prefixes);
        }
    }

    /// One plain multipart upload of `bytes` in parts of `PART`.
    fn put_multipart(&self, name: &str, bytes: &[u8]) {
        self.runtime.block_on(async {
            let mut upload = self
                .store
                .put_multipart(&ObjectPath::from(name))
                .await
                .unwrap();
            for part in bytes.chunks(PART) {
                upload
                    .put_part(PutPayload::from(part.to_vec()))
                    .await
                    .unwrap();
            }
            upload.complete().await.unwrap();
        });
    }
}

/// Commits step `step` of `tensors` tensors of `each` bytes, named
/// `t000`...; content differs by `salt`, so dedup never applies.
fn commit_step(db: &Db, step: u64, tensors: usize, each: usize, salt: u64) {
    let mut tx = db.begin_step(step).unwrap();
    for i in 0..tensors {
        let bytes = tensor_bytes(each, salt * 1000 + i as u64);
        tx.put_tensor_raw(
            &format!("t{i:03}"),
            DType::F32,
            &[(each / 4) as u64],
            &bytes,
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn mirror_throughput(server: &Server) {
    let each = scaled(64 * MIB);
    let tensors = 16;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = Db::open_with(&path, DbOptions::default().segment_size(4 << 30)).unwrap();
        commit_step(&db, 1, tensors, each, 1);
    }
    let log = std::fs::read_dir(path.join("log"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // The baseline sends the segment's bytes from memory.
    let bytes = std::fs::read(&log).unwrap();
    let reader = Arc::new(Db::open_read_only(&path).unwrap());
    println!(
        "mirror_throughput: one step of {tensors} tensors of {} MiB, a segment of {:.1} MiB",
        each / MIB,
        bytes.len() as f64 / MIB as f64
    );
    let mut mirror = |r: usize| {
        let prefix = format!("mirror-{r}");
        let start = Instant::now();
        let m = Mirror::start(reader.clone(), server.remote(&prefix)).unwrap();
        m.flush().unwrap();
        let t = start.elapsed();
        drop(m);
        server.clear(&prefix);
        t
    };
    let mut plain = |r: usize| {
        let prefix = format!("plain-{r}");
        let start = Instant::now();
        server.put_multipart(&format!("{prefix}/segment"), &bytes);
        let t = start.elapsed();
        server.clear(&prefix);
        t
    };
    support::rounds(
        "mirror_throughput",
        5,
        &mut [
            ("object_store multipart put", &mut plain),
            ("Mirror start + flush", &mut mirror),
        ],
    );
    let mib = bytes.len() as f64 / MIB as f64;
    println!("  ({mib:.0} MiB each; MiB/s = {mib:.0} / seconds)");
}

fn commit_cost(server: &Server) {
    let each = scaled(4 * MIB);
    let tensors = 8;
    let steps = 12u64;
    let think = Duration::from_millis(support::env_or("CKPTDB_BENCH_THINK_MS", 200));
    #[derive(Clone, Copy, PartialEq)]
    enum To {
        Nowhere,
        Moto,
        Memory,
    }
    let run = |r: usize, to: To| -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path().join("run.ckpt")).unwrap());
        let prefix = format!("commit-{r}");
        let remote = match to {
            To::Nowhere => None,
            To::Moto => Some(server.remote(&prefix)),
            To::Memory => {
                Some(Remote::with_store(Arc::new(InMemory::new()), "s3://memory/run").unwrap())
            }
        };
        let mirror = remote.map(|remote| Mirror::start(db.clone(), remote).unwrap());
        let mut spent = Duration::ZERO;
        let data: Vec<Vec<u8>> = (0..tensors)
            .map(|i| tensor_bytes(each, r as u64 * 7919 + i as u64))
            .collect();
        for s in 1..=steps {
            // One element differs per step: every tensor is new bytes.
            let step_data: Vec<Vec<u8>> = data
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    t[..8].copy_from_slice(&s.to_le_bytes());
                    t
                })
                .collect();
            let start = Instant::now();
            let mut tx = db.begin_step(s).unwrap();
            for (i, t) in step_data.iter().enumerate() {
                tx.put_tensor_raw(&format!("t{i:03}"), DType::F32, &[(each / 4) as u64], t)
                    .unwrap();
            }
            match &mirror {
                Some(m) => drop(m.commit(tx).unwrap()),
                None => drop(tx.commit().unwrap()),
            }
            spent += start.elapsed();
            std::thread::sleep(think);
        }
        if let Some(m) = mirror {
            m.flush().unwrap();
            drop(m);
            if to == To::Moto {
                server.clear(&prefix);
            }
        }
        spent
    };
    println!(
        "commit_cost: {steps} commits of {tensors} tensors of {} MiB, {think:?} between commits",
        each / MIB
    );
    support::rounds(
        "commit_cost",
        5,
        &mut [
            ("unmirrored commit", &mut |r| run(r, To::Nowhere)),
            ("mirrored to moto (local durability)", &mut |r| {
                run(r, To::Moto)
            }),
            ("mirrored to an in-memory store", &mut |r| {
                run(r, To::Memory)
            }),
        ],
    );
}

/// A database of about `total` bytes: filler steps, then a newest step
/// whose first tensor is `first` bytes.
fn sized_db(path: &Path, total: usize, first: usize) {
    let db = Db::open(path).unwrap();
    let each = scaled(64 * MIB);
    let fill = (total.saturating_sub(first) / each).max(1);
    for s in 0..fill as u64 {
        commit_step(&db, s, 1, each, s + 100);
    }
    let mut tx = db.begin_step_from_latest(fill as u64).unwrap();
    let bytes = tensor_bytes(first, 7);
    tx.put_tensor_raw("first", DType::F32, &[(first / 4) as u64], &bytes)
        .unwrap();
    tx.commit().unwrap();
}

fn open_remote(server: &Server) {
    let first = scaled(4 * MIB);
    let (small, large) = (scaled(256 * MIB), scaled(2048 * MIB));
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("small", small), ("large", large)] {
        let path = dir.path().join(format!("{name}.ckpt"));
        sized_db(&path, size, first);
        server.remote(name).push(&path).unwrap();
    }
    let open = |name: &str, r: usize| -> Duration {
        let cache = dir.path().join(format!("cache-{name}-{r}"));
        let start = Instant::now();
        let remote = server.remote(name);
        let db = remote.open_db(&cache).unwrap();
        let snap = db.latest().unwrap().unwrap();
        let t = snap.tensor("first").unwrap();
        let sum: f32 = t.view::<f32>().unwrap().iter().sum();
        let elapsed = start.elapsed();
        std::hint::black_box(sum);
        drop((snap, db));
        std::fs::remove_dir_all(&cache).unwrap();
        elapsed
    };
    println!(
        "open_remote: first tensor {} MiB, databases of {} MiB and {} MiB",
        first / MIB,
        small / MIB,
        large / MIB
    );
    support::rounds(
        "open_remote",
        5,
        &mut [
            ("256 MiB database", &mut |r| open("small", r)),
            ("2 GiB database", &mut |r| open("large", r)),
        ],
    );
    server.clear("small");
    server.clear("large");
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wants("push_per_commit") {
        push_per_commit();
    }
    type Case = fn(&Server);
    let cases: [(&str, Case); 3] = [
        ("mirror_throughput", mirror_throughput),
        ("commit_cost", commit_cost),
        ("open_remote", open_remote),
    ];
    if !cases.iter().any(|(name, _)| wants(name)) {
        return;
    }
    let Some(server) = Server::start() else {
        return;
    };
    for (name, case) in cases {
        if wants(name) {
            case(&server);
        }
    }
}
