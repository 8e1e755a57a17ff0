//! A rank that never publishes its part of a step: the step never becomes
//! visible, the next step commits without it, the orphaned parts are
//! deleted, and every rank drops its local data of the dead step at its
//! next commit.

mod ranks_util;

use ckptdb::distributed::{DistributedDb, GlobalOutcome, RankDb};
use ranks_util::*;

#[test]
fn orphaned_parts_are_reclaimed_when_a_later_step_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let ranks: Vec<RankDb> = (0..4).map(|r| RankDb::open(&root, r, 4).unwrap()).collect();
    for s in 1..=4 {
        for db in &ranks {
            write_step(db, s).unwrap();
        }
    }
    // Step 5: rank 2 never publishes (it died before its part was durable).
    for db in ranks.iter().filter(|d| d.rank() != 2) {
        assert!(matches!(
            write_step(db, 5).unwrap(),
            GlobalOutcome::Pending { .. }
        ));
    }
    let run = DistributedDb::open(&root).unwrap();
    assert_eq!(run.steps().unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(
        run.try_commit(5).unwrap(),
        GlobalOutcome::Pending { parts: 3 }
    );
    // Step 6 commits and abandons step 5.
    let outcomes: Vec<_> = ranks.iter().map(|db| write_step(db, 6).unwrap()).collect();
    assert_eq!(outcomes[3], GlobalOutcome::Committed { won: true });
    assert_eq!(run.steps().unwrap(), vec![1, 2, 3, 4, 6]);
    assert_eq!(run.try_commit(5).unwrap(), GlobalOutcome::Abandoned);
    let dir5 = root.join(format!("global/{:020}", 5));
    let left: Vec<String> = std::fs::read_dir(&dir5)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["COMMIT".to_owned()], "only the verdict stays");
    // Rank 2 cannot publish step 5 late, and cannot go back.
    assert!(ranks[2].begin_step(5).is_err());
    // The dead step's local data goes at each rank's next commit.
    for db in &ranks {
        write_step(db, 7).unwrap();
        let globals: Vec<u64> = db.local().steps().iter().map(|l| l >> 16).collect();
        assert_eq!(globals, vec![1, 2, 3, 4, 6, 7], "rank {}", db.rank());
    }
    for s in run.steps().unwrap() {
        check_step(&run.snapshot(s).unwrap(), 4);
    }
}
