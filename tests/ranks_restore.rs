//! Four writer processes commit 30 global steps of sharded and replicated
//! tensors into one shared directory; every step then restores bit-exact
//! at world sizes 1, 2, 3, 4 and 8, and a reader whose slice is one
//! writer's shard gets a view into the map, not a copy.

mod ranks_util;

use ckptdb::distributed::DistributedDb;
use ranks_util::*;

const STEPS: u64 = 30;

#[test]
fn ranks_restore_child() {
    child_main();
}

#[test]
fn four_writer_processes_restore_at_any_world_size() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let children: Vec<_> = (0..4)
        .map(|r| spawn("ranks_restore_child", &root, r, 4, 1, STEPS + 1))
        .collect();
    for c in children {
        finish(c);
    }
    let run = DistributedDb::open(&root).unwrap();
    assert_eq!(run.world_size(), 4);
    assert_eq!(run.steps().unwrap(), (1..=STEPS).collect::<Vec<_>>());
    for s in 1..=STEPS {
        let snap = run.snapshot(s).unwrap();
        for readers in [1, 2, 3, 4, 8] {
            check_step(&snap, readers);
        }
        // Reader q of 4 asks for exactly writer q's rows: no copy.
        let es = emb_shape(s);
        for q in 0..4 {
            let (start, len) = split(es[0], 4, q);
            let v = snap
                .read_slice::<f32>("emb", &[start, 0], &[len, es[1]])
                .unwrap();
            assert!(v.is_view(), "step {s} reader {q}: one shard covers it");
        }
        // Rows 0..3 of the grid span two column blocks: assembled.
        let v = snap.read_slice::<f64>("grid", &[0, 0], &[3, 10]).unwrap();
        assert!(!v.is_view());
        // A replicated tensor lives in rank 0's log only.
        let bias = snap.key("bias").unwrap();
        assert!(bias.replicated);
        assert_eq!(bias.shards, vec![(0, vec![0], vec![7])]);
    }
    // Replicated bytes are written once per change, by rank 0 only.
    for r in 1..4 {
        let local = ckptdb::Db::open_read_only(root.join("ranks").join(r.to_string())).unwrap();
        let snap = local.latest().unwrap().unwrap();
        assert!(!snap.contains("bias") && snap.contains("emb"));
    }
}
