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
//! Metrics `eval_return` and `loss`. Retention keeps the newest three steps
//! and the best one by `eval_return`, dropped atomically with each commit.

use std::collections::VecDeque;
use std::path::Path;

use ckptdb::{Db, Snapshot, StepTx};
use ndarray::{Array1, Array2, Ix1, Ix2};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Config};
use crate::cartpole::CartPole;
use crate::mlp::{Adam, Mlp};
use crate::replay::Replay;

type Error = Box<dyn std::error::Error>;

const KEEP_LAST: usize = 3;

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
    db: Db,
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

fn rows(v: &[[f32; 4]]) -> Array2<f32> {
    Array2::from_shape_fn((v.len(), 4), |(i, j)| v[i][j])
}

fn unrows(a: Array2<f32>) -> Vec<[f32; 4]> {
    a.outer_iter().map(|r| [r[0], r[1], r[2], r[3]]).collect()
}

impl Run {
    pub fn open(path: &Path, seed: u64) -> ckptdb::Result<Run> {
        Ok(Run {
            db: Db::open(path)?,
            seed,
        })
    }

    pub fn steps(&self) -> Vec<u64> {
        self.db.steps()
    }

    /// Best `eval_return` among the live steps (0 when there is none).
    pub fn best_eval(&self) -> f64 {
        self.db
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
        let Some(s) = self.db.latest()? else {
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

    /// Commits one snapshot and applies retention in the same commit.
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
        let mut tx = self.db.begin_step(c.step)?;
        put_mlp(&mut tx, "online", &agent.online)?;
        put_mlp(&mut tx, "target", &agent.target)?;
        put_mlp(&mut tx, "adam/m", &agent.adam.m)?;
        put_mlp(&mut tx, "adam/v", &agent.adam.v)?;
        tx.put_tensor("replay/obs", &rows(&replay.obs))?;
        tx.put_tensor("replay/next_obs", &rows(&replay.next_obs))?;
        tx.put_tensor("replay/action", &Array1::from(replay.action.clone()))?;
        tx.put_tensor("replay/reward", &Array1::from(replay.reward.clone()))?;
        tx.put_tensor(
            "replay/terminated",
            &Array1::from(replay.terminated.clone()),
        )?;
        tx.put_value(
            "state",
            &State {
                seed: self.seed,
                counters,
                env: env.clone(),
                replay_head: replay.head,
                adam_t: agent.adam.t,
            },
        )?;
        tx.put_value("rng", rng)?;
        tx.put_metric("eval_return", eval)?;
        if loss.is_finite() {
            tx.put_metric("loss", f64::from(loss))?;
        }
        for step in self.obsolete(c.step, eval) {
            tx.drop_step(step)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Live steps that committing `step` with `eval` makes obsolete: all but
    /// the newest `KEEP_LAST` (counting `step`) and the best by eval return.
    fn obsolete(&self, step: u64, eval: f64) -> Vec<u64> {
        let mut all: Vec<(u64, f64)> = self
            .db
            .step_infos()
            .iter()
            .map(|i| {
                (
                    i.step,
                    i.metrics
                        .get("eval_return")
                        .copied()
                        .unwrap_or(f64::NEG_INFINITY),
                )
            })
            .collect();
        all.push((step, eval));
        let best = all
            .iter()
            .filter(|(_, e)| !e.is_nan())
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(s, _)| *s);
        let newest: Vec<u64> = all.iter().rev().take(KEEP_LAST).map(|(s, _)| *s).collect();
        all.iter()
            .map(|(s, _)| *s)
            .filter(|s| *s != step && !newest.contains(s) && Some(*s) != best)
            .collect()
    }
}
