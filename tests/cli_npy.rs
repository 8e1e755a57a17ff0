//! `ckptdb export --format npy-dir`: one `.npy` per tensor in a directory
//! tree, headers per the NumPy format, and no way to write outside OUT.

#![cfg(feature = "cli")]

mod common;

use std::path::Path;

use ckptdb::ndarray::{arr0, Array2, Array3};
use ckptdb::{bf16, Db};
use common::{assert_one_line_error, ckptdb, json, tree};

/// Parses a `.npy` v1.0 file: (descr, fortran_order, shape, data).
fn parse_npy(p: &Path) -> (String, bool, Vec<u64>, Vec<u8>) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data not 64-byte aligned");
    let h = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(h.ends_with('\n'));
    let field = |name: &str| {
        let start = h.find(&format!("'{name}': ")).unwrap() + name.len() + 4;
        &h[start..]
    };
    let descr = field("descr")[1..].split('\'').next().unwrap().to_owned();
    let fortran = field("fortran_order").starts_with("True");
    let shape_txt = field("shape");
    let shape_txt = &shape_txt[1..shape_txt.find(')').unwrap()];
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, fortran, shape, b[10 + hlen..].to_vec())
}

#[test]
fn npy_dir_holds_one_readable_file_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let w = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
    let q = Array3::from_shape_fn((2, 1, 2), |(i, _, k)| (i * 2 + k) as i16 - 2);
    {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(5).unwrap();
        tx.put_tensor("policy/fc1.weight", &w).unwrap();
        tx.put_tensor("policy/q/deep", &q).unwrap();
        tx.put_tensor("count", &arr0(9u64)).unwrap();
        tx.put_tensor(
            "half",
            &ckptdb::ndarray::arr1(&[bf16::from_f32(1.0), bf16::from_f32(-2.5)]),
        )
        .unwrap();
        tx.put_blob("blob", b"xyz").unwrap();
        tx.commit().unwrap();
    }
    let out = dir.path().join("npy");
    let v = json(&[
        &"export".into(),
        &path,
        &"5".into(),
        &out,
        &"--format".into(),
        &"npy-dir".into(),
    ]);
    assert_eq!(v["format"], "npy-dir");
    assert_eq!(v["bf16_as_u16"], serde_json::json!(["half"]));
    assert_eq!(v["skipped"][0]["key"], "blob");
    assert_eq!(
        tree(&out),
        [
            "count.npy",
            "half.npy",
            "policy/fc1.weight.npy",
            "policy/q/deep.npy"
        ]
    );
    let (descr, fortran, shape, data) = parse_npy(&out.join("policy/fc1.weight.npy"));
    assert_eq!((descr.as_str(), fortran, shape), ("<f4", false, vec![3, 4]));
    assert_eq!(
        data,
        w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()
    );
    let (descr, _, shape, data) = parse_npy(&out.join("policy/q/deep.npy"));
    assert_eq!((descr.as_str(), shape), ("<i2", vec![2, 1, 2]));
    assert_eq!(
        data,
        q.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()
    );
    let (descr, _, shape, data) = parse_npy(&out.join("count.npy"));
    assert_eq!(
        (descr.as_str(), shape, data),
        ("<u8", vec![], 9u64.to_le_bytes().to_vec())
    );
    let (descr, _, _, data) = parse_npy(&out.join("half.npy"));
    assert_eq!(descr, "<u2");
    assert_eq!(
        data,
        [bf16::from_f32(1.0), bf16::from_f32(-2.5)]
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect::<Vec<_>>()
    );

    // A non-empty OUT is refused.
    let r = ckptdb(&[
        &"export".into(),
        &path,
        &"5".into(),
        &out,
        &"--format".into(),
        &"npy-dir".into(),
    ]);
    assert_one_line_error(&r, 2, "is not empty");
}

#[test]
fn names_that_would_escape_out_are_refused_and_nothing_is_written() {
    // Keys are validated when put, so a key cannot hold a `..` segment; but
    // stripping a prefix turns the valid key `a../x` into the name
    // `../x`, which the exporter must refuse on its own.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = Db::open(&path).unwrap();
        let mut tx = db.begin_step(1).unwrap();
        tx.put_tensor("a../x", &arr0(1.0f32)).unwrap();
        tx.put_tensor("ab/ok", &arr0(2.0f32)).unwrap();
        tx.put_tensor("a/abs", &arr0(3.0f32)).unwrap();
        tx.commit().unwrap();
    }
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = work.join("out");
    let before = tree(dir.path());
    for (prefix, why) in [("a", "'.' or '..'"), ("a/", "")] {
        let r = ckptdb(&[
            &"export".into(),
            &path,
            &"1".into(),
            &out,
            &"--format".into(),
            &"npy-dir".into(),
            &"--prefix".into(),
            &prefix.into(),
            &"--strip-prefix".into(),
        ]);
        if prefix == "a" {
            // Names "../x", "b/ok" and "/abs".
            assert_one_line_error(&r, 2, why);
            assert!(r.stderr.contains("refusing to write"), "{}", r.stderr);
        } else {
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        if prefix == "a" {
            assert!(!out.exists(), "OUT was created for a refused export");
            assert_eq!(tree(dir.path()), before, "a file was written");
        }
    }
    assert_eq!(tree(&out), ["abs.npy"]);
    // A leading '/' from stripping is refused as well.
    let out2 = work.join("out2");
    let r = ckptdb(&[
        &"export".into(),
        &path,
        &"1".into(),
        &out2,
        &"--format".into(),
        &"npy-dir".into(),
        &"--prefix".into(),
        &"a".into(),
        &"--strip-prefix".into(),
    ]);
    assert_eq!(r.code, 2);
    assert!(!out2.exists());
    assert!(!dir.path().join("x.npy").exists() && !work.join("x.npy").exists());
}
