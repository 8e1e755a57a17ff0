//! `ckptdb report` on input that leaves little or nothing to show: an empty
//! database, a single step, a prefix matching no key, a step range whose
//! end is no live step, and an output path in a missing directory.

#![cfg(feature = "cli")]

mod common;

use ckptdb::ndarray::arr1;
use ckptdb::Db;
use common::{assert_one_line_error, ckptdb, json};

fn one_step(path: &std::path::Path) {
    let db = Db::open(path).unwrap();
    let mut tx = db.begin_step(7).unwrap();
    tx.put_tensor("policy/w", &arr1(&[3.0f32, 4.0])).unwrap();
    tx.put_metric("eval_return", 12.5).unwrap();
    tx.commit().unwrap();
}

#[test]
fn empty_database_gives_a_page_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    drop(Db::open(&db).unwrap());
    let out = dir.path().join("r.html");
    let v = json(&["report", db.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(v["steps"], serde_json::json!([]));
    assert_eq!(v["keys"], serde_json::json!([]));
    assert_eq!(v["first_bad"], serde_json::json!([]));
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(
        page.contains("id=\"no-steps\">This database holds no step yet"),
        "{page}"
    );
    assert!(page.ends_with("</html>\n"));
    let r = ckptdb(&["report", db.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("wrote {}: no step to show\n", out.display())
    );
}

#[test]
fn one_step_has_norms_and_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    one_step(&db);
    let out = dir.path().join("r.html");
    let v = json(&["report", db.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    let cell = &v["keys"][0]["cells"][0];
    assert_eq!(cell["l2"].as_f64(), Some(5.0));
    assert!(cell["rel_change"].is_null());
    assert_eq!(v["metrics"][0]["best_step"], 7);
    let page = std::fs::read_to_string(&out).unwrap();
    assert_eq!(page.matches("<rect class=\"cell\"").count(), 2);
    assert!(page.contains("data-metric=\"eval_return\""));
}

#[test]
fn a_prefix_matching_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    one_step(&db);
    let out = dir.path().join("r.html");
    let v = json(&[
        "report",
        db.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--prefix",
        "target/",
    ]);
    assert_eq!(v["keys"], serde_json::json!([]));
    assert_eq!(v["prefix"], "target/");
    // The steps and metrics are still there; only the tensors are filtered.
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(
        page.contains("id=\"no-keys\">No tensor key starts with <code>target/</code>."),
        "{page}"
    );
    assert!(!page.contains("<rect class=\"cell"));
}

#[test]
fn step_range_ends_must_name_live_steps() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    one_step(&db);
    let p = db.to_str().unwrap();
    let out = dir.path().join("r.html");
    let v = json(&["report", p, "-o", out.to_str().unwrap(), "--steps", "..7"]);
    assert_eq!(v["steps"].as_array().unwrap().len(), 1);
    // An end that names no live step is refused, not an empty page.
    let r = ckptdb(&["report", p, "--json", "--steps", "8.."]);
    assert_one_line_error(&r, 2, "step 8 not found");
    let r = ckptdb(&["report", p, "--steps", "latest..7x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a step selector"), "{}", r.stderr);
}

#[test]
fn an_output_path_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.ckpt");
    one_step(&db);
    let out = dir.path().join("no/such/dir/r.html");
    let r = ckptdb(&["report", db.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_one_line_error(
        &r,
        2,
        &format!(
            "cannot write {}: directory {} does not exist",
            out.display(),
            out.parent().unwrap().display()
        ),
    );
    assert!(!dir.path().join("no").exists());
    // A directory is not a page either.
    let r = ckptdb(&[
        "report",
        db.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&r, 2, "it is a directory");
}
