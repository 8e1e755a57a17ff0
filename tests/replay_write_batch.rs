//! The write batch is how a table's full pages reach the log, not what a
//! snapshot holds: whether every page goes to the log as it fills, in
//! batches, or only with the commit, the steps recorded hold the same rows
//! after a reopen, and a page already in the log is not written again.

mod replay_util;

use ckptdb::replay::ReplayOptions;
use ckptdb::Db;
use replay_util::*;

/// 200 slots in pages of 8 rows (368 bytes).
const CAPACITY: u64 = 200;
const PAGE: u64 = 8;

/// Steps 1..=3 recorded after pushing up to each mark, with a table that
/// hands its pages to the log in batches of `batch` bytes; returns the log
/// size and every step's rows after a reopen.
fn record_steps(batch: usize) -> (u64, Vec<Vec<u64>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(CAPACITY, PAGE).write_batch(batch);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        let mut pushed = 0;
        for (step, mark) in [(1, 45u64), (2, 180), (3, 530)] {
            push_range(&mut t, pushed..mark);
            pushed = mark;
            let mut tx = db.begin_step(step).unwrap();
            tx.put_replay(&mut t).unwrap();
            tx.commit().unwrap();
        }
    }
    let log: u64 = std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let db = Db::open_read_only(&path).unwrap();
    let steps = (1..=3)
        .map(|s| {
            let view = db.snapshot(s).unwrap().replay("buf").unwrap();
            (0..view.len())
                .map(|i| which(&view.get(i).unwrap()))
                .collect()
        })
        .collect();
    (log, steps)
}

#[test]
fn every_write_batch_records_the_same_steps() {
    let page_bytes = PAGE as usize * ROW_BYTES;
    let expected: Vec<Vec<u64>> = vec![(0..45).collect(), (0..180).collect(), (330..530).collect()];
    let mut sizes = Vec::new();
    // Every page on its own, three pages at a time, and (the default,
    // 2 MiB) none until the commit writes them.
    for batch in [
        0,
        3 * page_bytes,
        ReplayOptions::new(1, 1).write_batch_bytes(),
    ] {
        let (log, steps) = record_steps(batch);
        assert_eq!(steps, expected, "write batch of {batch} bytes");
        sizes.push(log);
    }
    // Each full page is written once, as a detached entry or by the
    // commit that records it: the first two logs are the same size. With
    // the default batch, pages overwritten before a commit were never
    // written at all.
    assert_eq!(sizes[0], sizes[1], "log sizes {sizes:?}");
    assert!(sizes[2] < sizes[0], "log sizes {sizes:?}");
}
