//! Model-based test of the public API: random sequences of transactions
//! (put, remove, drop-step, metrics; then commit, abort or drop), reopens
//! and read-only opens, checked after every operation against an in-memory
//! model. 1,000 cases.

mod crash_model;

use ckptdb::{DType, Db, Error};
use crash_model::{read_model, scratch_dir, tensor_of, Action, Model, TxSpec, Val};
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
        end: End,
    },
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
            prop_oneof![4 => Just(End::Commit), 1 => Just(End::Abort), 1 => Just(End::Drop)],
        )
            .prop_map(|(from_latest, puts, removes, drop_oldest, metric, end)| Op::Tx {
                from_latest,
                puts,
                removes,
                drop_oldest,
                metric,
                end,
            }),
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
    let mut db = Db::open(&path).unwrap();
    let mut model = Model::default();
    let mut next_step = 1u64;
    for op in ops {
        match op {
            Op::Tx {
                from_latest,
                puts,
                removes,
                drop_oldest,
                metric,
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
                let action = match end {
                    End::Commit => Action::Commit(spec),
                    End::Abort | End::Drop => Action::Abandon(spec),
                };
                match (&action, end) {
                    (Action::Abandon(spec), End::Abort) => {
                        // The explicit abort path (not Drop).
                        let mut tx = match spec.parent {
                            Some(p) => db.begin_step_from(spec.step, p).unwrap(),
                            None => db.begin_step(spec.step).unwrap(),
                        };
                        for (k, v) in &spec.puts {
                            tx.put_blob(k, &v.bytes).unwrap();
                        }
                        tx.abort().unwrap();
                    }
                    _ => action.run(&db).map_err(|f| {
                        TestCaseError::fail(format!("{action:?} failed: {}", f.error()))
                    })?,
                }
                model = action.apply(&model);
            }
            Op::Reopen => {
                drop(db);
                db = Db::open(&path).unwrap();
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
    }
    drop(db);
    let db = Db::open(&path).unwrap();
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
