//! `ckptdb ls` says where the bytes go: live bytes (replay pages
//! included), bytes on disk, and what `compact` would reclaim — each
//! checked against what `verify` reads, the files' sizes, and what
//! `compact` then actually frees.

#![cfg(feature = "cli")]

mod common;

use ckptdb::replay::{Field, ReplayOptions, Schema};
use ckptdb::{Db, DbOptions};
use common::{ckptdb, content, json};

fn files_bytes(path: &std::path::Path) -> u64 {
    let segs: u64 = common::segments(path)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    segs + std::fs::metadata(path.join("index.redb")).map_or(0, |m| m.len())
}

#[test]
fn footer_counts_replay_pages_disk_and_reclaimable_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = Db::open_with(&path, DbOptions::default().segment_size(64 << 10)).unwrap();
        let schema = Schema::parse("obs: f32[16]").unwrap();
        let mut table = db
            .replay_table("buffer", &schema, ReplayOptions::new(4096, 128))
            .unwrap();
        for s in 1..=30u64 {
            for i in 0..100 {
                let obs = [(s * 1000 + i) as f32; 16];
                table.push(&[Field::vector("obs", &obs)]).unwrap();
            }
            let mut tx = db.begin_step(s).unwrap();
            tx.put_blob("w", &content(s, "w", 20_000)).unwrap();
            tx.put_replay(&mut table).unwrap();
            tx.commit().unwrap();
        }
        // Keep the last two steps: the segments of the others hold nothing
        // live but the replay pages both still reference.
        let mut tx = db.begin_step_from(31, 30).unwrap();
        for s in 1..=29 {
            tx.drop_step(s).unwrap();
        }
        tx.commit().unwrap();
    }
    let p = path.to_str().unwrap();
    let ls = json(&["ls", p]);
    let storage = &ls["storage"];
    let verify = json(&["verify", p]);
    // Every distinct live entry once, replay pages included: what verify
    // reads.
    assert_eq!(storage["live_bytes"], verify["bytes"]);
    // 30 × 100 rows of 64 bytes are held in pages; step 30's blob is the
    // only other live payload (31 shares it).
    let live = storage["live_bytes"].as_u64().unwrap();
    assert!(live >= 20_000 + 3000 * 64, "{live}");
    assert_eq!(storage["disk_bytes"].as_u64().unwrap(), files_bytes(&path));
    assert_eq!(storage["steps"], 2);
    let reclaimable = storage["reclaimable_bytes"].as_u64().unwrap();
    assert!(reclaimable > 0);

    let text = ckptdb(&["ls", p]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let footer = text.stdout.lines().last().unwrap();
    assert!(
        footer.starts_with("2 steps: ")
            && footer.contains(" live (replay pages included), ")
            && footer.contains(" on disk, compact would reclaim "),
        "{footer}"
    );

    // The estimate is what compaction frees, short only by the relocated
    // manifests it writes (a few hundred bytes each).
    let c = json(&["compact", p]);
    let freed = c["bytes_before"].as_u64().unwrap() - c["bytes_after"].as_u64().unwrap();
    assert!(
        reclaimable >= freed && reclaimable - freed < 4096,
        "predicted {reclaimable}, compact freed {freed}: {c}"
    );
    // Nothing left to reclaim, and the live bytes did not change.
    let after = json(&["ls", p]);
    assert_eq!(after["storage"]["live_bytes"].as_u64(), Some(live));
    assert_eq!(after["storage"]["reclaimable_bytes"], 0);
}

#[test]
fn empty_database_has_an_all_zero_footer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Db::open(&path).unwrap());
    let ls = json(&["ls", path.to_str().unwrap()]);
    assert_eq!(ls["steps"], serde_json::json!([]));
    assert_eq!(ls["storage"]["live_bytes"], 0);
    assert_eq!(ls["storage"]["reclaimable_bytes"], 0);
    assert_eq!(
        ls["storage"]["disk_bytes"].as_u64().unwrap(),
        files_bytes(&path)
    );
}
