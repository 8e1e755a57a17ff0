//! What a new user mistypes gets an error that says what is wrong: an
//! unknown key for `history`, an unknown `best:` mode, a key no step could
//! hold, a file that is not safetensors, a usage error under `--json`; and
//! the help says what it must.

#![cfg(feature = "cli")]

mod common;

use ckptdb::Db;
use common::{assert_one_line_error, ckptdb};

fn db(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(10).unwrap();
    tx.put_tensor("w", &ckptdb::ndarray::arr1(&[1.0f32, 2.0]))
        .unwrap();
    tx.put_metric("eval_return", 3.0).unwrap();
    tx.commit().unwrap();
    path
}

#[test]
fn history_of_an_unknown_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(dir.path());
    let r = ckptdb(&["history".as_ref(), path.as_os_str(), "unknown/key".as_ref()]);
    assert_one_line_error(&r, 2, "a live step holding key \"unknown/key\" not found");
    let r = ckptdb(&["history".as_ref(), path.as_os_str(), "w".as_ref()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn an_unknown_best_mode_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(dir.path());
    let r = ckptdb(&[
        "show".as_ref(),
        path.as_os_str(),
        "best:eval_return:foo".as_ref(),
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("\"foo\" is not a mode of best:eval_return"),
        "{}",
        r.stderr
    );
    for sel in [
        "best:eval_return",
        "best:eval_return:max",
        "best:eval_return:min",
    ] {
        let r = ckptdb(&[
            "show".as_ref(),
            path.as_os_str(),
            sel.as_ref(),
            "--json".as_ref(),
        ]);
        assert_eq!(r.code, 0, "{sel}: {}", r.stderr);
        assert_eq!(r.json()["step"], 10);
    }
}

#[test]
fn a_key_no_step_could_hold_is_invalid_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(dir.path());
    let r = ckptdb(&[
        "stats".as_ref(),
        path.as_os_str(),
        "latest".as_ref(),
        "../etc".as_ref(),
    ]);
    assert_one_line_error(&r, 2, "invalid argument: key \"../etc\"");
    let r = ckptdb(&[
        "stats".as_ref(),
        path.as_os_str(),
        "latest".as_ref(),
        "x".as_ref(),
    ]);
    assert_one_line_error(&r, 2, "key \"x\" not found in step 10");
}

#[test]
fn a_malformed_file_is_called_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(dir.path());
    let file = dir.path().join("bad_json.st");
    let header = br#"{"a":{"dtype":"F32""#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&file, bytes).unwrap();
    let r = ckptdb(&[
        "import".as_ref(),
        path.as_os_str(),
        file.as_os_str(),
        "--step".as_ref(),
        "11".as_ref(),
    ]);
    assert_one_line_error(
        &r,
        2,
        &format!("{} is not a valid safetensors file: ", file.display()),
    );
    assert!(!r.stderr.contains("corruption"), "{}", r.stderr);
}

#[test]
fn json_usage_errors_keep_clap_detail() {
    let r = ckptdb(&["ls", "--json", "--frobnicate"]);
    assert_eq!(r.code, 2);
    assert_eq!(
        r.json()["error"],
        "usage: unexpected argument '--frobnicate' found"
    );
}

#[test]
fn help_says_which_commands_write_and_defaults_once() {
    let r = ckptdb(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("Every command but `import` and `compact` opens the database read-only"),
        "{}",
        r.stdout
    );
    let r = ckptdb(&["show", "--help"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout.matches("latest").count(), 1, "{}", r.stdout);
}
