//! A deterministic multi-rank model shared by the `ranks_*` tests: what
//! every rank writes at each global step, and checks that read it back
//! bit-exact at any world size.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ckptdb::distributed::{GlobalOutcome, GlobalSnapshot, RankDb};
use ndarray::{ArrayD, IxDyn};

/// Environment of a writer child: `root,rank,world,from,to`.
pub const CHILD_ENV: &str = "CKPTDB_RANKS_CHILD";

/// `(start, len)` of part `i` of `n` items split into `parts`.
pub fn split(n: u64, parts: u64, i: u64) -> (u64, u64) {
    let start = n * i / parts;
    (start, n * (i + 1) / parts - start)
}

fn h(step: u64, key: u64, i: u64) -> u64 {
    let mut x = step
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(key.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(i.wrapping_mul(0x94D0_49BB_1331_11EB));
    x ^= x >> 31;
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 29)
}

pub fn emb_shape(step: u64) -> Vec<u64> {
    vec![13 + step % 5, 6]
}
pub const COLS_SHAPE: [u64; 2] = [3, 17];
pub const GRID_SHAPE: [u64; 2] = [6, 10];

/// The global tensors of a step.
pub fn emb(step: u64) -> ArrayD<f32> {
    let s = emb_shape(step);
    let n = (s[0] * s[1]) as usize;
    let v = (0..n as u64)
        .map(|i| f32::from_bits((h(step, 1, i) as u32) & 0x3fff_ffff))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[s[0] as usize, s[1] as usize]), v).unwrap()
}
pub fn cols(step: u64) -> ArrayD<u16> {
    let v = (0..COLS_SHAPE[0] * COLS_SHAPE[1])
        .map(|i| h(step, 2, i) as u16)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[3, 17]), v).unwrap()
}
pub fn grid(step: u64) -> ArrayD<f64> {
    let v = (0..GRID_SHAPE[0] * GRID_SHAPE[1])
        .map(|i| f64::from_bits(h(step, 3, i) & 0x3fff_ffff_ffff_ffff))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[6, 10]), v).unwrap()
}
/// Replicated: the same on every rank; changes every third step so that
/// rank 0's log shares the bytes between steps.
pub fn bias(step: u64) -> ArrayD<f32> {
    let v = (0..7)
        .map(|i| (step / 3) as f32 + i as f32 * 0.25)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[7]), v).unwrap()
}
pub fn counter(step: u64) -> ArrayD<u64> {
    ArrayD::from_shape_vec(IxDyn(&[1]), vec![step]).unwrap()
}

fn block<T: Clone>(a: &ArrayD<T>, off: &[u64], shape: &[u64]) -> ArrayD<T> {
    a.slice_each_axis(|ax| {
        let d = ax.axis.index();
        ndarray::Slice::from(off[d] as usize..(off[d] + shape[d]) as usize)
    })
    .to_owned()
}

/// Writes rank `db.rank()`'s part of `step` (world size 4 for the grid:
/// 2 x 2 blocks; any world size for rows and columns).
pub fn write_step(db: &RankDb, step: u64) -> ckptdb::Result<GlobalOutcome> {
    let (r, w) = (db.rank() as u64, db.world_size() as u64);
    let mut tx = db.begin_step(step)?;
    let es = emb_shape(step);
    let (start, len) = split(es[0], w, r);
    tx.put_shard(
        "emb",
        &es,
        &[start, 0],
        &block(&emb(step), &[start, 0], &[len, es[1]]),
    )?;
    let (start, len) = split(COLS_SHAPE[1], w, r);
    tx.put_shard(
        "opt/cols",
        &COLS_SHAPE,
        &[0, start],
        &block(&cols(step), &[0, start], &[COLS_SHAPE[0], len]),
    )?;
    if w == 4 {
        let (r0, rl) = split(GRID_SHAPE[0], 2, r / 2);
        let (c0, cl) = split(GRID_SHAPE[1], 2, r % 2);
        tx.put_shard(
            "grid",
            &GRID_SHAPE,
            &[r0, c0],
            &block(&grid(step), &[r0, c0], &[rl, cl]),
        )?;
    }
    tx.put("bias", &bias(step))?;
    tx.put("counter", &counter(step))?;
    tx.commit()
}

fn same_bits<T: bytemuck::NoUninit>(what: &str, got: &[T], want: &[T]) {
    assert!(
        bytemuck::cast_slice::<T, u8>(got) == bytemuck::cast_slice::<T, u8>(want),
        "{what}: not bit-exact"
    );
}

/// Reads every key of `snap` as reader rank `q` of `readers` would (its row
/// range of every tensor, whole replicated tensors) and checks each element
/// bit-exact against the model. Also reads every key whole.
pub fn check_step(snap: &GlobalSnapshot, readers: u64) {
    let step = snap.step();
    let keys: Vec<&str> = snap.keys().collect();
    let mut want = vec!["bias", "counter", "emb", "opt/cols"];
    if snap.key("grid").is_ok() {
        want.insert(3, "grid");
    }
    assert_eq!(keys, want, "keys of step {step}");
    fn rows<T: ckptdb::Element + PartialEq + std::fmt::Debug + bytemuck::NoUninit>(
        snap: &GlobalSnapshot,
        key: &str,
        full: &ArrayD<T>,
        readers: u64,
    ) {
        let shape: Vec<u64> = full.shape().iter().map(|&d| d as u64).collect();
        let info = snap.key(key).unwrap();
        assert_eq!(info.global_shape, shape, "{key} global shape");
        for q in 0..readers {
            let (start, len) = split(shape[0], readers, q);
            let mut off = vec![0; shape.len()];
            off[0] = start;
            let mut sh = shape.clone();
            sh[0] = len;
            let got = snap.read_slice::<T>(key, &off, &sh).unwrap();
            assert_eq!(
                got.shape(),
                &sh.iter().map(|&d| d as usize).collect::<Vec<_>>()[..]
            );
            let want = block(full, &off, &sh);
            let got: Vec<T> = got.iter().copied().collect();
            same_bits(
                &format!("step {} {key} reader {q}/{readers}", snap.step()),
                &got,
                want.as_slice().unwrap(),
            );
        }
        let whole: Vec<T> = snap.read::<T>(key).unwrap().iter().copied().collect();
        same_bits(
            &format!("step {} {key} whole", snap.step()),
            &whole,
            full.as_slice().unwrap(),
        );
    }
    rows(snap, "emb", &emb(step), readers);
    rows(snap, "opt/cols", &cols(step), readers);
    if want.contains(&"grid") {
        rows(snap, "grid", &grid(step), readers);
    }
    rows(snap, "bias", &bias(step), readers);
    rows(snap, "counter", &counter(step), readers);
}

/// The writer child, when this test binary runs with [`CHILD_ENV`] set:
/// writes steps `from..to` as one rank (skipping steps it already
/// published), printing `PART <step>` after each.
pub fn child_main() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let f: Vec<&str> = spec.split(',').collect();
    let (root, rank, world) = (f[0], f[1].parse().unwrap(), f[2].parse().unwrap());
    let (from, to): (u64, u64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
    let db = RankDb::open(root, rank, world).unwrap();
    let mut out = std::io::stdout().lock();
    for s in from..to {
        if db.has_published(s).unwrap() {
            continue;
        }
        write_step(&db, s).unwrap();
        writeln!(out, "PART {s}").unwrap();
        out.flush().unwrap();
    }
    writeln!(out, "DONE").unwrap();
}

/// Starts a writer child running `test_name` of this binary.
pub fn spawn(test_name: &str, root: &Path, rank: u32, world: u32, from: u64, to: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{},{rank},{world},{from},{to}", root.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child and asserts it finished all its steps.
pub fn finish(mut child: Child) {
    let out = BufReader::new(child.stdout.take().unwrap());
    // Read to the end: libtest writes its summary after the report.
    let lines: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    let done = lines.iter().any(|l| l.ends_with("DONE"));
    let st = child.wait_with_output().unwrap();
    assert!(
        done && st.status.success(),
        "writer failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}
