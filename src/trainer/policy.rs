//! Save and retention decisions: pure functions over step numbers, times and
//! metrics, so they can be tested without a database.
//!
//! **Retention** is decided when step `S` is saved, over the live steps plus
//! `S`. A step survives when any rule keeps it:
//!
//! - `S` itself (a commit never drops the step it adds),
//! - the last `N` steps (`keep_last`),
//! - every step divisible by `K` (`keep_every`),
//! - the best `K` steps by a named metric, per [`KeepBest`] rule — a step
//!   without the metric, or with a NaN value, is never a candidate; ties go
//!   to the newer step,
//! - tagged steps.
//!
//! A policy with no rule at all keeps everything. Because the decision is
//! taken over the live set only, a dropped step can never come back: the
//! best `K` of all steps ever saved are always among the best `K` of any live
//! subset that contains them, so they are never dropped in the first place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Whether a larger or a smaller metric value is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricMode {
    /// Smaller is better (a loss).
    Min,
    /// Larger is better (a return, an accuracy).
    Max,
}

/// Keep the best `k` steps by `metric`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeepBest {
    /// The metric's name, as given to `put_metric`.
    pub metric: String,
    /// How many steps to keep.
    pub k: usize,
    /// Which direction is better.
    pub mode: MetricMode,
}

/// Which steps survive a save.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Keep the newest `n` steps.
    pub keep_last: Option<usize>,
    /// Keep every step divisible by `k`.
    pub keep_every: Option<u64>,
    /// Keep the best steps by metrics.
    pub keep_best: Vec<KeepBest>,
}

impl RetentionPolicy {
    /// True when no rule is set: every step is kept.
    pub fn keeps_everything(&self) -> bool {
        self.keep_last.is_none() && self.keep_every.is_none() && self.keep_best.is_empty()
    }
}

/// When to save.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SaveSchedule {
    /// Save when the step is divisible by `n`.
    pub every_steps: Option<u64>,
    /// Save when at least this much time passed since the last save.
    pub every: Option<Duration>,
}

/// Whether `step` is a save step. With no rule, every step is. `since_last`
/// is the time since the last save (`None` before the first one, which
/// counts as due for the time rule).
pub fn is_save_step(schedule: &SaveSchedule, step: u64, since_last: Option<Duration>) -> bool {
    if schedule.every_steps.is_none() && schedule.every.is_none() {
        return true;
    }
    let by_step = schedule
        .every_steps
        .is_some_and(|n| n > 0 && step.is_multiple_of(n));
    let by_time = schedule
        .every
        .is_some_and(|t| since_last.is_none_or(|d| d >= t));
    by_step || by_time
}

/// A step as retention sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The step number.
    pub step: u64,
    /// Its metrics.
    pub metrics: &'a BTreeMap<String, f64>,
}

/// The best `rule.k` steps of `steps` by `rule.metric`, best first.
pub fn best_steps(steps: &[Candidate<'_>], metric: &str, mode: MetricMode, k: usize) -> Vec<u64> {
    let mut scored: Vec<(f64, u64)> = steps
        .iter()
        .filter_map(|c| {
            let v = *c.metrics.get(metric)?;
            (!v.is_nan()).then_some((v, c.step))
        })
        .collect();
    // Best first; among equal values the newer step first.
    scored.sort_by(|a, b| {
        let by_value = match mode {
            MetricMode::Max => b.0.total_cmp(&a.0),
            MetricMode::Min => a.0.total_cmp(&b.0),
        };
        by_value.then(b.1.cmp(&a.1))
    });
    scored.into_iter().take(k).map(|(_, s)| s).collect()
}

/// The steps to keep when `newest` is saved. `steps` holds every live step
/// and `newest` itself; `tagged` the steps that tags name.
pub fn steps_to_keep(
    policy: &RetentionPolicy,
    steps: &[Candidate<'_>],
    tagged: &BTreeSet<u64>,
    newest: u64,
) -> BTreeSet<u64> {
    if policy.keeps_everything() {
        return steps.iter().map(|c| c.step).collect();
    }
    let mut keep: BTreeSet<u64> = BTreeSet::new();
    keep.insert(newest);
    keep.extend(steps.iter().map(|c| c.step).filter(|s| tagged.contains(s)));
    if let Some(n) = policy.keep_last {
        let mut all: Vec<u64> = steps.iter().map(|c| c.step).collect();
        all.sort_unstable();
        keep.extend(all.iter().rev().take(n));
    }
    if let Some(k) = policy.keep_every.filter(|&k| k > 0) {
        keep.extend(steps.iter().map(|c| c.step).filter(|s| s.is_multiple_of(k)));
    }
    for rule in &policy.keep_best {
        keep.extend(best_steps(steps, &rule.metric, rule.mode, rule.k));
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn empty_policy_keeps_all() {
        let m = BTreeMap::new();
        let steps: Vec<Candidate<'_>> = (1..=5)
            .map(|step| Candidate { step, metrics: &m })
            .collect();
        let keep = steps_to_keep(&RetentionPolicy::default(), &steps, &BTreeSet::new(), 5);
        assert_eq!(keep, (1..=5).collect());
    }

    #[test]
    fn last_every_and_tags() {
        let m = BTreeMap::new();
        let steps: Vec<Candidate<'_>> = (1..=25)
            .map(|step| Candidate { step, metrics: &m })
            .collect();
        let policy = RetentionPolicy {
            keep_last: Some(2),
            keep_every: Some(10),
            keep_best: Vec::new(),
        };
        let tagged = BTreeSet::from([7, 99]);
        let keep = steps_to_keep(&policy, &steps, &tagged, 25);
        assert_eq!(keep, BTreeSet::from([7, 10, 20, 24, 25]));
    }

    #[test]
    fn newest_survives_keep_last_zero() {
        let m = BTreeMap::new();
        let steps = [Candidate {
            step: 3,
            metrics: &m,
        }];
        let policy = RetentionPolicy {
            keep_last: Some(0),
            ..Default::default()
        };
        assert_eq!(
            steps_to_keep(&policy, &steps, &BTreeSet::new(), 3),
            BTreeSet::from([3])
        );
    }

    #[test]
    fn best_ignores_missing_and_nan() {
        let a = metrics(&[("r", 5.0)]);
        let b = metrics(&[("r", f64::NAN)]);
        let c = metrics(&[("loss", 1.0)]);
        let d = metrics(&[("r", 9.0)]);
        let e = metrics(&[("r", 5.0)]);
        let f = metrics(&[("r", f64::INFINITY)]);
        let steps = [
            Candidate {
                step: 1,
                metrics: &a,
            },
            Candidate {
                step: 2,
                metrics: &b,
            },
            Candidate {
                step: 3,
                metrics: &c,
            },
            Candidate {
                step: 4,
                metrics: &d,
            },
            Candidate {
                step: 5,
                metrics: &e,
            },
        ];
        assert_eq!(best_steps(&steps, "r", MetricMode::Max, 2), vec![4, 5]);
        assert_eq!(best_steps(&steps, "r", MetricMode::Min, 2), vec![5, 1]);
        assert_eq!(best_steps(&steps, "r", MetricMode::Max, 10), vec![4, 5, 1]);
        assert!(best_steps(&steps, "missing", MetricMode::Max, 3).is_empty());
        let more = [Candidate {
            step: 6,
            metrics: &f,
        }];
        assert_eq!(best_steps(&more, "r", MetricMode::Min, 1), vec![6]);
    }

    proptest::proptest! {
        /// Deciding at every save over the live set only gives exactly what
        /// deciding once over every step ever saved gives: nothing a rule
        /// wants is ever dropped early.
        #[test]
        fn incremental_equals_global(
            values in proptest::collection::vec(proptest::option::of(0u8..6), 1..60),
            keep_last in proptest::option::of(0usize..4),
            keep_every in proptest::option::of(1u64..9),
            best in proptest::option::of(0usize..4),
            max in proptest::bool::ANY,
            tag in 0u64..70,
        ) {
            let mode = if max { MetricMode::Max } else { MetricMode::Min };
            let policy = RetentionPolicy {
                keep_last,
                keep_every,
                keep_best: best
                    .map(|k| KeepBest { metric: "m".into(), k, mode })
                    .into_iter()
                    .collect(),
            };
            // Value 5 stands for NaN.
            let metrics: Vec<BTreeMap<String, f64>> = values
                .iter()
                .map(|v| match v {
                    Some(5) => metrics_of(f64::NAN),
                    Some(x) => metrics_of(*x as f64),
                    None => BTreeMap::new(),
                })
                .collect();
            let tagged = BTreeSet::from([tag]);
            let n = metrics.len() as u64;
            let mut live: Vec<u64> = Vec::new();
            for step in 1..=n {
                live.push(step);
                let c: Vec<Candidate<'_>> = live
                    .iter()
                    .map(|&s| Candidate { step: s, metrics: &metrics[s as usize - 1] })
                    .collect();
                let keep = steps_to_keep(&policy, &c, &tagged, step);
                live.retain(|s| keep.contains(s));
            }
            let all: Vec<Candidate<'_>> = (1..=n)
                .map(|s| Candidate { step: s, metrics: &metrics[s as usize - 1] })
                .collect();
            let global = steps_to_keep(&policy, &all, &tagged, n);
            proptest::prop_assert_eq!(live.into_iter().collect::<BTreeSet<_>>(), global);
        }
    }

    fn metrics_of(v: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("m".to_owned(), v)])
    }

    #[test]
    fn schedule() {
        let none = SaveSchedule::default();
        assert!(is_save_step(&none, 7, Some(Duration::ZERO)));
        let steps = SaveSchedule {
            every_steps: Some(10),
            every: None,
        };
        assert!(is_save_step(&steps, 20, None));
        assert!(!is_save_step(&steps, 21, None));
        let time = SaveSchedule {
            every_steps: None,
            every: Some(Duration::from_secs(60)),
        };
        assert!(is_save_step(&time, 1, None));
        assert!(!is_save_step(&time, 2, Some(Duration::from_secs(59))));
        assert!(is_save_step(&time, 3, Some(Duration::from_secs(60))));
        let both = SaveSchedule {
            every_steps: Some(10),
            every: Some(Duration::from_secs(60)),
        };
        assert!(is_save_step(&both, 10, Some(Duration::ZERO)));
        assert!(is_save_step(&both, 11, Some(Duration::from_secs(61))));
        assert!(!is_save_step(&both, 11, Some(Duration::from_secs(1))));
    }
}
