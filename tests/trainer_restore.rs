//! Restoring through the manager: `restore_or_init` on a fresh and on an
//! existing run, best by metric in both directions, tags, and the save
//! schedule.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode};
use ckptdb::Error;
use ndarray::Array1;

#[test]
fn restore_paths_and_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let options = || {
        CheckpointOptions::new()
            .save_every_steps(10)
            .save_every(Duration::from_secs(3600))
            .keep_best("loss", 2, MetricMode::Min)
    };
    let inits = Cell::new(0);
    let init = |tx: &mut ckptdb::StepTx<'_>| {
        inits.set(inits.get() + 1);
        tx.put_tensor("w", &Array1::<f32>::from_elem(4, 0.5))
    };
    {
        let m = CheckpointManager::open(&path, options()).unwrap();
        // Nothing saved yet: the time rule makes any step due.
        assert!(m.should_save(3));
        let snap = m.restore_or_init(init).unwrap();
        assert_eq!(snap.step(), 0);
        assert_eq!(inits.get(), 1);
        assert_eq!(
            snap.tensor("w").unwrap().as_slice::<f32>().unwrap(),
            &[0.5; 4]
        );
        // Saved a moment ago: only the step rule says yes now.
        assert!(!m.should_save(3));
        assert!(m.should_save(10));
        assert!(!m.should_save(11));
        // loss by step: 10 → 5, 20 → 3, 40 → 1, 50 → 4; 30 and 60 have none
        // (a NaN loss is refused, so a diverged step records none).
        let losses = [(10, Some(5.0)), (20, Some(3.0)), (30, None)];
        let more = [(40, Some(1.0)), (50, Some(4.0)), (60, None)];
        for (step, loss) in losses.into_iter().chain(more) {
            m.save(step, |tx| {
                tx.put_tensor("w", &Array1::<f32>::from_elem(4, step as f32))?;
                if let Some(l) = loss {
                    tx.put_metric("loss", l)?;
                }
                Ok(())
            })
            .unwrap();
        }
        // Best-2 by loss keeps 40 and 20; the newest is
        // always kept; nothing else.
        assert_eq!(m.db().steps(), vec![20, 40, 60]);
        let best = m.restore_best("loss").unwrap().unwrap();
        assert_eq!(best.step(), 40);
        assert_eq!(
            m.restore_best_by("loss", MetricMode::Max)
                .unwrap()
                .unwrap()
                .step(),
            20
        );
        assert!(m
            .restore_best_by("accuracy", MetricMode::Max)
            .unwrap()
            .is_none());
        assert!(matches!(
            m.restore_best("accuracy"),
            Err(Error::InvalidArgument(_))
        ));

        // Tags move, and name live steps only.
        m.tag(20, "a").unwrap();
        m.tag(60, "a").unwrap();
        assert_eq!(m.db().tags(), BTreeMap::from([("a".to_owned(), 60)]));
        assert_eq!(m.restore_tag("a").unwrap().step(), 60);
        assert!(matches!(
            m.tag(30, "b"),
            Err(Error::StepNotFound { step: 30 })
        ));
        assert!(matches!(m.tag(40, ""), Err(Error::InvalidArgument(_))));
        assert_eq!(m.untag("a").unwrap(), 60);
        assert!(matches!(m.untag("a"), Err(Error::NotFound { .. })));
    }
    // A restarted run resumes from the newest step without calling init.
    let m = CheckpointManager::open(&path, options()).unwrap();
    let snap = m.restore_or_init(init).unwrap();
    assert_eq!(snap.step(), 60);
    assert_eq!(inits.get(), 1);
    assert!(!m.should_save(60));
    // The time rule counts from the last commit, also across a restart.
    assert!(!m.should_save(61));
    assert!(m.should_save(70));
}
