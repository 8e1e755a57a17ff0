//! Bad input to a multi-rank run: each case is a typed error, and a step
//! whose slices do not form one tensor never becomes visible (a later good
//! step commits and abandons it).

use ckptdb::distributed::{DistributedDb, GlobalOutcome, RankDb};
use ckptdb::{DType, Error, ShardProblem};
use ndarray::{arr1, Array2};

fn layout_problem(r: ckptdb::Result<GlobalOutcome>) -> ShardProblem {
    match r {
        Err(Error::ShardLayout { problem, .. }) => problem,
        other => panic!("expected a shard layout error, got {other:?}"),
    }
}

/// Writes one rank's part of a step.
type Writer = Box<dyn Fn(&RankDb, u64) -> ckptdb::Result<GlobalOutcome>>;

fn rows(n: usize, v: f32) -> Array2<f32> {
    Array2::from_elem((n, 2), v)
}

#[test]
fn bad_input_is_a_typed_error_and_commits_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");

    // Rank out of range, world size 0.
    assert!(matches!(
        RankDb::open(&root, 2, 2),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        RankDb::open(&root, 0, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        DistributedDb::open(&root),
        Err(Error::NotADatabase { .. })
    ));

    let r0 = RankDb::open(&root, 0, 2).unwrap();
    let r1 = RankDb::open(&root, 1, 2).unwrap();
    // A second writer of one rank; another world size later.
    assert!(matches!(
        RankDb::open(&root, 1, 2),
        Err(Error::Locked { .. })
    ));
    match RankDb::open(&root, 1, 3) {
        Err(Error::WorldSizeMismatch {
            recorded: 2,
            given: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // A slice past the global shape is refused at put time.
    let mut tx = r0.begin_step(1).unwrap();
    let e = tx
        .put_shard("w", &[4, 2], &[3, 0], &rows(2, 0.0))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::ShardLayout {
            problem: ShardProblem::OutOfBounds { .. },
            ..
        }
    ));
    let e = tx.put_shard("w", &[4, 2], &[0], &rows(2, 0.0)).unwrap_err();
    assert!(matches!(
        e,
        Error::ShardLayout {
            problem: ShardProblem::RankMismatch { .. },
            ..
        }
    ));
    tx.put_shard("w", &[4, 2], &[0, 0], &rows(2, 0.0)).unwrap();
    let e = tx
        .put_shard("w", &[4, 2], &[2, 0], &rows(2, 0.0))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::ShardLayout {
            problem: ShardProblem::DuplicateShard { rank: 0 },
            ..
        }
    ));
    drop(tx);

    // Each bad layout: rank 0's part is pending, rank 1's completes the set
    // and the global commit refuses it.
    let cases: Vec<(u64, Writer)> = vec![
        // Overlap: rows 0..3 and 2..4.
        (
            1,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                let (off, n) = if db.rank() == 0 { (0, 3) } else { (2, 2) };
                tx.put_shard("w", &[4, 2], &[off, 0], &rows(n, 1.0))?;
                tx.commit()
            }),
        ),
        // Gap: rows 0..1 and 2..4.
        (
            2,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                let (off, n) = if db.rank() == 0 { (0, 1) } else { (2, 2) };
                tx.put_shard("w", &[4, 2], &[off, 0], &rows(n, 1.0))?;
                tx.commit()
            }),
        ),
        // Dtype differs between the two halves.
        (
            3,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                if db.rank() == 0 {
                    tx.put_shard("w", &[4, 2], &[0, 0], &rows(2, 1.0))?;
                } else {
                    tx.put_shard("w", &[4, 2], &[2, 0], &Array2::<f64>::zeros((2, 2)))?;
                }
                tx.commit()
            }),
        ),
        // Global shape differs.
        (
            4,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                let g = if db.rank() == 0 { [4, 2] } else { [5, 2] };
                tx.put_shard("w", &g, &[2 * db.rank() as u64, 0], &rows(2, 1.0))?;
                tx.commit()
            }),
        ),
        // Replicated copies differ.
        (
            5,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                tx.put("b", &arr1(&[db.rank() as f32]))?;
                tx.commit()
            }),
        ),
        // Replicated on one rank, a shard on the other.
        (
            6,
            Box::new(|db, s| {
                let mut tx = db.begin_step(s)?;
                if db.rank() == 0 {
                    tx.put("w", &rows(4, 1.0))?;
                } else {
                    tx.put_shard("w", &[4, 2], &[0, 0], &rows(4, 1.0))?;
                }
                tx.commit()
            }),
        ),
    ];
    for (step, write) in &cases {
        assert_eq!(
            write(&r0, *step).unwrap(),
            GlobalOutcome::Pending { parts: 1 }
        );
        let problem = layout_problem(write(&r1, *step));
        let ok = match step {
            1 => matches!(problem, ShardProblem::Overlap { ranks: (0, 1) }),
            2 => matches!(
                problem,
                ShardProblem::Gap {
                    covered: 6,
                    total: 8
                }
            ),
            3 => matches!(
                problem,
                ShardProblem::DtypeDiffers {
                    first: DType::F32,
                    rank: 1,
                    dtype: DType::F64
                }
            ),
            4 => matches!(problem, ShardProblem::GlobalShapeDiffers { rank: 1, .. }),
            5 => matches!(problem, ShardProblem::ReplicasDiffer { rank: 1 }),
            6 => matches!(problem, ShardProblem::ReplicatedAndSharded),
            _ => unreachable!(),
        };
        assert!(ok, "step {step}: {problem:?}");
        assert!(!root.join(format!("global/{step:020}/COMMIT")).exists());
        // A coordinator gets the same error; nothing is visible.
        let run = DistributedDb::open(&root).unwrap();
        assert!(matches!(
            run.try_commit(*step),
            Err(Error::ShardLayout { .. })
        ));
        assert_eq!(run.steps().unwrap(), Vec::<u64>::new());
        assert!(matches!(run.snapshot(*step), Err(Error::StepNotFound { step: s }) if s == *step));
    }
    // A step published already cannot be written again, nor an older one.
    assert!(matches!(r0.begin_step(6), Err(Error::InvalidArgument(_))));
    assert!(matches!(r0.begin_step(3), Err(Error::InvalidArgument(_))));

    // A good step commits and abandons the bad ones.
    for db in [&r0, &r1] {
        let mut tx = db.begin_step(7).unwrap();
        tx.put_shard(
            "w",
            &[4, 2],
            &[2 * db.rank() as u64, 0],
            &rows(2, db.rank() as f32),
        )
        .unwrap();
        tx.put("b", &arr1(&[7.0f32])).unwrap();
        let o = tx.commit().unwrap();
        let want = if db.rank() == 0 {
            GlobalOutcome::Pending { parts: 1 }
        } else {
            GlobalOutcome::Committed { won: true }
        };
        assert_eq!(o, want);
    }
    let run = DistributedDb::open(&root).unwrap();
    assert_eq!(run.steps().unwrap(), vec![7]);
    for step in 1..=6 {
        assert_eq!(run.try_commit(step).unwrap(), GlobalOutcome::Abandoned);
        assert!(!root.join(format!("global/{step:020}/part-0")).exists());
    }
    let snap = run.snapshot(7).unwrap();
    // Bad reads: wrong dtype, a slice past the shape, a missing key.
    assert!(matches!(
        snap.read_slice::<f64>("w", &[0, 0], &[1, 1]),
        Err(Error::DtypeMismatch {
            stored: DType::F32,
            requested: DType::F64,
            ..
        })
    ));
    assert!(matches!(
        snap.read_slice::<f32>("w", &[3, 0], &[2, 2]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        snap.read_slice::<f32>("w", &[0], &[2]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        snap.read::<f32>("nope"),
        Err(Error::KeyNotFound { step: 7, .. })
    ));
    let w = snap.read_slice::<f32>("w", &[1, 0], &[2, 2]).unwrap();
    assert_eq!(
        w.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 0.0, 1.0, 1.0]
    );

    // The bad steps' local data goes at each rank's next commit.
    for db in [&r0, &r1] {
        let mut tx = db.begin_step(8).unwrap();
        tx.put_shard("w", &[4, 2], &[2 * db.rank() as u64, 0], &rows(2, 8.0))
            .unwrap();
        tx.commit().unwrap();
        let globals: Vec<u64> = db.local().steps().iter().map(|l| l >> 16).collect();
        assert_eq!(globals, vec![7, 8], "rank {}", db.rank());
    }
}
