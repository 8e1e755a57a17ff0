//! ckptdb against what a user would compare it with, in interleaved rounds.
//!
//! Every round runs each contender once, in the same order, so a burst of
//! load on a shared machine hits all of them alike; the report is each
//! contender's minimum and median and its ratio to the baseline's, over
//! the same rounds.
//!
//! - `read_small`: read-only open, a view of each of 10,000 tensors of
//!   4 KiB, and the sum of every element. Baseline: the `safetensors`
//!   crate's `SafeTensors::deserialize` over a `memmap2` map of its file.
//!   Also: the sum over a raw map of the same bytes (no format at all),
//!   ckptdb unverified (`view_unverified`) and checked (`view`, the first
//!   access in each round's fresh handle checks the crc32).
//! - `read_large`: the same for 16 tensors of 64 MiB (1 GiB).
//! - `save_small` / `save_large`: a durable save of the same tensors.
//!   Baselines: `safetensors::serialize_to_file` followed by the syncs
//!   ckptdb does on a commit (`fdatasync` of the file and an fsync of its
//!   new directory entry), and a raw `write` + `fdatasync` of the bytes.
//!
//! `CKPTDB_BENCH_SCALE` multiplies the sizes (as in `storage`);
//! `CKPTDB_BENCH_ROUNDS` sets the number of rounds (default 7). A filter
//! argument runs only the cases whose name contains it:
//! `cargo bench --bench baselines -- read_small`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ckptdb::{DType, Db};

mod support;
use support::{scale, scratch, tensor_bytes};

const MIB: usize = 1 << 20;

fn name_of(i: usize) -> String {
    format!("layer{i:05}/weight")
}

fn sum(s: &[f32]) -> f32 {
    ndarray::ArrayView1::from(s).sum()
}

fn safetensors_save(path: &Path, tensors: &[Vec<u8>]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![t.len() / 4], t)
                    .unwrap();
            (name_of(i), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
    File::open(path).unwrap().sync_data().unwrap();
    File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

fn raw_save(path: &Path, tensors: &[Vec<u8>]) {
    let mut f = File::create(path).unwrap();
    for t in tensors {
        f.write_all(t).unwrap();
    }
    f.sync_data().unwrap();
    File::open(path.parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
}

fn ckptdb_save(db: &Db, tensors: &[Vec<u8>]) {
    let mut tx = db.begin_step(1).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        tx.put_tensor_raw(&name_of(i), DType::F32, &[(t.len() / 4) as u64], t)
            .unwrap();
    }
    tx.commit().unwrap();
}

fn map(path: &Path) -> memmap2::Mmap {
    let file = File::open(path).unwrap();
    // SAFETY: the file is private to this benchmark and never modified
    // while mapped.
    unsafe { memmap2::Mmap::map(&file).unwrap() }
}

fn safetensors_load(path: &Path) -> f32 {
    let map = map(path);
    let st = safetensors::SafeTensors::deserialize(&map).unwrap();
    let mut total = 0.0;
    for (_, view) in st.iter() {
        total += sum(bytemuck::cast_slice(view.data()));
    }
    total
}

fn raw_load(path: &Path, tensor_len: usize) -> f32 {
    map(path)
        .chunks(tensor_len)
        .map(|c| sum(bytemuck::cast_slice(c)))
        .sum()
}

fn ckptdb_load(path: &Path, checked: bool) -> f32 {
    let db = Db::open_read_only(path).unwrap();
    let snap = db.latest().unwrap().unwrap();
    let mut total = 0.0;
    for key in snap.keys() {
        let t = snap.tensor(key).unwrap();
        let v = if checked {
            t.view::<f32>()
        } else {
            t.view_unverified::<f32>()
        };
        total += v.unwrap().sum();
    }
    total
}

fn timed<T>(f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    std::hint::black_box(f());
    start.elapsed()
}

fn read_case(case: &str, tensors: &[Vec<u8>]) {
    let dir = scratch();
    let st = dir.path().join("m.safetensors");
    let raw = dir.path().join("raw.bin");
    let db = dir.path().join("db");
    safetensors_save(&st, tensors);
    raw_save(&raw, tensors);
    ckptdb_save(&Db::open(&db).unwrap(), tensors);
    let len = tensors[0].len();
    // All four must read the same numbers (summed in their own orders).
    let expect = safetensors_load(&st);
    let close = |x: f32| (x - expect).abs() <= expect.abs() * 1e-3;
    assert!(close(raw_load(&raw, len)));
    assert!(close(ckptdb_load(&db, true)));
    support::rounds(
        case,
        7,
        &mut [
            ("safetensors over mmap", &mut |_| {
                timed(|| safetensors_load(&st))
            }),
            ("raw mmap + sum", &mut |_| timed(|| raw_load(&raw, len))),
            ("ckptdb unverified", &mut |_| {
                timed(|| ckptdb_load(&db, false))
            }),
            ("ckptdb checked", &mut |_| timed(|| ckptdb_load(&db, true))),
        ],
    );
}

fn save_case(case: &str, tensors: &[Vec<u8>]) {
    // Each save goes to a fresh directory; creating and removing it is not
    // timed.
    support::rounds(
        case,
        7,
        &mut [
            ("safetensors + fsync", &mut |_| {
                let d = scratch();
                timed(|| safetensors_save(&d.path().join("m.safetensors"), tensors))
            }),
            ("raw write + fdatasync", &mut |_| {
                let d = scratch();
                timed(|| raw_save(&d.path().join("raw.bin"), tensors))
            }),
            ("ckptdb commit", &mut |_| {
                let d = scratch();
                let db = Db::open(d.path().join("db")).unwrap();
                timed(|| ckptdb_save(&db, tensors))
            }),
        ],
    );
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let small_n = ((10_000.0 * scale().sqrt()) as usize).max(100);
    let large_len = (((64 * MIB) as f64 * scale()) as usize / 4).max(1) * 4;
    let small = || -> Vec<Vec<u8>> { (0..small_n as u64).map(|i| tensor_bytes(4096, i)).collect() };
    let large = || -> Vec<Vec<u8>> { (0..16).map(|i| tensor_bytes(large_len, i)).collect() };
    if "read_small".contains(filter.as_str()) {
        read_case(
            "read_small: open, view each of 10,000 x 4 KiB, sum",
            &small(),
        );
    }
    if "read_large".contains(filter.as_str()) {
        read_case("read_large: open, view each of 16 x 64 MiB, sum", &large());
    }
    if "save_small".contains(filter.as_str()) {
        save_case("save_small: 10,000 x 4 KiB, durable", &small());
    }
    if "save_large".contains(filter.as_str()) {
        save_case("save_large: 16 x 64 MiB, durable", &large());
    }
}
