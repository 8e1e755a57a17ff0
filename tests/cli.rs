//! Each read-only command of the `ckptdb` tool on a database made here,
//! checked through its `--json` output against values computed in the test.

#![cfg(feature = "cli")]

mod common;

use ckptdb::ndarray::{arr0, arr1, Array2};
use ckptdb::Db;
use common::{assert_one_line_error, ckptdb, json};
use serde_json::json;

fn w10() -> Array2<f32> {
    Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32 * 0.5 - 1.0)
}

/// Step 10 and step 20 (built from 10: one tensor changed, one added, one
/// removed, one replaced by a value of another shape) and step 30.
fn make_db(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(10).unwrap();
    tx.put_tensor("policy/w", &w10()).unwrap();
    tx.put_tensor("policy/b", &arr1(&[0.1f32, 0.2, 0.3]))
        .unwrap();
    tx.put_tensor("opt/count", &arr0(10i64)).unwrap();
    tx.put_tensor("shape_changes", &arr1(&[1.0f64, 2.0]))
        .unwrap();
    tx.put_value("config", &json!({"lr": 0.001, "name": "cartpole"}))
        .unwrap();
    tx.put_blob("rng", &[7u8; 100]).unwrap();
    tx.put_metric("loss", 1.5).unwrap();
    tx.put_metric("acc", 0.5).unwrap();
    tx.commit().unwrap();

    let mut tx = db.begin_step_from(20, 10).unwrap();
    let mut w = w10();
    w[[0, 0]] += 3.0; // -1 → 2
    w[[1, 2]] -= 4.0; // 1.5 → -2.5
    tx.put_tensor("policy/w", &w).unwrap();
    tx.put_tensor("opt/count", &arr0(20i64)).unwrap();
    tx.put_tensor("policy/new", &arr1(&[1u8, 2, 3, 4])).unwrap();
    tx.put_tensor("shape_changes", &arr1(&[1.0f64, 2.0, 3.0]))
        .unwrap();
    tx.remove("rng");
    tx.put_metric("loss", 0.75).unwrap();
    tx.put_metric("acc", 0.9).unwrap();
    tx.commit().unwrap();

    let mut tx = db.begin_step_from(30, 20).unwrap();
    tx.put_metric("loss", 1.0).unwrap();
    tx.put_metric("acc", 0.7).unwrap();
    tx.commit().unwrap();
    path
}

#[test]
fn ls_lists_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"ls".into(), &db]);
    let rows = v["steps"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [10, 20, 30]);
    assert_eq!(rows[0]["metrics"], json!({"loss": 1.5, "acc": 0.5}));
    assert_eq!(rows[1]["metrics"], json!({"loss": 0.75, "acc": 0.9}));
    assert_eq!(rows[2]["tags"], json!([]));
    // Step 10's payloads: 24 + 12 + 8 + 16 bytes of tensors, the JSON
    // value, and the 100-byte blob.
    let config_len = serde_json::to_vec(&json!({"lr": 0.001, "name": "cartpole"}))
        .unwrap()
        .len() as u64;
    assert_eq!(
        rows[0]["bytes"].as_u64().unwrap(),
        24 + 12 + 8 + 16 + config_len + 100
    );
    assert_eq!(rows[0]["new_bytes"], rows[0]["bytes"]);
    // Step 30 changed nothing: every entry is shared with step 20.
    assert_eq!(rows[2]["new_bytes"].as_u64().unwrap(), 0);
    assert_eq!(rows[2]["bytes"], rows[1]["bytes"]);
    let t = rows[0]["time"].as_str().unwrap();
    assert!(
        t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );

    // The text form is an aligned table with one row per step.
    let r = ckptdb(&[&"ls".into(), &db]);
    assert_eq!(r.code, 0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("STEP"));
    assert!(
        lines[1].starts_with("10 ") && lines[1].contains("acc=0.5 loss=1.5"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].contains("KiB") || lines[1].contains(" B"),
        "sizes in human units: {}",
        lines[1]
    );
}

#[test]
fn show_lists_entries_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"show".into(), &db, &"10".into()]);
    assert_eq!(v["step"], 10);
    assert_eq!(v["metrics"], json!({"loss": 1.5, "acc": 0.5}));
    let entries = v["entries"].as_array().unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "config",
            "opt/count",
            "policy/b",
            "policy/w",
            "rng",
            "shape_changes"
        ]
    );
    let by = |k: &str| entries.iter().find(|e| e["key"] == k).unwrap().clone();
    let w = by("policy/w");
    assert_eq!(
        (
            w["kind"].clone(),
            w["dtype"].clone(),
            w["shape"].clone(),
            w["bytes"].clone()
        ),
        (json!("tensor"), json!("f32"), json!([2, 3]), json!(24))
    );
    assert_eq!(by("opt/count")["shape"], json!([]));
    assert_eq!(
        by("config")["value"],
        json!({"lr": 0.001, "name": "cartpole"})
    );
    assert_eq!(by("config")["dtype"], json!(null));
    assert_eq!(by("rng")["kind"], "blob");
    assert_eq!(by("rng")["bytes"], 100);

    // Default selector is latest; the text shows small tensors' values.
    assert_eq!(json(&[&"show".into(), &db])["step"], 30);
    let r = ckptdb(&[&"show".into(), &db, &"20".into()]);
    assert_eq!(r.code, 0);
    let count_line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("opt/count"))
        .unwrap();
    assert!(count_line.trim_end().ends_with("20"), "{count_line}");
    assert!(r.stdout.contains("\"cartpole\""));
}

#[test]
fn selectors_pick_the_right_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let step = |sel: &str| {
        json(&[&"show".into(), &db, &sel.into()])["step"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(step("latest"), 30);
    assert_eq!(step("20"), 20);
    assert_eq!(step("best:acc"), 20);
    assert_eq!(step("best:acc:max"), 20);
    assert_eq!(step("best:loss:min"), 20);
    assert_eq!(step("best:loss"), 10);

    let r = ckptdb(&[&"show".into(), &db, &"15".into()]);
    assert_one_line_error(&r, 2, "step 15 not found");
    let r = ckptdb(&[&"show".into(), &db, &"tag:release".into()]);
    assert_one_line_error(&r, 2, "tag \"release\" not found");
    let r = ckptdb(&[&"show".into(), &db, &"best:reward".into()]);
    assert_one_line_error(&r, 2, "metric \"reward\"");
}

#[test]
fn stats_match_values_computed_here() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"stats".into(), &db, &"10".into(), &"policy/w".into()]);
    let xs: Vec<f64> = w10().iter().map(|&x| x as f64).collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    assert_eq!(v["key"], "policy/w");
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["shape"], json!([2, 3]));
    assert_eq!(v["count"], 6);
    assert_eq!(v["min"], -1.0);
    assert_eq!(v["max"], 1.5);
    assert!((v["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!((v["std"].as_f64().unwrap() - std).abs() < 1e-12);
    assert_eq!((v["nan"].clone(), v["inf"].clone()), (json!(0), json!(0)));
    let hist = v["histogram"].as_array().unwrap();
    assert_eq!(hist.len(), 20);
    assert_eq!(
        hist.iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        6
    );
    assert_eq!(hist[0]["from"], -1.0);
    assert_eq!(hist[19]["to"], 1.5);

    // NaN and Inf are counted apart from the finite statistics.
    let path = dir.path().join("nan.ckpt");
    {
        let d = Db::open(&path).unwrap();
        let mut tx = d.begin_step(1).unwrap();
        tx.put_tensor(
            "x",
            &arr1(&[f64::NAN, 2.0, f64::INFINITY, 4.0, f64::NEG_INFINITY]),
        )
        .unwrap();
        tx.put_tensor("all_nan", &arr1(&[f32::NAN])).unwrap();
        tx.commit().unwrap();
    }
    let v = json(&[
        &"stats".into(),
        &path,
        &"latest".into(),
        &"x".into(),
        &"--bins".into(),
        &"2".into(),
    ]);
    assert_eq!(
        (v["count"].clone(), v["nan"].clone(), v["inf"].clone()),
        (json!(5), json!(1), json!(2))
    );
    assert_eq!(
        (
            v["min"].clone(),
            v["max"].clone(),
            v["mean"].clone(),
            v["std"].clone()
        ),
        (json!(2.0), json!(4.0), json!(3.0), json!(1.0))
    );
    assert_eq!(v["histogram"].as_array().unwrap().len(), 2);
    let v = json(&[&"stats".into(), &path, &"1".into(), &"all_nan".into()]);
    assert_eq!(
        (v["min"].clone(), v["mean"].clone(), v["nan"].clone()),
        (json!(null), json!(null), json!(1))
    );

    // A histogram is drawn in the text form.
    let r = ckptdb(&[&"stats".into(), &db, &"10".into(), &"policy/w".into()]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains('█') && r.stdout.contains("HISTOGRAM"),
        "{}",
        r.stdout
    );

    let r = ckptdb(&[&"stats".into(), &db, &"10".into(), &"config".into()]);
    assert_one_line_error(&r, 2, "not a tensor");
    let r = ckptdb(&[&"stats".into(), &db, &"10".into(), &"nope".into()]);
    assert_one_line_error(&r, 2, "key \"nope\" not found in step 10");
}

#[test]
fn diff_classifies_keys_and_measures_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"diff".into(), &db, &"10".into(), &"20".into()]);
    assert_eq!((v["a"].clone(), v["b"].clone()), (json!(10), json!(20)));
    assert_eq!(v["added"], json!(["policy/new"]));
    assert_eq!(v["removed"], json!(["rng"]));
    assert_eq!(v["unchanged"], json!(["config", "policy/b"]));
    let changed = v["changed"].as_array().unwrap();
    let keys: Vec<&str> = changed.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["opt/count", "policy/w", "shape_changes"]);
    let w = &changed[1];
    assert_eq!(w["max_abs_diff"], 4.0);
    let norm: f64 = w10()
        .iter()
        .map(|&x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let expect = (9.0f64 + 16.0).sqrt() / norm;
    assert!((w["rel_l2"].as_f64().unwrap() - expect).abs() < 1e-12);
    assert_eq!(changed[0]["max_abs_diff"], 10.0);
    assert!((changed[0]["rel_l2"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    // A shape change has no elementwise difference.
    assert_eq!(changed[2]["old"]["shape"], json!([2]));
    assert_eq!(changed[2]["new"]["shape"], json!([3]));
    assert_eq!(changed[2]["max_abs_diff"], json!(null));

    // Steps 20 and 30 hold the same entries.
    let v = json(&[&"diff".into(), &db, &"20".into(), &"latest".into()]);
    assert_eq!(v["changed"], json!([]));
    assert_eq!(v["unchanged"].as_array().unwrap().len(), 6);

    let r = ckptdb(&[&"diff".into(), &db, &"10".into(), &"20".into()]);
    assert!(
        r.stdout
            .starts_with("step 10 → step 20: 1 added, 1 removed, 3 changed, 2 unchanged"),
        "{}",
        r.stdout
    );
}

#[test]
fn history_lists_the_steps_where_a_key_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"history".into(), &db, &"policy/w".into()]);
    let steps: Vec<u64> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [10, 20], "unchanged at 30");
    assert_eq!(v["changes"][0]["shape"], json!([2, 3]));
    let v = json(&[&"history".into(), &db, &"policy/b".into()]);
    assert_eq!(v["changes"].as_array().unwrap().len(), 1);
    let v = json(&[&"history".into(), &db, &"rng".into()]);
    assert_eq!(v["changes"][0]["step"], 10);
    assert_eq!(v["changes"][0]["kind"], "blob");
    let r = ckptdb(&[&"history".into(), &db, &"a/../b".into()]);
    assert_one_line_error(&r, 2, "'..'");
}

#[test]
fn verify_passes_a_clean_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let v = json(&[&"verify".into(), &db]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["steps"], 3);
    // Distinct stored entries: 6 at step 10, 4 new at step 20.
    assert_eq!(v["entries"], 10);
    assert_eq!(v["problems"], json!([]));
    let r = ckptdb(&[&"verify".into(), &db]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with("OK: 3 steps, 10 entries"),
        "{}",
        r.stdout
    );
}

#[test]
fn commands_read_while_a_writer_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let writer = common::open_writer(&path);
    let before: Vec<_> = common::tree(&path)
        .into_iter()
        .map(|f| (std::fs::read(path.join(&f)).unwrap(), f))
        .collect();
    assert_eq!(
        json(&[&"ls".into(), &path])["steps"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(json(&[&"verify".into(), &path])["ok"], true);
    assert_eq!(json(&[&"show".into(), &path])["step"], 30);
    // A commit made while the tool runs is seen by the next run.
    let mut tx = writer.begin_step_from_latest(40).unwrap();
    tx.put_metric("loss", 0.5).unwrap();
    tx.commit().unwrap();
    assert_eq!(json(&[&"show".into(), &path])["step"], 40);
    // The readers changed no file (only the writer's commit did).
    drop(writer);
    let after = common::tree(&path);
    for (bytes, f) in before {
        if !f.ends_with(".seg") && f != "index.redb" {
            assert_eq!(std::fs::read(path.join(&f)).unwrap(), bytes, "{f}");
        }
        assert!(after.contains(&f));
    }
}

#[test]
fn usage_errors_exit_2_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let r = ckptdb(&["frobnicate"]);
    assert_eq!(r.code, 2);
    let r = ckptdb(&[&"show".into(), &db, &"newest".into()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a step selector"), "{}", r.stderr);
    let r = ckptdb(&["verify"]);
    assert_eq!(r.code, 2);
    let r = ckptdb(&["ls", "/nonexistent/run.ckpt"]);
    assert_one_line_error(&r, 2, "is not a ckptdb database");
    let r = ckptdb(&[&"verify".into(), &dir.path().to_path_buf()]);
    assert_one_line_error(&r, 2, "not part of a ckptdb database");
    // With --json a failure is still one JSON document on stdout.
    let r = ckptdb(&["ls", "/nonexistent/run.ckpt", "--json"]);
    assert_one_line_error(&r, 2, "is not a ckptdb database");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("is not a ckptdb database"));
    let r = ckptdb(&["show", "--json"]);
    assert_eq!(r.code, 2);
    assert!(r.json()["error"].as_str().unwrap().starts_with("usage"));
    let r = ckptdb(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("verify") && r.stdout.contains("export"));
}

/// Without the `s3` feature an `s3://` location is a usage error that says
/// so, never a missing directory; writers refuse it, and nothing is made.
#[test]
#[cfg(not(feature = "s3"))]
fn s3_locations_need_the_s3_feature() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let st = dir.path().join("a.safetensors");
    assert_eq!(ckptdb(&[&"export".into(), &db, &"10".into(), &st]).code, 0);
    let url: std::path::PathBuf = "s3://bucket/run".into();
    for args in [
        vec!["ls".into(), url.clone()],
        vec!["show".into(), url.clone(), "10".into()],
        vec!["verify".into(), url.clone()],
        vec!["report".into(), url.clone()],
        vec![
            "import".into(),
            url.clone(),
            st.clone(),
            "--step".into(),
            "1".into(),
        ],
        vec!["compact".into(), url.clone()],
        vec!["push".into(), db.clone(), url.clone()],
        vec!["pull".into(), url.clone(), dir.path().join("pulled")],
    ] {
        let r = ckptdb(&args);
        assert_one_line_error(
            &r,
            2,
            "s3://bucket/run: this ckptdb was built without S3 support",
        );
    }
    assert!(!std::path::Path::new("s3:").exists());
    assert!(!dir.path().join("pulled").exists());
}
