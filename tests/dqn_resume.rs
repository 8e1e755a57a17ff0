//! The training example, killed with SIGKILL at random moments and resumed
//! with the same command, ends with a final snapshot bit-for-bit identical
//! to an uninterrupted run's.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ckptdb::Db;

const STEPS: &str = "6000";

fn command(db: &Path) -> Command {
    let mut c = Command::new(common::example_binary());
    c.args([
        "--db",
        db.to_str().unwrap(),
        "--steps",
        STEPS,
        "--seed",
        "3",
    ])
    .args(["--save-every", "500", "--quiet"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// The final step, its entries and metrics, and its replay table's rows.
fn final_snapshot(db: &Path) -> (u64, common::StepDump, (u64, Vec<Vec<u8>>)) {
    let db = Db::open_read_only(db).unwrap();
    let report = db.verify_all(&mut |_, _| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.steps >= 2, "retention keeps the newest and the best");
    let step = db.latest_step().unwrap();
    let replay = db.snapshot(step).unwrap().replay("replay").unwrap();
    let rows = (0..replay.len())
        .map(|i| replay.get(i).unwrap().bytes().to_vec())
        .collect();
    let table = (replay.total_inserted(), rows);
    (step, common::dump(&db).remove(&step).unwrap(), table)
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.ckpt");
    assert!(command(&clean).status().unwrap().success());
    let (clean_step, clean_snap, clean_table) = final_snapshot(&clean);
    assert_eq!(clean_step, 6000);
    assert_eq!(clean_table.0, 6000, "one transition per step");

    let killed = dir.path().join("killed.ckpt");
    let mut kills = 0;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = command(&killed).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(150 + seed % 900));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= 2,
        "the run finished too fast to be killed ({kills} kills)"
    );
    assert!(command(&killed).status().unwrap().success());
    let (step, snap, table) = final_snapshot(&killed);
    assert_eq!(step, clean_step);
    assert_eq!(
        snap.entries.keys().collect::<Vec<_>>(),
        clean_snap.entries.keys().collect::<Vec<_>>()
    );
    for (key, (kind, bytes)) in &clean_snap.entries {
        let (k2, b2) = &snap.entries[key];
        assert_eq!(kind, k2, "{key}");
        assert!(bytes == b2, "{key} differs after {kills} kills");
    }
    assert_eq!(snap.metrics, clean_snap.metrics);
    assert_eq!(table.0, clean_table.0);
    assert!(table.1 == clean_table.1, "replay tables differ");
}
