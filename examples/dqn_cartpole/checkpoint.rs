//! What a snapshot of the run holds, and how it is written and restored.
//!
//! | key                         | what                                  |
//! |-----------------------------|---------------------------------------|
//! | `online/l{i}.weight`, `.bias` | online network                      |
//! | `target/l{i}.weight`, `.bias` | target network                      |
//! | `adam/m/…`, `adam/v/…`      | Adam moments, shaped like the network |
//! | replay table `replay`       | the replay buffer, as ring pages      |
//! | `state`                     | counters, episode in progress, seed   |
//! | `rng`                       | the training random generator         |
//!
//! Metrics `eval_return` and `loss`. Saving goes through the trainer layer,
//! which applies retention (the newest three steps and the best one by
//! `eval_return`) atomically with each commit and reclaims the space of
//! dropped steps. Full replay pages are already in the file when a save
//! starts, so a save writes the networks, the partial page and a few values.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use ckptdb::replay::ReplayTable;
use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode};
use ckptdb::StepTx;
use ckptdb::{Db, DbOptions, Snapshot};
use ndarray::{Ix1, Ix2};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Config};
use crate::cartpole::CartPole;
use crate::mlp::{Adam, Mlp};
use crate::replay;

type Error = Box<dyn std::error::Error>;

/// Counters of the training loop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub step: u64,
    pub episode: u64,
    pub episode_return: f64,
    pub recent: VecDeque<f64>,
    pub checkpoints: u64,
}

impl Counters {
    pub fn push_return(&mut self, r: f64) {
        if self.recent.len() == 10 {
            self.recent.pop_front();
        }
        self.recent.push_back(r);
    }

    pub fn recent_return(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().sum::<f64>() / self.recent.len() as f64
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    seed: u64,
    counters: Counters,
    env: CartPole,
    adam_t: u64,
}

/// The run's database.
pub struct Run {
    manager: CheckpointManager,
    seed: u64,
}

fn put_mlp(tx: &mut StepTx<'_>, prefix: &str, m: &Mlp) -> ckptdb::Result<()> {
    for l in 0..m.layers() {
        tx.put_tensor(&format!("{prefix}/l{l}.weight"), &m.weights[l])?;
        tx.put_tensor(&format!("{prefix}/l{l}.bias"), &m.biases[l])?;
    }
    Ok(())
}

fn get_mlp(s: &Snapshot, prefix: &str, layers: usize) -> Result<Mlp, Error> {
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for l in 0..layers {
        let w = s
            .tensor(&format!("{prefix}/l{l}.weight"))?
            .to_owned::<f32>()?;
        let b = s
            .tensor(&format!("{prefix}/l{l}.bias"))?
            .to_owned::<f32>()?;
        weights.push(w.into_dimensionality::<Ix2>()?);
        biases.push(b.into_dimensionality::<Ix1>()?);
    }
    Ok(Mlp { weights, biases })
}

impl Run {
    pub fn open(path: &Path, seed: u64, save_every: u64, segment_size: u64) -> ckptdb::Result<Run> {
        let options = CheckpointOptions::new()
            .save_every_steps(save_every)
            .keep_last(3)
            .keep_best("eval_return", 1, MetricMode::Max);
        // Small segments: retention frees disk as soon as a segment holds
        // nothing live (a snapshot of this run is about 2.4 MiB).
        let db = Db::open_with(path, DbOptions::default().segment_size(segment_size))?;
        Ok(Run {
            manager: CheckpointManager::new(Arc::new(db), options),
            seed,
        })
    }

    /// Live steps (saves are synchronous: every one has completed).
    pub fn steps(&self) -> Vec<u64> {
        self.manager.db().steps()
    }

    /// True when the schedule says `step` is a save step.
    pub fn should_save(&self, step: u64) -> bool {
        self.manager.should_save(step)
    }

    /// The replay table, as the newest snapshot recorded it (empty for a
    /// new run).
    pub fn replay_table(&self, capacity: u64) -> ckptdb::Result<ReplayTable<'_>> {
        self.manager
            .db()
            .replay_table(replay::TABLE, &replay::schema()?, replay::options(capacity))
    }

    /// Best `eval_return` among the live steps (0 when there is none).
    pub fn best_eval(&self) -> f64 {
        self.manager
            .db()
            .step_infos()
            .iter()
            .filter_map(|i| i.metrics.get("eval_return").copied())
            .fold(0.0, f64::max)
    }

    /// The state of the newest snapshot, if there is one.
    #[allow(clippy::type_complexity)]
    pub fn restore(
        &self,
        cfg: &Config,
    ) -> Result<Option<(Agent, Pcg64Mcg, CartPole, Counters)>, Error> {
        let Some(s) = self.manager.restore_latest()? else {
            return Ok(None);
        };
        let state: State = s.value("state")?;
        if state.seed != self.seed {
            return Err(format!(
                "the database holds a run with seed {}, not {}; use --fresh",
                state.seed, self.seed
            )
            .into());
        }
        let layers = 3;
        let online = get_mlp(&s, "online", layers)?;
        let target = get_mlp(&s, "target", layers)?;
        let adam = Adam {
            lr: cfg.lr,
            m: get_mlp(&s, "adam/m", layers)?,
            v: get_mlp(&s, "adam/v", layers)?,
            t: state.adam_t,
        };
        let rng: Pcg64Mcg = s.value("rng")?;
        let agent = Agent {
            cfg: cfg.clone(),
            online,
            target,
            adam,
        };
        Ok(Some((agent, rng, state.env, state.counters)))
    }

    /// Commits the run's state as step `c.step`; durable when this returns.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &self,
        agent: &Agent,
        table: &mut ReplayTable<'_>,
        rng: &Pcg64Mcg,
        env: &CartPole,
        c: &Counters,
        eval: f64,
        loss: f32,
    ) -> ckptdb::Result<()> {
        let mut counters = c.clone();
        counters.checkpoints += 1;
        let state = State {
            seed: self.seed,
            counters,
            env: env.clone(),
            adam_t: agent.adam.t,
        };
        self.manager.save(c.step, |tx| {
            put_mlp(tx, "online", &agent.online)?;
            put_mlp(tx, "target", &agent.target)?;
            put_mlp(tx, "adam/m", &agent.adam.m)?;
            put_mlp(tx, "adam/v", &agent.adam.v)?;
            tx.put_replay(table)?;
            tx.put_value("state", &state)?;
            tx.put_value("rng", rng)?;
            tx.put_metric("eval_return", eval)?;
            if loss.is_finite() {
                tx.put_metric("loss", f64::from(loss))?;
            }
            Ok(())
        })?;
        Ok(())
    }
}
