//! Both export formats name tensors alike: `--prefix online --strip-prefix`
//! drops the separator too, both create missing parent directories, and
//! neither writes into a database directory.

#![cfg(feature = "cli")]

mod common;

use ckptdb::Db;
use common::{assert_one_line_error, ckptdb, json};

#[test]
fn formats_agree_on_names_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_tensor("online/l0.weight", &ckptdb::ndarray::arr1(&[1.0f32, 2.0]))
        .unwrap();
    tx.put_tensor("target/l0.weight", &ckptdb::ndarray::arr1(&[3.0f32]))
        .unwrap();
    tx.commit().unwrap();
    drop(db);

    let st = dir.path().join("missing/dir/online.safetensors");
    let npy = dir.path().join("other/missing/online");
    for (out, format) in [(&st, "safetensors"), (&npy, "npy-dir")] {
        let v = json(&[
            "export".as_ref(),
            path.as_os_str(),
            "1".as_ref(),
            out.as_os_str(),
            "--format".as_ref(),
            format.as_ref(),
            "--prefix".as_ref(),
            "online".as_ref(),
            "--strip-prefix".as_ref(),
        ]);
        assert_eq!(
            v["tensors"],
            serde_json::json!([{"name": "l0.weight", "key": "online/l0.weight"}]),
            "{format}"
        );
    }
    let file = std::fs::read(&st).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&file).unwrap();
    assert_eq!(parsed.names(), vec!["l0.weight"]);
    assert!(npy.join("l0.weight.npy").is_file());

    // Into the database directory: refused, and the database still opens.
    for (out, format) in [
        (path.join("w.safetensors"), "safetensors"),
        (path.join("log").join("npy"), "npy-dir"),
    ] {
        let r = ckptdb(&[
            "export".as_ref(),
            path.as_os_str(),
            "1".as_ref(),
            out.as_os_str(),
            "--format".as_ref(),
            format.as_ref(),
        ]);
        assert_one_line_error(&r, 2, "is inside the ckptdb database");
        assert!(!out.exists(), "{}", out.display());
    }
    assert_eq!(Db::open(&path).unwrap().steps(), vec![1]);
}
