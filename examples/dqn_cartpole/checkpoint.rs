//! What a snapshot of the run holds, and how it is written and restored.
//!
//! | key                         | what                                  |
//! |-----------------------------|---------------------------------------|
//! | `online/l{i}.weight`, `.bias` | online network                      |
//! | `target/l{i}.weight`, `.bias` | target network                      |
//! | `adam/m/…`, `adam/v/…`      | Adam moments, shaped like the network |
//! | `replay/{obs,action,…}`     | replay buffer columns                 |
//! | `state`                     | counters, episode in progress, seed   |
//! | `rng`                       | the training random generator         |
//!
//! Metrics `eval_return` and `loss`. Saving goes through the trainer layer:
//! the training thread only copies the snapshot, a background thread writes
//! and syncs it, and retention (the newest three steps and the best one by
//! `eval_return`) is applied atomically with each commit.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode, PendingStep};
use ckptdb::{Db, DbOptions, Snapshot};
use ndarray::{Array1, Array2, Ix1, Ix2};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Config};
use crate::cartpole::CartPole;
use crate::mlp::{Adam, Mlp};
use crate::replay::Replay;

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
    replay_head: usize,
    adam_t: u64,
}

/// The run's database.
pub struct Run {
    manager: CheckpointManager,
    seed: u64,
}

fn put_mlp(tx: &mut PendingStep, prefix: &str, m: &Mlp) -> ckptdb::Result<()> {
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

fn rows(v: &[[f32; 4]]) -> Array2<f32> {
    Array2::from_shape_fn((v.len(), 4), |(i, j)| v[i][j])
}

fn unrows(a: Array2<f32>) -> Vec<[f32; 4]> {
    a.outer_iter().map(|r| [r[0], r[1], r[2], r[3]]).collect()
}

impl Run {
    pub fn open(path: &Path, seed: u64, save_every: u64) -> ckptdb::Result<Run> {
        let options = CheckpointOptions::new()
            .save_every_steps(save_every)
            .keep_last(3)
            .keep_best("eval_return", 1, MetricMode::Max);
        // Small segments: retention frees disk as soon as a segment holds
        // nothing live (a snapshot of this run is about 2.4 MiB).
        let db = Db::open_with(path, DbOptions::default().segment_size(16 << 20))?;
        Ok(Run {
            manager: CheckpointManager::new(Arc::new(db), options),
            seed,
        })
    }

    /// Live steps, once every save in flight has completed.
    pub fn steps(&self) -> ckptdb::Result<Vec<u64>> {
        self.manager.flush()?;
        Ok(self.manager.db().steps())
    }

    /// True when the schedule says `step` is a save step.
    pub fn should_save(&self, step: u64) -> bool {
        self.manager.should_save(step)
    }

    /// Waits until every save has completed and is durable.
    pub fn flush(&self) -> ckptdb::Result<()> {
        self.manager.flush()
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
    ) -> Result<Option<(Agent, Replay, Pcg64Mcg, CartPole, Counters)>, Error> {
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
        let mut replay = Replay::new(cfg.capacity as usize);
        replay.obs = unrows(
            s.tensor("replay/obs")?
                .to_owned::<f32>()?
                .into_dimensionality()?,
        );
        replay.next_obs = unrows(
            s.tensor("replay/next_obs")?
                .to_owned::<f32>()?
                .into_dimensionality()?,
        );
        replay.action = s.tensor("replay/action")?.as_slice::<i64>()?.to_vec();
        replay.reward = s.tensor("replay/reward")?.as_slice::<f32>()?.to_vec();
        replay.terminated = s.tensor("replay/terminated")?.as_slice::<bool>()?.to_vec();
        replay.head = state.replay_head;
        let rng: Pcg64Mcg = s.value("rng")?;
        let agent = Agent {
            cfg: cfg.clone(),
            online,
            target,
            adam,
        };
        Ok(Some((agent, replay, rng, state.env, state.counters)))
    }

    /// Hands a copy of the run's state to a background commit and returns.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &self,
        agent: &Agent,
        replay: &Replay,
        rng: &Pcg64Mcg,
        env: &CartPole,
        c: &Counters,
        eval: f64,
        loss: f32,
    ) -> ckptdb::Result<()> {
        let mut counters = c.clone();
        counters.checkpoints += 1;
        let mut p = PendingStep::new();
        put_mlp(&mut p, "online", &agent.online)?;
        put_mlp(&mut p, "target", &agent.target)?;
        put_mlp(&mut p, "adam/m", &agent.adam.m)?;
        put_mlp(&mut p, "adam/v", &agent.adam.v)?;
        p.put_tensor_owned("replay/obs", rows(&replay.obs))?;
        p.put_tensor_owned("replay/next_obs", rows(&replay.next_obs))?;
        p.put_tensor_owned("replay/action", Array1::from(replay.action.clone()))?;
        p.put_tensor_owned("replay/reward", Array1::from(replay.reward.clone()))?;
        p.put_tensor_owned("replay/terminated", Array1::from(replay.terminated.clone()))?;
        p.put_value(
            "state",
            &State {
                seed: self.seed,
                counters,
                env: env.clone(),
                replay_head: replay.head,
                adam_t: agent.adam.t,
            },
        )?;
        p.put_value("rng", rng)?;
        p.put_metric("eval_return", eval)?;
        if loss.is_finite() {
            p.put_metric("loss", f64::from(loss))?;
        }
        self.manager.save_async(c.step, p)
    }
}
