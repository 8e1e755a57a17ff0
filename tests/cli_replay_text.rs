//! `ckptdb replay` prints f32 fields with f32 digits, counts rows in
//! English, and a table reopened with other options says which in words.

#![cfg(feature = "cli")]

mod common;

use ckptdb::replay::{Field, ReplayOptions, Schema};
use ckptdb::{Db, Error};
use common::{ckptdb, json};

#[test]
fn replay_rows_show_the_stored_digits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let db = Db::open(&path).unwrap();
    let schema = Schema::parse("obs: f32[2], reward: f32[]").unwrap();
    let mut table = db
        .replay_table("buffer", &schema, ReplayOptions::new(8, 4))
        .unwrap();
    table
        .push(&[
            Field::vector("obs", &[0.1f32, -2.3]),
            Field::scalar("reward", &0.7f32),
        ])
        .unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut table).unwrap();
    tx.commit().unwrap();
    drop(table);

    let v = json(&["replay".as_ref(), path.as_os_str(), "buffer".as_ref()]);
    assert_eq!(v["rows"][0]["obs"].to_string(), "[0.1,-2.3]");
    assert_eq!(v["rows"][0]["reward"].to_string(), "0.7");
    let r = ckptdb(&["replay".as_ref(), path.as_os_str(), "buffer".as_ref()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\nnewest 1 row\n"), "{}", r.stdout);
    assert!(r.stdout.contains("[0.1, -2.3]"), "{}", r.stdout);
    assert!(!r.stdout.contains("0.100000001"), "{}", r.stdout);

    // Reopened with other options: the error names them as written.
    let err = db
        .replay_table("buffer", &schema, ReplayOptions::new(8, 4).prioritized(0.6))
        .unwrap_err();
    match &err {
        Error::InvalidArgument(msg) => {
            assert!(
                msg.ends_with(
                    "(capacity 8, page size 4, uniform), not obs: f32[2], reward: f32[] \
                     (capacity 8, page size 4, prioritized (alpha 0.6))"
                ),
                "{msg}"
            );
            assert!(!msg.contains("None") && !msg.contains("Some("), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}
