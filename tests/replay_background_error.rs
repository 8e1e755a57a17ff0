//! A batch of full replay pages is written by the log's background thread:
//! the push that hands it over returns at once, and a failed write is
//! reported by the next call that needs the writer, which poisons it.
//! Nothing committed is lost: reopening gives the last commit, with the
//! table exactly as it was recorded.

mod replay_util;

use std::sync::Arc;

use ckptdb::replay::ReplayOptions;
use ckptdb::storage::fault::{Fault, FaultStorage, IoFault};
use ckptdb::storage::Storage;
use ckptdb::{Db, DbOptions, Error};
use replay_util::{cartpole, push_range, which, ROW_BYTES};

/// Rows per page: a batch (4 pages) is 32 rows.
const PAGE: u64 = 8;

fn table_options() -> ReplayOptions {
    ReplayOptions::new(1000, PAGE).write_batch(4 * PAGE as usize * ROW_BYTES)
}

fn options(storage: Arc<dyn Storage>) -> DbOptions {
    DbOptions::default().storage(storage)
}

/// Commits step 1 with rows `0..40` (one batch written outside the
/// transaction, the rest by the commit).
fn commit_step_one(db: &Db) {
    let mut table = db
        .replay_table("buf", &cartpole(), table_options())
        .unwrap();
    push_range(&mut table, 0..40);
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut table).unwrap();
    tx.commit().unwrap();
}

#[test]
fn failed_background_page_write_is_reported_by_the_next_call() {
    // A clean run learns the operation number of the first background
    // write after step 1: the batch of rows 40..72.
    let probe = FaultStorage::new(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let first_bg_write = {
        let db = Db::open_with(dir.path().join("probe.ckpt"), options(probe.shared())).unwrap();
        commit_step_one(&db);
        let mut table = db
            .replay_table("buf", &cartpole(), table_options())
            .unwrap();
        let before = probe.ops();
        push_range(&mut table, 40..72);
        // Taking the writer waits for the batch.
        drop(db.begin_step(2).unwrap());
        assert!(probe.ops() > before, "the batch was not written");
        before + 1
    };

    let fs = FaultStorage::new(Fault::Fail {
        at: first_bg_write,
        error: IoFault::Eio,
        persistent: false,
    });
    let path = dir.path().join("run.ckpt");
    {
        let db = Db::open_with(&path, options(fs.shared())).unwrap();
        commit_step_one(&db);
        let mut table = db
            .replay_table("buf", &cartpole(), table_options())
            .unwrap();
        // The pushes that hand the batch over succeed...
        push_range(&mut table, 40..72);
        // ...and the next call that takes the writer reports the failure.
        let commit = db.begin_step(2).and_then(|mut tx| {
            tx.put_replay(&mut table)?;
            tx.commit()
        });
        match commit {
            Err(Error::Io { op, source, .. }) => {
                assert_eq!(op, "write");
                assert_eq!(source.raw_os_error(), Some(5));
            }
            other => panic!("the failed page write was not reported: {other:?}"),
        }
        assert!(fs.failed());
        assert!(matches!(db.begin_step(3), Err(Error::Poisoned { .. })));
    }

    let db = Db::open(&path).unwrap();
    assert_eq!(db.steps(), vec![1]);
    let view = db.latest().unwrap().unwrap().replay("buf").unwrap();
    assert_eq!(view.len(), 40);
    for i in 0..40 {
        assert_eq!(which(&view.get(i).unwrap()), i);
    }
}
