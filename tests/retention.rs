//! Retention over 200 steps: keep-last-3, keep-every-50, best-2 by
//! `eval_return` (max) and one tag. Exactly the expected steps survive, with
//! their bytes, also after reopening, after deleting `index.redb`, and after
//! compaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode};
use ckptdb::{Db, DbOptions, Error};
use ndarray::Array1;

const STEPS: u64 = 200;

/// `eval_return` of a step: missing on every third step, NaN on step 101,
/// otherwise a scrambled value (distinct for the candidates).
fn eval_return(step: u64) -> Option<f64> {
    match step {
        s if s % 3 == 0 => None,
        101 => Some(f64::NAN),
        s => Some(((s * 7919) % 211) as f64 + s as f64 / 1000.0),
    }
}

fn weights(step: u64) -> Array1<f32> {
    Array1::from_iter((0..1000).map(|i| (step * 1000 + i) as f32))
}

fn expected() -> BTreeSet<u64> {
    let mut keep: BTreeSet<u64> = [198, 199, 200, 50, 100, 150, 17].into();
    let mut scored: Vec<(f64, u64)> = (1..=STEPS)
        .filter_map(|s| eval_return(s).filter(|v| !v.is_nan()).map(|v| (v, s)))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    keep.extend(scored.iter().take(2).map(|&(_, s)| s));
    keep
}

fn best_step() -> u64 {
    (1..=STEPS)
        .filter_map(|s| eval_return(s).filter(|v| !v.is_nan()).map(|v| (v, s)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
        .unwrap()
}

fn check(db: &Db, want: &BTreeSet<u64>) {
    assert_eq!(db.steps().into_iter().collect::<BTreeSet<_>>(), *want);
    assert_eq!(db.last_committed_step(), Some(STEPS));
    assert_eq!(db.tagged_step("golden").unwrap(), 17);
    for &s in want {
        let snap = db.snapshot(s).unwrap();
        let w = snap.tensor("w").unwrap().to_owned::<f32>().unwrap();
        assert_eq!(
            w.as_slice().unwrap(),
            weights(s).as_slice().unwrap(),
            "step {s}"
        );
        assert_eq!(snap.metrics().get("loss"), Some(&(1.0 / s as f64)));
    }
}

#[test]
fn retention_keeps_exactly_the_policy_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let want = expected();
    assert!(
        want.len() >= 8,
        "the scenario must keep something of each rule"
    );
    {
        let db = Db::open_with(&path, DbOptions::default().segment_size(64 << 10)).unwrap();
        let options = CheckpointOptions::new()
            .keep_last(3)
            .keep_every(50)
            .keep_best("eval_return", 2, MetricMode::Max);
        let m = CheckpointManager::new(Arc::new(db), options);
        for step in 1..=STEPS {
            assert!(m.should_save(step));
            m.save(step, |tx| {
                tx.put_tensor("w", &weights(step))?;
                tx.put_metric("loss", 1.0 / step as f64)?;
                match eval_return(step) {
                    // A NaN is no metric: refused, and the step goes on
                    // without one.
                    Some(r) if r.is_nan() => assert!(matches!(
                        tx.put_metric("eval_return", r),
                        Err(Error::InvalidArgument(_))
                    )),
                    Some(r) => tx.put_metric("eval_return", r)?,
                    None => {}
                }
                Ok(())
            })
            .unwrap();
            assert!(!m.should_save(step));
            if step == 17 {
                m.tag(17, "golden").unwrap();
            }
            if step == 60 {
                // Step 20 is gone by now: it cannot be tagged.
                assert!(matches!(
                    m.tag(20, "late"),
                    Err(Error::StepNotFound { step: 20 })
                ));
            }
        }
        check(m.db(), &want);
        assert_eq!(m.restore_latest().unwrap().unwrap().step(), STEPS);
        assert_eq!(m.restore_tag("golden").unwrap().step(), 17);
        assert_eq!(
            m.restore_best("eval_return").unwrap().unwrap().step(),
            best_step()
        );
        assert_eq!(m.restore(150).unwrap().step(), 150);
        assert!(matches!(
            m.restore(151),
            Err(Error::StepNotFound { step: 151 })
        ));
        assert!(matches!(m.restore_tag("nope"), Err(Error::NotFound { .. })));
        // Segments of dropped steps were reclaimed as the run went.
        let live: u64 = want.len() as u64 * 4000;
        let segs = segment_bytes(&path);
        assert!(segs < live * 3 + (64 << 10) * 3, "{segs} bytes of segments");
    }
    {
        let db = Db::open(&path).unwrap();
        check(&db, &want);
    }
    std::fs::remove_file(path.join("index.redb")).unwrap();
    {
        let db = Db::open(&path).unwrap();
        check(&db, &want);
        db.compact().unwrap();
        check(&db, &want);
        // Untagging keeps the step, but the next save may drop it.
        assert_eq!(db.untag("golden").unwrap(), 17);
        assert!(db.steps().contains(&17));
    }
    {
        let db = Db::open_read_only(&path).unwrap();
        let want: BTreeSet<u64> = want.clone();
        assert_eq!(db.steps().into_iter().collect::<BTreeSet<_>>(), want);
        assert!(db.tags().is_empty());
    }
}

fn segment_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}
