//! kill -9 of a random rank at random moments: four writer processes write
//! two global steps per round into one shared directory, one of them is
//! killed (SIGKILL) somewhere in its work, and then:
//! - every globally committed step has all four parts and reads back
//!   bit-exact, and no step lacking the victim's part is visible;
//! - the restarted victim goes on where it stopped, and the round's steps
//!   commit;
//! - at the end each rank's log holds exactly the local steps that
//!   committed global steps name (dead attempts are reclaimed).
//!
//! `CKPTDB_RANK_KILLS` sets the rounds (default 50); `CKPTDB_RANK_KILL_SEED`
//! replays a run.

mod ranks_util;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use ckptdb::distributed::DistributedDb;
use ckptdb::Db;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ranks_util::*;

const WORLD: u32 = 4;
const PER_ROUND: u64 = 2;

#[test]
fn ranks_kill9_child() {
    child_main();
}

fn check_committed(run: &DistributedDb, seen: &mut BTreeSet<u64>) -> Vec<u64> {
    let steps = run.steps().unwrap();
    for &s in &steps {
        let snap = run.snapshot(s).unwrap();
        // Every sharded key has its four slices.
        assert_eq!(snap.key("emb").unwrap().shards.len(), WORLD as usize);
        if seen.insert(s) {
            check_step(&snap, 3);
        }
    }
    steps
}

#[test]
fn killed_rank_never_leaves_a_partial_step() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("CKPTDB_RANK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CKPTDB_RANK_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("rank kill test: {rounds} rounds, CKPTDB_RANK_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let name = "ranks_kill9_child";
    let mut seen = BTreeSet::new();
    let mut killed_mid_step = 0;
    let mut killed_after_part = 0;
    for round in 0..rounds {
        let (from, to) = (1 + round * PER_ROUND, 1 + (round + 1) * PER_ROUND);
        let victim = rng.random_range(0..WORLD);
        let mut children: Vec<_> = (0..WORLD)
            .map(|r| Some(spawn(name, &root, r, WORLD, from, to)))
            .collect();
        let mut v = children[victim as usize].take().unwrap();
        let stdout = v.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("PART ") {
                    let _ = tx.send(());
                }
            }
        });
        // Half the time kill while the victim starts or writes its first
        // step; otherwise once it published one part, during the next.
        let mut parts = 0;
        if rng.random_bool(0.5) {
            parts += rx.recv_timeout(Duration::from_secs(20)).is_ok() as usize;
            std::thread::sleep(Duration::from_micros(rng.random_range(0..8_000)));
        } else {
            std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        }
        v.kill().unwrap();
        v.wait().unwrap();
        reader.join().unwrap();
        parts += rx.try_iter().count();
        if parts < PER_ROUND as usize {
            killed_mid_step += 1;
        }
        if parts > 0 {
            killed_after_part += 1;
        }
        for c in children.into_iter().flatten() {
            finish(c);
        }
        // The survivors are done; the round's steps the victim did not
        // publish must not be visible.
        let run = DistributedDb::open(&root).unwrap();
        let steps = check_committed(&run, &mut seen);
        for s in from..to {
            let visible = steps.contains(&s);
            let victim_part = root.join(format!("global/{s:020}/part-{victim}")).exists();
            assert!(
                !visible || victim_part,
                "round {round}: step {s} visible without rank {victim}'s part"
            );
        }
        // The victim restarts and goes on: the round's steps commit.
        finish(spawn(name, &root, victim, WORLD, from, to));
        let steps = check_committed(&run, &mut seen);
        assert!(
            (from..to).all(|s| steps.contains(&s)),
            "round {round}: steps {from}..{to} not all committed: {steps:?}"
        );
    }
    eprintln!(
        "rank kill test: {killed_mid_step} of {rounds} kills before the victim's last part, \
         {killed_after_part} after its first"
    );
    assert!(
        killed_mid_step > 0,
        "no kill landed before a part was published"
    );
    assert!(
        killed_after_part > 0,
        "no kill landed after a part was published"
    );
    // One more step by every rank reclaims what dead attempts left.
    let last = 1 + rounds * PER_ROUND;
    let children: Vec<_> = (0..WORLD)
        .map(|r| spawn(name, &root, r, WORLD, last, last + 1))
        .collect();
    for c in children {
        finish(c);
    }
    let run = DistributedDb::open(&root).unwrap();
    let steps = check_committed(&run, &mut seen);
    assert_eq!(steps, (1..=last).collect::<Vec<_>>());
    for r in 0..WORLD {
        let local = Db::open_read_only(root.join("ranks").join(r.to_string())).unwrap();
        let named: Vec<u64> = steps
            .iter()
            .map(|&s| {
                let bytes = std::fs::read(root.join(format!("global/{s:020}/COMMIT"))).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v["local_steps"][r as usize].as_u64().unwrap()
            })
            .collect();
        assert_eq!(
            local.steps(),
            named,
            "rank {r}'s log holds only committed parts"
        );
    }
}
