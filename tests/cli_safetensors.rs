//! safetensors interop proven against the reference `safetensors` crate:
//! export reads back bit-exactly for every dtype, a file the crate wrote
//! imports exactly, and malformed files are refused with the database left
//! unchanged.

#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ckptdb::{DType, Db};
use common::{assert_one_line_error, ckptdb, json};
use safetensors::{Dtype, SafeTensors};

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::I8 => Dtype::I8,
        DType::U16 => Dtype::U16,
        DType::I16 => Dtype::I16,
        DType::U32 => Dtype::U32,
        DType::I32 => Dtype::I32,
        DType::U64 => Dtype::U64,
        DType::I64 => Dtype::I64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        other => panic!("no safetensors dtype for {other}"),
    }
}

/// Bytes for a `[3, 2]` tensor of `d` with awkward bit patterns: for floats
/// a NaN with payload, -0.0 and a subnormal sit among ordinary values.
fn sample(d: DType) -> Vec<u8> {
    let n = 6;
    match d {
        DType::Bool => vec![1, 0, 0, 1, 1, 0],
        DType::F32 => [
            f32::from_bits(0x7fc0_1234),
            -0.0,
            f32::from_bits(1),
            1.5,
            f32::NEG_INFINITY,
            3.25,
        ]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect(),
        DType::F64 => [
            f64::from_bits(0x7ff8_0000_dead_beef),
            -0.0,
            f64::from_bits(1),
            -1e300,
            2.0,
            0.1,
        ]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect(),
        _ => (0..n * d.size())
            .map(|i| (i * 37 + d as usize * 11) as u8 ^ 0x80)
            .collect(),
    }
}

fn db_with_every_dtype(dir: &Path) -> PathBuf {
    let path = dir.join("all.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(7).unwrap();
    for d in DType::ALL {
        tx.put_tensor_raw(&format!("t/{}", d.name()), d, &[3, 2], &sample(d))
            .unwrap();
    }
    tx.put_tensor_raw("scalar", DType::F32, &[], &2.5f32.to_le_bytes())
        .unwrap();
    tx.put_tensor_raw("empty", DType::I32, &[0, 4], &[])
        .unwrap();
    tx.put_value("config", &serde_json::json!({"lr": 0.1}))
        .unwrap();
    tx.put_metric("loss", 0.125).unwrap();
    tx.put_metric("reward", -3.5).unwrap();
    tx.commit().unwrap();
    path
}

#[test]
fn export_reads_back_bit_exactly_with_the_reference_crate() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_every_dtype(dir.path());
    let out = dir.path().join("model.safetensors");
    let v = json(&[&"export".into(), &db, &"latest".into(), &out]);
    assert_eq!(v["step"], 7);
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["skipped"][0]["key"], "config");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(v["bytes"].as_u64().unwrap(), bytes.len() as u64);

    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names.len(), 15);
    for d in DType::ALL {
        let t = st.tensor(&format!("t/{}", d.name())).unwrap();
        assert_eq!(t.dtype(), st_dtype(d), "{d}");
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data(), &sample(d)[..], "{d} bytes differ");
        // Aligned for in-place viewing: the data starts at a multiple of
        // the element size.
        let offset = t.data().as_ptr() as usize - bytes.as_ptr() as usize;
        assert_eq!(offset % d.size(), 0, "{d} misaligned");
    }
    let s = st.tensor("scalar").unwrap();
    assert_eq!((s.shape(), s.data()), (&[][..], &2.5f32.to_le_bytes()[..]));
    assert_eq!(st.tensor("empty").unwrap().shape(), &[0, 4]);

    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["step"], "7");
    let metrics: HashMap<String, f64> = serde_json::from_str(&meta["metrics"]).unwrap();
    assert_eq!(
        metrics,
        HashMap::from([("loss".into(), 0.125), ("reward".into(), -3.5)])
    );

    // An existing file is not replaced without --force.
    let r = ckptdb(&[&"export".into(), &db, &"7".into(), &out]);
    assert_one_line_error(&r, 2, "already exists");
    let v = json(&[
        &"export".into(),
        &db,
        &"7".into(),
        &out,
        &"--force".into(),
        &"--prefix".into(),
        &"t/f".into(),
        &"--strip-prefix".into(),
    ]);
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["16", "32", "64"]);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("32").unwrap().data(), &sample(DType::F32)[..]);

    // Exported, imported into a new database: the same step again.
    let db2 = dir.path().join("again.ckpt");
    let full = dir.path().join("full.safetensors");
    json(&[&"export".into(), &db, &"7".into(), &full]);
    let v = json(&[&"import".into(), &db2, &full, &"--step".into(), &"7".into()]);
    assert_eq!(
        v["metrics"],
        serde_json::json!({"loss": 0.125, "reward": -3.5})
    );
    let (a, b) = (
        Db::open_read_only(&db).unwrap(),
        Db::open_read_only(&db2).unwrap(),
    );
    let (a, b) = (a.snapshot(7).unwrap(), b.snapshot(7).unwrap());
    for e in a.entries().filter(|e| e.kind == ckptdb::Kind::Tensor) {
        let f = b.entry(&e.key).unwrap();
        assert_eq!((f.dtype, &f.shape), (e.dtype, &e.shape));
        assert_eq!(
            b.raw_bytes(&e.key).unwrap(),
            a.raw_bytes(&e.key).unwrap(),
            "{}",
            e.key
        );
    }
}

#[test]
fn imports_a_file_the_reference_crate_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<(String, DType, Vec<usize>, Vec<u8>)> = DType::ALL
        .into_iter()
        .map(|d| (format!("layer.{}", d.name()), d, vec![2, 3], sample(d)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(st_dtype(*d), s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let file = dir.path().join("ref.safetensors");
    std::fs::write(&file, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();

    let db = dir.path().join("imported.ckpt");
    let v = json(&[
        &"import".into(),
        &db,
        &file,
        &"--step".into(),
        &"100".into(),
        &"--prefix".into(),
        &"ref/".into(),
    ]);
    assert_eq!(v["step"], 100);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 13);
    let d = Db::open_read_only(&db).unwrap();
    let snap = d.snapshot(100).unwrap();
    assert_eq!(snap.len(), 13);
    for (name, dtype, shape, bytes) in &data {
        let t = snap.tensor(&format!("ref/{name}")).unwrap();
        assert_eq!(t.dtype(), *dtype);
        assert_eq!(
            t.shape(),
            &shape.iter().map(|&x| x as u64).collect::<Vec<_>>()[..]
        );
        assert_eq!(t.bytes().unwrap(), &bytes[..], "{name}");
    }
    // A second import builds on the first with --from-latest.
    let v = json(&[
        &"import".into(),
        &db,
        &file,
        &"--step".into(),
        &"101".into(),
        &"--prefix".into(),
        &"copy/".into(),
        &"--from-latest".into(),
    ]);
    assert_eq!(v["step"], 101);
    let show = json(&[&"show".into(), &db, &"101".into()]);
    assert_eq!(show["entries"].as_array().unwrap().len(), 26);
    // Same content: the second copy is deduplicated.
    assert_eq!(json(&[&"ls".into(), &db])["steps"][1]["new_bytes"], 0);
}

/// A safetensors file with this header JSON and data.
fn raw_file(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

fn snapshot_of_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::tree(dir)
        .into_iter()
        .filter(|f| f != "LOCK")
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

#[test]
fn malformed_files_are_refused_and_the_database_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_every_dtype(dir.path());
    let before_ls = json(&[&"ls".into(), &db])["steps"].clone();
    let segs_before = snapshot_of_files(&db.join("log"));
    let d = dir.path();
    let f32x2 = |o: u64| {
        format!(
            r#"{{"dtype":"F32","shape":[2],"data_offsets":[{o},{}]}}"#,
            o + 8
        )
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            raw_file(
                d,
                "escape",
                &format!(r#"{{"a/../../x":{}}}"#, f32x2(0)),
                &[0; 8],
            ),
            "'.' or '..'",
        ),
        (
            raw_file(d, "abs", &format!(r#"{{"/etc/x":{}}}"#, f32x2(0)), &[0; 8]),
            "empty path segment",
        ),
        (
            raw_file(
                d,
                "dup",
                &format!(r#"{{"a":{},"a":{}}}"#, f32x2(0), f32x2(8)),
                &[0; 16],
            ),
            "appears twice",
        ),
        (
            raw_file(
                d,
                "overlap",
                &format!(r#"{{"a":{},"b":{}}}"#, f32x2(0), f32x2(4)),
                &[0; 12],
            ),
            "overlaps",
        ),
        (
            raw_file(d, "past_end", &format!(r#"{{"a":{}}}"#, f32x2(0)), &[0; 4]),
            "outside",
        ),
        (
            raw_file(d, "trailing", &format!(r#"{{"a":{}}}"#, f32x2(0)), &[0; 9]),
            "cover",
        ),
        (
            raw_file(
                d,
                "dtype",
                r#"{"a":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2],
            ),
            "not supported",
        ),
        (
            raw_file(
                d,
                "bool",
                r#"{"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
                &[1, 2],
            ),
            "bool",
        ),
        (
            raw_file(d, "json", r#"{"a":{"dtype":"F32""#, &[]),
            "header JSON",
        ),
    ];
    for (file, why) in &cases {
        let r = ckptdb(&[&"import".into(), &db, file, &"--step".into(), &"8".into()]);
        assert_one_line_error(&r, 2, why);
    }
    // Header length beyond the file, and a file shorter than 8 bytes.
    let p = d.join("huge_len");
    std::fs::write(&p, [0xff, 0xff, 0, 0, 0, 0, 0, 0, b'{', b'}']).unwrap();
    assert_one_line_error(
        &ckptdb(&[&"import".into(), &db, &p, &"--step".into(), &"8".into()]),
        2,
        "runs past the end",
    );
    std::fs::write(&p, [1, 2, 3]).unwrap();
    assert_one_line_error(
        &ckptdb(&[&"import".into(), &db, &p, &"--step".into(), &"8".into()]),
        2,
        "file ends inside",
    );
    // A valid file at a step that is not new.
    let ok = raw_file(d, "ok", &format!(r#"{{"a":{}}}"#, f32x2(0)), &[0; 8]);
    assert_one_line_error(
        &ckptdb(&[&"import".into(), &db, &ok, &"--step".into(), &"7".into()]),
        2,
        "not greater",
    );

    assert_eq!(json(&[&"ls".into(), &db])["steps"], before_ls);
    assert_eq!(
        snapshot_of_files(&db.join("log")),
        segs_before,
        "the log changed"
    );
    assert_eq!(json(&[&"verify".into(), &db])["ok"], true);
    // A database that did not exist is not created for a malformed file.
    let fresh = d.join("never.ckpt");
    assert_eq!(
        ckptdb(&[
            &"import".into(),
            &fresh,
            &cases[0].0,
            &"--step".into(),
            &"1".into()
        ])
        .code,
        2
    );
    assert!(!fresh.exists());
}

#[test]
fn import_fails_cleanly_while_a_writer_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_every_dtype(dir.path());
    let file = dir.path().join("m.safetensors");
    json(&[&"export".into(), &db, &"7".into(), &file]);
    let _writer = common::open_writer(&db);
    let r = ckptdb(&[&"import".into(), &db, &file, &"--step".into(), &"8".into()]);
    assert_one_line_error(&r, 2, "locked by a writer in another process");
}
