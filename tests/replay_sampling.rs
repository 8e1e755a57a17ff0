//! Sampling: uniform (with and without replacement) passes a chi-square
//! test over slots; prioritized frequencies follow p^α and importance
//! weights follow the formula; priorities persist and overwritten slots are
//! not updated.

mod replay_util;

use ckptdb::replay::{Batch, ReplayOptions, SampleIndex};
use ckptdb::{Db, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;
use replay_util::*;

/// Checks that every row of `batch` holds the transition its index names.
fn check_batch(batch: &Batch) {
    let obs = batch.view::<f32>("obs").unwrap();
    let action = batch.view::<i64>("action").unwrap();
    let term = batch.view::<bool>("terminated").unwrap();
    assert_eq!(obs.shape(), &[batch.len(), 4]);
    assert_eq!(action.shape(), &[batch.len()]);
    for (b, ix) in batch.indices().iter().enumerate() {
        let t = transition(ix.serial);
        assert_eq!(
            obs.index_axis(ndarray::Axis(0), b)
                .iter()
                .copied()
                .collect::<Vec<f32>>(),
            t.obs.to_vec()
        );
        assert_eq!(action[b], t.action);
        assert_eq!(term[b], t.terminated);
    }
}

#[test]
fn uniform_sampling_is_uniform_over_slots() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let cap = 200u64;
    let mut t = db
        .replay_table("buf", &cartpole(), ReplayOptions::new(cap, 16))
        .unwrap();
    push_range(&mut t, 0..537);
    let mut rng = StdRng::seed_from_u64(7);
    let mut counts = vec![0u64; cap as usize];
    let draws = 256 * 150;
    for _ in 0..150 {
        let b = t.sample_uniform(&mut rng, 256).unwrap();
        check_batch(&b);
        for ix in b.indices() {
            assert!(ix.serial >= 537 - cap && ix.serial < 537);
            counts[ix.slot as usize] += 1;
        }
    }
    let expected = vec![draws as f64 / cap as f64; cap as usize];
    let stat = chi2(&counts, &expected);
    assert!(stat < chi2_critical_1e4(cap as usize - 1), "chi2 {stat}");
    // A statistic this far below its mean would mean the draws are not random.
    assert!(stat > 100.0, "chi2 {stat} suspiciously small");

    // Without replacement: distinct rows, still uniform.
    let mut counts = vec![0u64; cap as usize];
    for _ in 0..400 {
        let b = t.sample_uniform_distinct(&mut rng, 50).unwrap();
        check_batch(&b);
        let mut slots: Vec<u64> = b.indices().iter().map(|i| i.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 50);
        for s in slots {
            counts[s as usize] += 1;
        }
    }
    let expected = vec![400.0 * 50.0 / cap as f64; cap as usize];
    let stat = chi2(&counts, &expected);
    assert!(stat < chi2_critical_1e4(cap as usize - 1), "chi2 {stat}");
    assert!(matches!(
        t.sample_uniform_distinct(&mut rng, 201),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_table_not_yet_full_samples_only_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut t = db
        .replay_table("buf", &cartpole(), ReplayOptions::new(1000, 64))
        .unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    assert!(t.sample_uniform(&mut rng, 1).is_err());
    push_range(&mut t, 0..70);
    let b = t.sample_uniform(&mut rng, 2000).unwrap();
    check_batch(&b);
    assert!(b
        .indices()
        .iter()
        .all(|i| i.slot < 70 && i.slot == i.serial));
    let b = t.sample_uniform_distinct(&mut rng, 70).unwrap();
    let mut s: Vec<u64> = b.indices().iter().map(|i| i.slot).collect();
    s.sort_unstable();
    assert_eq!(s, (0..70).collect::<Vec<_>>());
}

#[test]
fn prioritized_frequencies_and_weights_follow_the_formula() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let (cap, alpha, beta) = (100u64, 0.7, 0.4);
    let mut t = db
        .replay_table(
            "buf",
            &cartpole(),
            ReplayOptions::new(cap, 8).prioritized(alpha),
        )
        .unwrap();
    push_range(&mut t, 0..150);
    let indices: Vec<SampleIndex> = (0..cap).map(|s| t.get_slot(s).unwrap().index()).collect();
    let prio: Vec<f64> = (0..cap).map(|s| 0.5 + (s % 13) as f64).collect();
    assert_eq!(t.update_priorities(&indices, &prio).unwrap(), cap as usize);

    let pa: Vec<f64> = prio.iter().map(|p| p.powf(alpha)).collect();
    let sum: f64 = pa.iter().sum();
    let n = cap as f64;
    let max_w = pa
        .iter()
        .map(|x| (n * x / sum).powf(-beta))
        .fold(0.0f64, f64::max);

    let mut rng = StdRng::seed_from_u64(42);
    let mut counts = vec![0u64; cap as usize];
    let draws = 256 * 200;
    for _ in 0..200 {
        let b = t.sample_prioritized(&mut rng, 256, beta).unwrap();
        check_batch(&b);
        let w = b.weights().unwrap();
        for (ix, &w) in b.indices().iter().zip(w) {
            counts[ix.slot as usize] += 1;
            let expect = (n * pa[ix.slot as usize] / sum).powf(-beta) / max_w;
            assert!((w - expect).abs() < 1e-5 * expect, "{w} vs {expect}");
            assert!(w <= 1.0 + 1e-9);
        }
    }
    let expected: Vec<f64> = pa.iter().map(|x| draws as f64 * x / sum).collect();
    let stat = chi2(&counts, &expected);
    assert!(stat < chi2_critical_1e4(cap as usize - 1), "chi2 {stat}");
    // Uniform counts would fail the same test: the priorities matter.
    let flat = vec![draws as f64 / n; cap as usize];
    assert!(chi2(&counts, &flat) > chi2_critical_1e4(cap as usize - 1));
}

#[test]
fn update_priorities_ignores_overwritten_slots_and_new_rows_get_the_max() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(20, 4).prioritized(0.5);
    let db = Db::open(&path).unwrap();
    let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
    push_range(&mut t, 0..20);
    assert_eq!(t.priority_weight(3), Some(1.0));
    let mut rng = StdRng::seed_from_u64(3);
    let b = t.sample_uniform_distinct(&mut rng, 20).unwrap();
    let idx = b.indices().to_vec();
    // Overwrite slots 0..5 with transitions 20..25.
    push_range(&mut t, 20..25);
    let prio: Vec<f64> = idx.iter().map(|i| 2.0 + i.slot as f64).collect();
    assert_eq!(t.update_priorities(&idx, &prio).unwrap(), 15);
    for s in 0..5 {
        assert_eq!(t.priority_weight(s), Some(1.0), "slot {s} was overwritten");
    }
    for s in 5..20u64 {
        let w = t.priority_weight(s).unwrap();
        assert!((w - (2.0 + s as f64).sqrt()).abs() < 1e-5);
    }
    // The largest priority so far is 21: new transitions get it.
    push(&mut t, 25);
    assert!((t.priority_weight(5).unwrap() - 21f64.sqrt()).abs() < 1e-5);
    // Bad priorities are refused and change nothing.
    assert!(t.update_priorities(&idx[5..6], &[f64::NAN]).is_err());
    assert!(t.update_priorities(&idx[6..7], &[0.0]).is_err());
    assert!(t.update_priorities(&idx[6..8], &[1.0]).is_err());
    assert!((t.priority_weight(6).unwrap() - 8f64.sqrt()).abs() < 1e-5);

    // Priorities are part of the snapshot.
    let mut tx = db.begin_step(1).unwrap();
    tx.put_replay(&mut t).unwrap();
    tx.commit().unwrap();
    let before: Vec<f64> = (0..20).map(|s| t.priority_weight(s).unwrap()).collect();
    t.update_priorities(&[t.get_slot(9).unwrap().index()], &[100.0])
        .unwrap();
    drop(t);
    drop(db);
    let db = Db::open(&path).unwrap();
    let t = db.replay_table("buf", &cartpole(), opts).unwrap();
    let after: Vec<f64> = (0..20).map(|s| t.priority_weight(s).unwrap()).collect();
    assert_eq!(before, after);
    let view = db.snapshot(1).unwrap().replay("buf").unwrap();
    let b = view.sample_prioritized(&mut rng, 64, 1.0).unwrap();
    check_batch(&b);
    // The largest max priority (21) also persisted.
    let mut t = t;
    push(&mut t, 26);
    assert!((t.priority_weight(6).unwrap() - 21f64.sqrt()).abs() < 1e-5);
}

#[test]
fn a_uniform_table_has_no_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut t = db
        .replay_table("buf", &cartpole(), ReplayOptions::new(10, 5))
        .unwrap();
    push_range(&mut t, 0..3);
    let mut rng = StdRng::seed_from_u64(0);
    assert!(t.sample_prioritized(&mut rng, 1, 0.5).is_err());
    let ix = t.get(0).unwrap().index();
    assert!(t.update_priorities(&[ix], &[1.0]).is_err());
    assert_eq!(t.priority_weight(0), None);
}
