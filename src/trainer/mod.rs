//! The trainer layer: when to save, what to keep, what to restore, and
//! committing in the background.
//!
//! A [`CheckpointManager`] sits on a [`Db`] shared through an `Arc`. Every
//! save — synchronous ([`CheckpointManager::save`]) or asynchronous
//! ([`CheckpointManager::save_async`]) — runs the same commit:
//!
//! 1. a step transaction is filled with the caller's entries and metrics;
//! 2. the retention policy ([`policy::steps_to_keep`]) is evaluated over the
//!    live steps plus the new one, and every step it does not keep is
//!    dropped **in the same transaction**, so retention is exactly as atomic
//!    and durable as the commit (a crash, a catalog rebuild or a compaction
//!    can never bring a dropped step back);
//! 3. after the commit, segments made dead or sparse are reclaimed
//!    ([`Db::compact_with`]) unless reclamation is turned off.
//!
//! An asynchronous save takes an owned [`PendingStep`]: the loop pays only
//! for copying the arrays it borrowed, and writing and fsync run on a
//! background thread. At most one commit is in flight; the next save (or
//! [`CheckpointManager::flush`]) waits for it and reports its error. A step
//! is durable only once its commit completed: [`CheckpointManager::wait`]
//! and [`CheckpointManager::flush`] wait for that; dropping the manager
//! flushes (and can only swallow an error, so call `flush` to see it).
//!
//! ```no_run
//! use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode, PendingStep};
//! use ndarray::Array1;
//!
//! # fn main() -> ckptdb::Result<()> {
//! let options = CheckpointOptions::new()
//!     .save_every_steps(100)
//!     .keep_last(3)
//!     .keep_best("eval_return", 2, MetricMode::Max);
//! let manager = CheckpointManager::open("run.ckpt", options)?;
//! let snap = manager.restore_or_init(|tx| tx.put_tensor("w", &Array1::<f32>::zeros(8)))?;
//! let mut w = snap.tensor("w")?.to_owned::<f32>()?;
//! for step in snap.step() + 1..=1000 {
//!     w += 0.01;
//!     if manager.should_save(step) {
//!         let mut pending = PendingStep::new();
//!         pending.put_tensor("w", &w)?; // the only cost on this thread
//!         pending.put_metric("eval_return", step as f64)?;
//!         manager.save_async(step, pending)?;
//!     }
//! }
//! manager.flush()?; // durable from here
//! # Ok(())
//! # }
//! ```

mod async_commit;
mod pending;
pub mod policy;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::gc::DEFAULT_LIVE_THRESHOLD;
use crate::snapshot::{Snapshot, StepInfo};
use crate::txn::StepTx;

use async_commit::InFlight;
pub use pending::PendingStep;
pub use policy::{KeepBest, MetricMode, RetentionPolicy, SaveSchedule};

/// What a [`CheckpointManager`] does: when it saves, what it keeps, and
/// whether it reclaims space after saving.
///
/// Retention rules add up: with no rule every step is kept; once any rule
/// is set, a step survives a save only if some rule keeps it (the step
/// being saved and tagged steps always survive). Example: `keep_last(3)`
/// alone keeps 3 steps; adding `keep_every(100)` also keeps 100, 200, ….
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CheckpointOptions {
    schedule: SaveSchedule,
    retention: RetentionPolicy,
    reclaim_threshold: Option<f64>,
}

impl Default for CheckpointOptions {
    fn default() -> CheckpointOptions {
        CheckpointOptions {
            schedule: SaveSchedule::default(),
            retention: RetentionPolicy::default(),
            reclaim_threshold: Some(DEFAULT_LIVE_THRESHOLD),
        }
    }
}

impl CheckpointOptions {
    /// Saves every step, keeps every step, reclaims dead segments.
    pub fn new() -> CheckpointOptions {
        CheckpointOptions::default()
    }

    /// Saves when the step is divisible by `n`.
    pub fn save_every_steps(mut self, n: u64) -> CheckpointOptions {
        self.schedule.every_steps = Some(n);
        self
    }

    /// Saves when `interval` passed since the last save.
    pub fn save_every(mut self, interval: Duration) -> CheckpointOptions {
        self.schedule.every = Some(interval);
        self
    }

    /// Keeps the newest `n` steps.
    pub fn keep_last(mut self, n: usize) -> CheckpointOptions {
        self.retention.keep_last = Some(n);
        self
    }

    /// Keeps every step divisible by `k`.
    pub fn keep_every(mut self, k: u64) -> CheckpointOptions {
        self.retention.keep_every = Some(k);
        self
    }

    /// Keeps the best `k` steps by `metric`.
    pub fn keep_best(mut self, metric: &str, k: usize, mode: MetricMode) -> CheckpointOptions {
        self.retention.keep_best.push(KeepBest {
            metric: metric.to_owned(),
            k,
            mode,
        });
        self
    }

    /// Sets the live fraction under which sealed segments are copied
    /// forward after a save (`None`: no reclamation; dead segments then
    /// stay until [`Db::compact`]). A threshold outside `0.0..=1.0` makes
    /// each save fail after its commit, with [`Error::InvalidArgument`].
    pub fn reclaim_threshold(mut self, threshold: Option<f64>) -> CheckpointOptions {
        self.reclaim_threshold = threshold;
        self
    }

    /// When [`CheckpointManager::should_save`] says yes.
    pub fn schedule(&self) -> &SaveSchedule {
        &self.schedule
    }

    /// Which steps survive a save.
    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// The live fraction under which a sealed segment is copied forward
    /// after a save, if reclamation is on.
    pub fn live_threshold(&self) -> Option<f64> {
        self.reclaim_threshold
    }
}

#[derive(Debug, Default)]
struct State {
    in_flight: InFlight,
    last_save: Option<Instant>,
}

/// Saves, retains and restores the step snapshots of a training run.
/// `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct CheckpointManager {
    db: Arc<Db>,
    options: Arc<CheckpointOptions>,
    state: Mutex<State>,
}

impl CheckpointManager {
    /// Opens (or creates) the database at `path` for writing. A program
    /// that already has the database open as a [`Db`] hands that to
    /// [`CheckpointManager::new`] instead (`new(Arc::new(db), options)`;
    /// [`CheckpointManager::db`] gives it back): a second writer of the same
    /// database fails with [`Error::Locked`], in one process as in two.
    pub fn open(path: impl AsRef<Path>, options: CheckpointOptions) -> Result<CheckpointManager> {
        Ok(CheckpointManager::new(Arc::new(Db::open(path)?), options))
    }

    /// A manager over an open database. The time rule of the schedule
    /// counts from the newest live step's commit time, so a restarted run
    /// does not save again right away.
    pub fn new(db: Arc<Db>, options: CheckpointOptions) -> CheckpointManager {
        let last_save = db.step_infos().last().map(|info| {
            let age = SystemTime::now()
                .duration_since(info.time)
                .unwrap_or(Duration::ZERO);
            let now = Instant::now();
            now.checked_sub(age).unwrap_or(now)
        });
        CheckpointManager {
            db,
            options: Arc::new(options),
            state: Mutex::new(State {
                in_flight: InFlight::default(),
                last_save,
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The options.
    pub fn options(&self) -> &CheckpointOptions {
        &self.options
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the schedule says `step` should be saved and the step can
    /// still be saved (it is newer than every step committed or in flight).
    pub fn should_save(&self, step: u64) -> bool {
        let state = self.state();
        let newest = state.in_flight.step().max(self.db.last_committed_step());
        if newest.is_some_and(|n| step <= n) {
            return false;
        }
        let since = state.last_save.map(|t| t.elapsed());
        policy::is_save_step(&self.options.schedule, step, since)
    }

    /// Commits `step` synchronously: `fill` puts the entries and metrics,
    /// retention drops what the policy no longer keeps in the same commit,
    /// and the step is durable when this returns. A commit in flight is
    /// waited for first (its error is returned). Space is reclaimed after
    /// the commit; if that fails its error is returned although the step is
    /// durable (check [`Db::last_committed_step`]).
    pub fn save<F>(&self, step: u64, fill: F) -> Result<StepInfo>
    where
        F: FnOnce(&mut StepTx<'_>) -> Result<()>,
    {
        let mut state = self.state();
        state.in_flight.wait()?;
        state.last_save = Some(Instant::now());
        commit_step(&self.db, &self.options, step, fill)
    }

    /// Hands `pending` over to a background commit of `step` and returns.
    /// Waits first for the commit in flight, and returns its error (without
    /// starting this one) if it failed. The step is durable only once
    /// [`CheckpointManager::wait`] or [`CheckpointManager::flush`] returned.
    pub fn save_async(&self, step: u64, pending: PendingStep) -> Result<()> {
        let mut state = self.state();
        state.in_flight.wait()?;
        if let Some(last) = self.db.last_committed_step() {
            if step <= last {
                return Err(Error::invalid(format!(
                    "step {step} is not greater than the last committed step {last}"
                )));
            }
        }
        state.last_save = Some(Instant::now());
        let db = self.db.clone();
        let options = self.options.clone();
        state.in_flight.start(step, move || {
            commit_step(&db, &options, step, |tx| pending.apply(tx))
        })
    }

    /// The step whose commit is in flight.
    pub fn in_flight(&self) -> Option<u64> {
        self.state().in_flight.step()
    }

    /// Waits for the commit in flight and returns its error, if any.
    pub fn flush(&self) -> Result<()> {
        self.state().in_flight.wait().map(|_| ())
    }

    /// Waits until `step` is durable. Fails with [`Error::StepNotFound`]
    /// when `step` was never handed over (or its commit failed, with that
    /// error).
    pub fn wait(&self, step: u64) -> Result<()> {
        let mut state = self.state();
        if state.in_flight.step().is_some_and(|s| s <= step) {
            state.in_flight.wait()?;
        }
        drop(state);
        match self.db.last_committed_step() {
            Some(last) if last >= step => Ok(()),
            _ => Err(Error::StepNotFound { step }),
        }
    }

    /// Names live step `step` `name` (after the commit in flight). Tagged
    /// steps are kept by retention.
    pub fn tag(&self, step: u64, name: &str) -> Result<()> {
        self.flush()?;
        self.db.tag(step, name)
    }

    /// Removes tag `name`; returns the step it named.
    pub fn untag(&self, name: &str) -> Result<u64> {
        self.flush()?;
        self.db.untag(name)
    }

    /// The newest live step (after the commit in flight), or `None` for an
    /// empty database.
    pub fn restore_latest(&self) -> Result<Option<Snapshot>> {
        self.flush()?;
        self.db.latest()
    }

    /// Live step `step`.
    pub fn restore(&self, step: u64) -> Result<Snapshot> {
        self.flush()?;
        self.db.snapshot(step)
    }

    /// The step tag `name` names.
    pub fn restore_tag(&self, name: &str) -> Result<Snapshot> {
        self.flush()?;
        let step = self.db.tagged_step(name)?;
        self.db.snapshot(step)
    }

    /// The best live step by `metric`, in the direction a `keep_best` rule of
    /// the options gives for it (an [`Error::InvalidArgument`] if none does;
    /// see [`CheckpointManager::restore_best_by`]). `None` when no live step
    /// has the metric.
    pub fn restore_best(&self, metric: &str) -> Result<Option<Snapshot>> {
        let mode = self
            .options
            .retention
            .keep_best
            .iter()
            .find(|r| r.metric == metric)
            .map(|r| r.mode)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "no keep_best rule names metric {metric:?}; use restore_best_by"
                ))
            })?;
        self.restore_best_by(metric, mode)
    }

    /// The best live step by `metric` in direction `mode`; steps without the
    /// metric or with NaN are not candidates.
    pub fn restore_best_by(&self, metric: &str, mode: MetricMode) -> Result<Option<Snapshot>> {
        self.flush()?;
        let infos = self.db.step_infos();
        let candidates: Vec<policy::Candidate<'_>> = infos
            .iter()
            .map(|i| policy::Candidate {
                step: i.step,
                metrics: &i.metrics,
            })
            .collect();
        match policy::best_steps(&candidates, metric, mode, 1).first() {
            Some(&step) => self.db.snapshot(step).map(Some),
            None => Ok(None),
        }
    }

    /// The newest live step, or — in an empty database — step 0 committed
    /// from `init` (the fresh state a run starts from). Either way training
    /// continues at `snapshot.step() + 1`.
    pub fn restore_or_init<F>(&self, init: F) -> Result<Snapshot>
    where
        F: FnOnce(&mut StepTx<'_>) -> Result<()>,
    {
        if let Some(s) = self.restore_latest()? {
            return Ok(s);
        }
        let info = self.save(0, init)?;
        self.db.snapshot(info.step)
    }
}

impl Drop for CheckpointManager {
    fn drop(&mut self) {
        // Durability of the last handed-over step; its error can only be
        // reported by an explicit `flush`.
        let _ = self.flush();
    }
}

/// One commit, with retention and reclamation: what both `save` and
/// `save_async` run.
fn commit_step<F>(db: &Db, options: &CheckpointOptions, step: u64, fill: F) -> Result<StepInfo>
where
    F: FnOnce(&mut StepTx<'_>) -> Result<()>,
{
    let mut tx = db.begin_step(step)?;
    fill(&mut tx)?;
    let infos = db.step_infos();
    let tagged: BTreeSet<u64> = db.tags().into_values().collect();
    let new_metrics = tx.metrics().clone();
    let mut candidates: Vec<policy::Candidate<'_>> = infos
        .iter()
        .map(|i| policy::Candidate {
            step: i.step,
            metrics: &i.metrics,
        })
        .collect();
    candidates.push(policy::Candidate {
        step,
        metrics: &new_metrics,
    });
    let keep = policy::steps_to_keep(&options.retention, &candidates, &tagged, step);
    for info in &infos {
        if !keep.contains(&info.step) {
            tx.drop_step(info.step)?;
        }
    }
    let info = tx.commit()?;
    if let Some(threshold) = options.reclaim_threshold {
        // The step is durable; a failure here is still reported, because it
        // poisons the writer for the next commit anyway.
        db.reclaim(threshold)?;
    }
    Ok(info)
}
