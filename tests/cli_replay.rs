//! `ckptdb replay` on a database made here: a table's summary and newest
//! rows as JSON equal to what was pushed, the listing of two tables, the
//! text form, an older step, and an unknown table.

mod common;

use ckptdb::replay::{Field, ReplayOptions, Schema};
use common::{assert_one_line_error, ckptdb, json};
use serde_json::json;

/// The row pushed as transition `i` of table `buf`.
fn obs(i: u64) -> [f32; 2] {
    [i as f32, i as f32 + 0.5]
}

fn action(i: u64) -> i64 {
    (i % 3) as i64 - 1
}

fn done(i: u64) -> bool {
    i.is_multiple_of(4)
}

/// Step 1: `buf` (capacity 10, pages of 4) with 7 rows and prioritized
/// `prio` with 2; step 2: `buf` with 13 rows (it wrapped), `prio` unchanged.
fn make_db(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("db");
    let db = ckptdb::Db::open(&path).unwrap();
    let schema = Schema::parse("obs: f32[2], action: i64[], done: bool[]").unwrap();
    let mut buf = db
        .replay_table("buf", &schema, ReplayOptions::new(10, 4))
        .unwrap();
    let prio_schema = Schema::parse("x: u8[]").unwrap();
    let mut prio = db
        .replay_table(
            "prio",
            &prio_schema,
            ReplayOptions::new(8, 8).prioritized(0.5),
        )
        .unwrap();
    let push = |t: &mut ckptdb::replay::ReplayTable<'_>, i: u64| {
        let (o, a, d) = (obs(i), action(i), done(i));
        t.push(&[
            Field::vector("obs", &o),
            Field::scalar("action", &a),
            Field::scalar("done", &d),
        ])
        .unwrap();
    };
    for i in 0..7 {
        push(&mut buf, i);
    }
    for x in [7u8, 9] {
        prio.push(&[Field::scalar("x", &x)]).unwrap();
    }
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut buf).unwrap();
    tx.put_replay(&mut prio).unwrap();
    tx.commit().unwrap();
    for i in 7..13 {
        push(&mut buf, i);
    }
    let mut tx = db.begin_step(2).unwrap();
    tx.put_replay(&mut buf).unwrap();
    tx.put_replay(&mut prio).unwrap();
    tx.commit().unwrap();
    path
}

fn expected_row(i: u64) -> serde_json::Value {
    json!({
        "slot": i % 10,
        "serial": i,
        "obs": obs(i),
        "action": action(i),
        "done": done(i),
    })
}

#[test]
fn replay_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let db = db.to_str().unwrap();

    // One table, latest step: 13 pushed into 10 slots; the newest 4 rows
    // are serials 9..13 in slots 9, 0, 1, 2.
    let v = json(&["replay", db, "buf", "--sample", "4"]);
    let schema = json!([
        {"name": "obs", "dtype": "f32", "shape": [2]},
        {"name": "action", "dtype": "i64", "shape": []},
        {"name": "done", "dtype": "bool", "shape": []},
    ]);
    assert_eq!(v["step"], 2);
    assert_eq!(v["table"], "buf");
    assert_eq!(v["schema"], schema);
    assert_eq!(v["capacity"], 10);
    assert_eq!(v["page_size"], 4);
    assert_eq!(v["len"], 10);
    assert_eq!(v["total_inserted"], 13);
    assert_eq!(v["prioritized"], false);
    let rows: Vec<serde_json::Value> = (9..13).map(expected_row).collect();
    assert_eq!(v["rows"], json!(rows));

    // An older step by --step, more rows asked for than held.
    let v = json(&["replay", db, "buf", "--step", "1", "--sample", "100"]);
    assert_eq!(v["step"], 1);
    assert_eq!(v["len"], 7);
    assert_eq!(v["total_inserted"], 7);
    let rows: Vec<serde_json::Value> = (0..7).map(expected_row).collect();
    assert_eq!(v["rows"], json!(rows));

    // The listing: both tables, sorted by name, without rows.
    let v = json(&["replay", db]);
    assert_eq!(v["step"], 2);
    let tables = v["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    assert_eq!(tables[0]["table"], "buf");
    assert_eq!(tables[0]["len"], 10);
    assert_eq!(tables[0]["schema"], schema);
    assert!(tables[0].get("rows").is_none());
    assert_eq!(tables[1]["table"], "prio");
    assert_eq!(tables[1]["capacity"], 8);
    assert_eq!(tables[1]["page_size"], 8);
    assert_eq!(tables[1]["len"], 2);
    assert_eq!(tables[1]["total_inserted"], 2);
    assert_eq!(tables[1]["prioritized"], true);
    assert_eq!(tables[1]["alpha"], 0.5);
    assert_eq!(
        tables[1]["schema"],
        json!([{"name": "x", "dtype": "u8", "shape": []}])
    );

    // The prioritized table's rows.
    let v = json(&["replay", db, "prio", "--sample", "2"]);
    assert_eq!(
        v["rows"],
        json!([{"slot": 0, "serial": 0, "x": 7}, {"slot": 1, "serial": 1, "x": 9}])
    );

    // Text: an aligned listing and a row table with compact vectors.
    let r = ckptdb(&["replay", db]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let header = r.stdout.lines().find(|l| l.starts_with("TABLE")).unwrap();
    let buf_line = r.stdout.lines().find(|l| l.starts_with("buf ")).unwrap();
    let col = header.find("SCHEMA").unwrap();
    assert_eq!(&buf_line[col..], "obs: f32[2], action: i64[], done: bool[]");
    assert!(r.stdout.lines().any(|l| l.starts_with("prio ")));
    let r = ckptdb(&["replay", db, "buf", "--sample", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().unwrap();
    let cells: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(cells, ["2", "12", "[12.0,", "12.5]", "-1", "true"]);
    let header = r.stdout.lines().find(|l| l.contains("SLOT")).unwrap();
    assert_eq!(last.find("[12.0"), header.find("obs"), "{header}\n{last}");

    // Unknown table: one error line, exit 2; with --json one document.
    let r = ckptdb(&["replay", db, "nope"]);
    assert_one_line_error(&r, 2, "replay table \"nope\"");
    let r = ckptdb(&["replay", db, "nope", "--json"]);
    assert_eq!(r.code, 2);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
}

#[test]
fn replay_works_while_a_writer_holds_the_db() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let _writer = common::open_writer(&path);
    let v = json(&["replay", path.to_str().unwrap(), "buf", "--sample", "1"]);
    assert_eq!(v["total_inserted"], 13);
    assert_eq!(v["rows"], json!([expected_row(12)]));
}
