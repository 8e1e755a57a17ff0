//! Model-based test of the public API: random sequences of transactions
//! (put, remove, drop-step, metrics, replay pushes and records; then commit,
//! abort or drop), replay pushes outside transactions, compactions, reopens
//! and read-only opens, checked after every operation against an in-memory
//! model. 1,000 cases.

mod crash_model;

use ckptdb::{DType, Db, DbOptions, Error};
use crash_model::{
    read_model, scratch_dir, tensor_of, Action, Model, Session, TxSpec, Val, TABLES,
};
use proptest::prelude::*;

const KEYS: [&str; 4] = ["a", "b/c", "b/d", "opt/m"];

#[derive(Clone, Debug)]
enum End {
    Commit,
    Abort,
    Drop,
}

#[derive(Clone, Debug)]
enum Op {
    Tx {
        from_latest: bool,
        /// (key index, kind 0..3, content seed): few seeds, so equal
        /// contents (dedup) are common.
        puts: Vec<(usize, u8, u8)>,
        removes: Vec<usize>,
        drop_oldest: bool,
        metric: Option<i8>,
        /// Rows pushed to a table while the transaction is open.
        push: Option<(usize, u8)>,
        /// Which tables the step records (bit per table of `TABLES`).
        records: u8,
        end: End,
    },
    /// Rows pushed to a table outside any transaction.
    Push(usize, u8),
    /// `compact_with(t)`, or `compact()` for `None`.
    Compact(Option<f64>),
    Reopen,
    ReadOnly,
    /// A step that is not greater than the last one must be refused.
    StaleStep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            any::<bool>(),
            prop::collection::vec((0..KEYS.len(), 0u8..3, 0u8..3), 0..4),
            prop::collection::vec(0..KEYS.len(), 0..2),
            any::<bool>(),
            prop::option::of(any::<i8>()),
            prop::option::of((0..TABLES.len(), 0u8..20)),
            0u8..4,
            prop_oneof![4 => Just(End::Commit), 1 => Just(End::Abort), 1 => Just(End::Drop)],
        )
            .prop_map(
                |(from_latest, puts, removes, drop_oldest, metric, push, records, end)| Op::Tx {
                    from_latest,
                    puts,
                    removes,
                    drop_oldest,
                    metric,
                    push,
                    records,
                    end,
                }
            ),
        2 => (0..TABLES.len(), 0u8..40).prop_map(|(t, n)| Op::Push(t, n)),
        1 => prop_oneof![Just(None), Just(Some(0.0)), Just(Some(1.0))].prop_map(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReadOnly),
        1 => Just(Op::StaleStep),
    ]
}

fn val(kind: u8, seed: u8) -> Val {
    match kind {
        0 => tensor_of(seed as u64, DType::F32, &[2, 1 + seed as u64 % 2]),
        1 => Val::blob(crash_model::bytes_of(seed as u64, 3 + seed as usize)),
        _ => Val::value(&serde_json::json!({ "seed": seed })),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tmp = scratch_dir();
    let path = tmp.path().join("run.ckpt");
    // Small segments: pages and entries spread over many, which compaction
    // deletes or copies forward.
    let open = || Db::open_with(&path, DbOptions::default().segment_size(4096)).unwrap();
    let mut model = Model::default();
    let mut next_step = 1u64;
    let mut ops = ops.into_iter();
    // One database handle (and its replay tables) per turn; `Reopen` ends a
    // turn.
    loop {
        let db = open();
        // The tables start as the newest step recorded them.
        model = model.reopen();
        let mut session = Session::open(&db).unwrap();
        prop_assert_eq!(read_model(&db).unwrap(), model.clone());
        for (name, _, _) in TABLES {
            prop_assert_eq!(
                session.table(name).total_inserted(),
                model.tables.get(name).copied().unwrap_or(0)
            );
        }
        let mut reopen = false;
        for op in ops.by_ref() {
            match op {
                Op::Tx {
                    from_latest,
                    puts,
                    removes,
                    drop_oldest,
                    metric,
                    push,
                    records,
                    end,
                } => {
                    let parent = if from_latest {
                        model.steps.keys().next_back().copied()
                    } else {
                        None
                    };
                    let base = parent.map(|p| model.steps[&p].entries.clone());
                    let mut spec = TxSpec {
                        step: next_step,
                        parent,
                        ..TxSpec::default()
                    };
                    next_step += 1 + (next_step % 3);
                    let mut present: Vec<String> =
                        base.map(|b| b.into_keys().collect()).unwrap_or_default();
                    for (k, kind, seed) in puts {
                        spec.puts.push((KEYS[k].to_owned(), val(kind, seed)));
                        present.push(KEYS[k].to_owned());
                    }
                    for k in removes {
                        if present.iter().any(|p| p == KEYS[k])
                            && !spec.removes.iter().any(|r| r == KEYS[k])
                        {
                            spec.removes.push(KEYS[k].to_owned());
                        }
                    }
                    if drop_oldest && model.steps.len() > 1 {
                        spec.drops.push(*model.steps.keys().next().unwrap());
                    }
                    if let Some(m) = metric {
                        spec.metrics.push(("loss".into(), m as f64 / 4.0));
                    }
                    if let Some((t, n)) = push {
                        spec.pushes.push((TABLES[t].0.to_owned(), n as u64));
                    }
                    for (i, (name, _, _)) in TABLES.iter().enumerate() {
                        if records & (1 << i) != 0 {
                            spec.records.push((*name).to_owned());
                        }
                    }
                    let action = match end {
                        End::Commit => Action::Commit(spec),
                        End::Abort | End::Drop => Action::Abandon(spec),
                    };
                    match (&action, end) {
                        (Action::Abandon(spec), End::Abort) => {
                            // The explicit abort path (not Drop).
                            let tx = session.fill(spec).unwrap();
                            tx.abort().unwrap();
                        }
                        _ => session.run(&action).map_err(|f| {
                            TestCaseError::fail(format!("{action:?} failed: {}", f.error()))
                        })?,
                    }
                    model = action.apply(&model);
                }
                Op::Push(t, n) => {
                    let action = Action::Push {
                        table: TABLES[t].0.to_owned(),
                        rows: n as u64,
                    };
                    session.run(&action).map_err(|f| {
                        TestCaseError::fail(format!("{action:?} failed: {}", f.error()))
                    })?;
                    model = action.apply(&model);
                }
                Op::Compact(t) => {
                    session
                        .run(&Action::Compact(t))
                        .map_err(|f| TestCaseError::fail(format!("compact: {}", f.error())))?;
                }
                Op::Reopen => {
                    reopen = true;
                    break;
                }
                Op::ReadOnly => {
                    let ro = Db::open_read_only(&path).unwrap();
                    prop_assert_eq!(read_model(&ro).unwrap(), model.clone());
                }
                Op::StaleStep => {
                    if let Some(last) = model.last_step {
                        prop_assert!(matches!(
                            db.begin_step(last),
                            Err(Error::InvalidArgument(_))
                        ));
                    }
                }
            }
            prop_assert_eq!(read_model(&db).unwrap(), model.clone());
            // The open tables hold what the model says.
            for (name, _, _) in TABLES {
                let t = session.table(name);
                let want = model.tables.get(name).copied().unwrap_or(0);
                prop_assert_eq!(t.total_inserted(), want);
                let rows = crash_model::TableRows::of(name, want).rows;
                prop_assert_eq!(t.len(), rows.len() as u64);
                if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
                    let got = t.get(0).unwrap();
                    prop_assert_eq!(got.bytes(), &crash_model::row_bytes(name, *first)[..]);
                    let got = t.get(t.len() - 1).unwrap();
                    prop_assert_eq!(got.bytes(), &crash_model::row_bytes(name, *last)[..]);
                }
            }
        }
        drop(session);
        drop(db);
        if !reopen {
            break;
        }
    }
    let db = open();
    prop_assert_eq!(read_model(&db).unwrap(), model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn api_matches_the_model(ops in prop::collection::vec(op(), 1..10)) {
        run(ops)?;
    }
}
