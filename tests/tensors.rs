//! Tensors of every dtype and rank roundtrip bit-exactly, and views point
//! into the mapped segment file.

mod common;

use ckptdb::{bf16, f16, DType, Db, Element, Error};
use ndarray::{ArrayD, IxDyn};

/// Shapes of rank 0 to 6, plus empty ones.
fn shapes() -> Vec<Vec<usize>> {
    vec![
        vec![],
        vec![5],
        vec![3, 4],
        vec![2, 3, 4],
        vec![2, 1, 3, 2],
        vec![1, 2, 1, 3, 2],
        vec![2, 2, 1, 2, 1, 3],
        vec![0],
        vec![3, 0, 2],
    ]
}

/// Deterministic values of any element type, built from bytes so every bit
/// pattern class (NaN payloads, negative zero, subnormals) shows up.
fn array<T: Element>(shape: &[usize], seed: u64) -> ArrayD<T> {
    let n: usize = shape.iter().product();
    let mut bytes = common::content(seed, "tensor", n * std::mem::size_of::<T>());
    if T::DTYPE == DType::Bool {
        bytes.iter_mut().for_each(|b| *b &= 1);
    }
    let v: Vec<T> = bytes
        .chunks_exact(std::mem::size_of::<T>())
        .map(bytemuck::checked::pod_read_unaligned::<T>)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn key_of(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}/r{}/[{}]", shape.len(), dims.join("x"))
}

fn put_all<T: Element>(tx: &mut ckptdb::StepTx<'_>, seed: u64) {
    for shape in shapes() {
        tx.put_tensor(&key_of(T::DTYPE, &shape), &array::<T>(&shape, seed))
            .unwrap();
    }
}

fn check_all<T: Element>(snap: &ckptdb::Snapshot, seed: u64) {
    for shape in shapes() {
        let key = key_of(T::DTYPE, &shape);
        let want = array::<T>(&shape, seed);
        let t = snap.tensor(&key).unwrap();
        assert_eq!(t.dtype(), T::DTYPE);
        assert_eq!(
            t.shape(),
            shape.iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
        let got = t.view::<T>().unwrap();
        assert_eq!(got.shape(), want.shape());
        // Bit-exact: compare the bytes, not the values (NaN != NaN).
        assert_eq!(
            t.bytes().unwrap(),
            bytemuck::cast_slice::<T, u8>(want.as_slice().unwrap()),
            "{key}"
        );
        let owned = t.to_owned::<T>().unwrap();
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(owned.as_slice().unwrap()),
            t.bytes().unwrap()
        );
    }
}

macro_rules! for_each_dtype {
    ($f:ident, $($arg:expr),*) => {
        $f::<bool>($($arg),*);
        $f::<u8>($($arg),*);
        $f::<i8>($($arg),*);
        $f::<u16>($($arg),*);
        $f::<i16>($($arg),*);
        $f::<u32>($($arg),*);
        $f::<i32>($($arg),*);
        $f::<u64>($($arg),*);
        $f::<i64>($($arg),*);
        $f::<f16>($($arg),*);
        $f::<bf16>($($arg),*);
        $f::<f32>($($arg),*);
        $f::<f64>($($arg),*);
    };
}

#[test]
fn every_dtype_and_rank_roundtrips_bit_exactly_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        for_each_dtype!(put_all, &mut tx, 7);
        tx.commit().unwrap();
        let snap = db.latest().unwrap().unwrap();
        for_each_dtype!(check_all, &snap, 7);
        assert_eq!(snap.len(), 13 * shapes().len());
    }
    for db in [Db::open(&path).unwrap(), Db::open_read_only(&path).unwrap()] {
        let snap = db.snapshot(1).unwrap();
        for_each_dtype!(check_all, &snap, 7);
    }
}

#[test]
fn non_contiguous_views_are_stored_row_major() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let a = ndarray::Array2::<i32>::from_shape_fn((3, 4), |(i, j)| (10 * i + j) as i32);
    let t = a.t(); // 4x3, column-major view
    let strided = a.slice(ndarray::s![.., ..;2]); // 3x2, strided
    let mut tx = db.begin_step(1).unwrap();
    tx.put_tensor("t", &t).unwrap();
    tx.put_tensor("s", &strided).unwrap();
    tx.commit().unwrap();
    let snap = db.latest().unwrap().unwrap();
    let got_t = snap.tensor("t").unwrap();
    assert_eq!(got_t.shape(), &[4, 3]);
    assert_eq!(
        got_t.as_slice::<i32>().unwrap(),
        &[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]
    );
    assert_eq!(
        snap.tensor("s").unwrap().as_slice::<i32>().unwrap(),
        &[0, 2, 10, 12, 20, 22]
    );
    assert_eq!(got_t.view::<i32>().unwrap(), t.into_dyn());
}

/// The address ranges of this process's maps of files whose path ends with
/// `.seg`, from /proc/self/maps.
fn segment_maps() -> Vec<(usize, usize, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(".seg"))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let range = parts.next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let path = l.split_whitespace().last().unwrap().to_owned();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
                path,
            )
        })
        .collect()
}

#[test]
fn views_point_into_the_mapped_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let w = ndarray::Array2::<f32>::from_shape_fn((256, 256), |(i, j)| (i * 256 + j) as f32);
    let mut tx = db.begin_step(1).unwrap();
    tx.put_tensor("w", &w).unwrap();
    tx.commit().unwrap();
    drop(db);
    let db = Db::open_read_only(&path).unwrap();
    let snap = db.latest().unwrap().unwrap();
    let t = snap.tensor("w").unwrap();
    let view = t.view::<f32>().unwrap();
    let ptr = view.as_ptr() as usize;
    let len = view.len() * 4;
    let maps = segment_maps();
    let inside = maps
        .iter()
        .find(|(a, b, _)| *a <= ptr && ptr + len <= *b)
        .unwrap_or_else(|| panic!("view at {ptr:#x} is not inside a segment map: {maps:?}"));
    assert!(inside.2.starts_with(path.to_str().unwrap()), "{}", inside.2);
    assert_eq!(ptr % 64, 0, "payloads are 64-byte aligned");
    assert_eq!(view[[3, 5]], (3 * 256 + 5) as f32);
    // The slice accessors and the unverified ones point at the same bytes.
    assert_eq!(t.as_slice::<f32>().unwrap().as_ptr() as usize, ptr);
    assert_eq!(t.view_unverified::<f32>().unwrap().as_ptr() as usize, ptr);
}

#[test]
fn the_same_64_mib_tensor_at_two_steps_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    let big = ndarray::Array1::<f32>::from_shape_fn(16 << 20, |i| i as f32 * 0.5);
    let log_size = || {
        common::segments(&path)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum::<u64>()
    };
    let mut tx = db.begin_step(1).unwrap();
    tx.put_tensor("big", &big).unwrap();
    tx.put_metric("loss", 1.0).unwrap();
    let first = tx.commit().unwrap();
    let after_first = log_size();
    assert!(after_first >= 64 << 20);
    // The put hashes a payload this large in parallel chunks; the combined
    // crc it records must be the single-pass crc32 of the bytes, and a
    // full verify (which hashes in one pass) must accept it.
    let bytes: Vec<u8> = big.iter().flat_map(|x| x.to_le_bytes()).collect();
    let snap1 = db.snapshot(1).unwrap();
    assert_eq!(snap1.entry("big").unwrap().crc32, crc32fast::hash(&bytes));
    assert!(snap1.verify().is_empty());
    drop(snap1);
    assert_eq!(first.new_bytes, 64 << 20);
    let mut tx = db.begin_step(2).unwrap();
    tx.put_tensor("big", &big).unwrap();
    tx.put_tensor("renamed/copy", &big).unwrap();
    tx.put_metric("loss", 0.5).unwrap();
    let second = tx.commit().unwrap();
    let growth = log_size() - after_first;
    assert!(
        growth < 1 << 20,
        "second commit grew the log by {growth} bytes"
    );
    assert_eq!(second.new_bytes, 0);
    assert_eq!(second.logical_bytes, 128 << 20);
    let snap = db.snapshot(2).unwrap();
    assert_eq!(
        snap.tensor("renamed/copy")
            .unwrap()
            .as_slice::<f32>()
            .unwrap()[12345],
        12345.0 * 0.5
    );
    // A different shape of the same bytes is a different tensor.
    let mut tx = db.begin_step(3).unwrap();
    tx.put_tensor(
        "big",
        &big.view().into_shape_with_order((4096, 4096)).unwrap(),
    )
    .unwrap();
    assert_eq!(tx.commit().unwrap().new_bytes, 64 << 20);
    assert_eq!(
        db.snapshot(3).unwrap().tensor("big").unwrap().shape(),
        &[4096, 4096]
    );
}

#[test]
fn bad_accesses_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_tensor("w", &ndarray::Array1::<f32>::zeros(4))
        .unwrap();
    tx.put_blob("b", b"bytes").unwrap();
    tx.put_value("v", &vec![1, 2, 3]).unwrap();
    // Keys that could escape a directory, or hold NUL.
    for bad in ["a/../x", "../x", "a/./b", "a\0b", "/abs", ""] {
        assert!(
            matches!(tx.put_blob(bad, b"x"), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    // Shapes whose element count overflows, or that disagree with the bytes.
    assert!(matches!(
        tx.put_tensor_raw("o", DType::F32, &[u64::MAX, 2], &[]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put_tensor_raw("o", DType::F64, &[1 << 62], &[]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put_tensor_raw("o", DType::F32, &[3], &[0; 8]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put_tensor_raw("o", DType::Bool, &[2], &[0, 2]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put_tensor_raw("o", DType::U8, &[1; 17], &[0]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tx.put_metric("", 1.0),
        Err(Error::InvalidArgument(_))
    ));
    tx.commit().unwrap();

    let snap = db.latest().unwrap().unwrap();
    let t = snap.tensor("w").unwrap();
    match t.view::<f64>() {
        Err(Error::DtypeMismatch {
            key,
            stored,
            requested,
        }) => {
            assert_eq!(
                (key.as_str(), stored, requested),
                ("w", DType::F32, DType::F64)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.as_slice::<u32>(),
        Err(Error::DtypeMismatch { .. })
    ));
    assert!(matches!(
        snap.tensor("missing"),
        Err(Error::KeyNotFound { step: 1, .. })
    ));
    assert!(
        matches!(snap.blob("w"), Err(Error::InvalidArgument(_))),
        "a tensor is not a blob"
    );
    assert!(matches!(snap.tensor("b"), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        snap.value::<String>("v"),
        Err(Error::Value { .. })
    ));
    assert_eq!(snap.value::<Vec<i32>>("v").unwrap(), vec![1, 2, 3]);
    assert!(matches!(
        db.snapshot(2),
        Err(Error::StepNotFound { step: 2 })
    ));
    assert!(matches!(
        db.begin_step_from(5, 2),
        Err(Error::StepNotFound { step: 2 })
    ));
    assert!(matches!(
        db.history("a/../b"),
        Err(Error::InvalidArgument(_))
    ));
}
