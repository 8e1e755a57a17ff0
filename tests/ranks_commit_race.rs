//! Coordinators racing for one global commit: when the last rank publishes
//! its part, that rank and two coordinators (each with its own handle, as
//! separate processes would have) try to write the commit record at the
//! same moment. Exactly one creates it, every caller sees the step
//! committed, and the record is the same whoever wrote it.

mod ranks_util;

use std::sync::{Arc, Barrier};

use ckptdb::distributed::{DistributedDb, GlobalOutcome, RankDb};
use ranks_util::*;

const STEPS: u64 = 20;

#[test]
fn exactly_one_coordinator_wins_each_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let ranks: Vec<RankDb> = (0..3).map(|r| RankDb::open(&root, r, 3).unwrap()).collect();
    let mut records = Vec::new();
    for s in 1..=STEPS {
        for db in &ranks[..2] {
            let parts = db.rank() + 1;
            assert_eq!(write_step(db, s).unwrap(), GlobalOutcome::Pending { parts });
        }
        let barrier = Arc::new(Barrier::new(3));
        let coordinators: Vec<_> = (0..2)
            .map(|_| {
                let (root, barrier) = (root.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let run = DistributedDb::open(&root).unwrap();
                    barrier.wait();
                    loop {
                        match run.try_commit(s).unwrap() {
                            GlobalOutcome::Pending { .. } => std::hint::spin_loop(),
                            other => return other,
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        let mut outcomes = vec![write_step(&ranks[2], s).unwrap()];
        outcomes.extend(coordinators.into_iter().map(|c| c.join().unwrap()));
        let wins = outcomes
            .iter()
            .filter(|o| **o == GlobalOutcome::Committed { won: true })
            .count();
        assert_eq!(wins, 1, "step {s}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, GlobalOutcome::Committed { .. })),
            "step {s}: {outcomes:?}"
        );
        records.push(std::fs::read(root.join(format!("global/{s:020}/COMMIT"))).unwrap());
        // A late coordinator finds the record and does not write it.
        let run = DistributedDb::open(&root).unwrap();
        assert_eq!(
            run.try_commit(s).unwrap(),
            GlobalOutcome::Committed { won: false }
        );
    }
    let run = DistributedDb::open(&root).unwrap();
    assert_eq!(run.steps().unwrap(), (1..=STEPS).collect::<Vec<_>>());
    for s in 1..=STEPS {
        check_step(&run.snapshot(s).unwrap(), 2);
    }
    // Each record is one committed step's, whoever wrote it.
    for (i, r) in records.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(r).unwrap();
        assert_eq!(v["outcome"], "committed");
        assert_eq!(v["step"], i as u64 + 1);
    }
}
