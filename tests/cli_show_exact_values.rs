//! `show --json` carries stored serde values exactly: a u128 (an RNG state)
//! keeps every digit, as the text output does.

#![cfg(feature = "cli")]

mod common;

use ckptdb::Db;
use common::{ckptdb, json};

#[derive(serde::Serialize)]
struct RngState {
    state: u128,
    increment: u128,
}

#[test]
fn show_json_keeps_every_digit_of_a_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_value(
        "rng",
        &RngState {
            state: 32055956349836802234346122529997645505,
            increment: u128::MAX,
        },
    )
    .unwrap();
    tx.put_value("lr", &0.000_300_000_000_000_000_1f64).unwrap();
    tx.commit().unwrap();
    drop(db);

    let v = json(&["show".as_ref(), path.as_os_str()]);
    let entry = |key: &str| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap()["value"]
            .clone()
    };
    let rng = entry("rng");
    assert_eq!(
        rng["state"].to_string(),
        "32055956349836802234346122529997645505"
    );
    assert_eq!(rng["increment"].to_string(), u128::MAX.to_string());
    assert_eq!(entry("lr").to_string(), "0.0003000000000000001");
    // The document itself holds the digits, not a float rounding of them.
    let r = ckptdb(&["show".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(
        r.stdout
            .contains("\"state\": 32055956349836802234346122529997645505"),
        "{}",
        r.stdout
    );
}
