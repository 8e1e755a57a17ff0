//! Double DQN (van Hasselt et al. 2016): an online network chooses the next
//! action, a periodically synced target network evaluates it.

use ndarray::{Array1, Array2, ArrayView2};
use rand::{Rng, RngExt};

use crate::mlp::{Adam, Mlp};

/// Hyperparameters.
#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    pub lr: f32,
    pub gamma: f32,
    pub batch: usize,
    pub warmup: u64,
    pub eps_start: f32,
    pub eps_end: f32,
    pub eps_decay_steps: u64,
    pub target_sync: u64,
    pub capacity: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hidden: 128,
            lr: 5e-4,
            gamma: 0.99,
            batch: 64,
            warmup: 1_000,
            eps_start: 1.0,
            eps_end: 0.05,
            eps_decay_steps: 10_000,
            target_sync: 500,
            capacity: 50_000,
        }
    }
}

/// A batch of transitions, one array per field.
pub struct Batch {
    pub obs: Array2<f32>,
    pub action: Array1<i64>,
    pub reward: Array1<f32>,
    pub next_obs: Array2<f32>,
    pub terminated: Array1<bool>,
}

pub struct Agent {
    pub cfg: Config,
    pub online: Mlp,
    pub target: Mlp,
    pub adam: Adam,
}

impl Agent {
    pub fn new(cfg: Config, rng: &mut impl Rng) -> Agent {
        let online = Mlp::new(&[4, cfg.hidden, cfg.hidden, 2], rng);
        let adam = Adam::new(&online, cfg.lr);
        Agent {
            target: online.clone(),
            online,
            adam,
            cfg,
        }
    }

    pub fn epsilon(&self, step: u64) -> f32 {
        let frac = (step as f32 / self.cfg.eps_decay_steps as f32).min(1.0);
        self.cfg.eps_start + frac * (self.cfg.eps_end - self.cfg.eps_start)
    }

    pub fn greedy(&self, obs: [f32; 4]) -> usize {
        let x = ArrayView2::from_shape((1, 4), &obs).expect("1x4");
        let q = self.online.forward(x).0;
        usize::from(q[[0, 1]] > q[[0, 0]])
    }

    pub fn act(&self, obs: [f32; 4], step: u64, rng: &mut impl Rng) -> usize {
        if rng.random::<f32>() < self.epsilon(step) {
            rng.random_range(0..2)
        } else {
            self.greedy(obs)
        }
    }

    /// One gradient step on a batch; returns the mean Huber loss.
    pub fn train(&mut self, b: &Batch) -> f32 {
        let n = b.obs.nrows();
        let (q_next_online, _) = self.online.forward(b.next_obs.view());
        let (q_next_target, _) = self.target.forward(b.next_obs.view());
        let (q, tape) = self.online.forward(b.obs.view());
        let mut d_out = Array2::<f32>::zeros((n, 2));
        let mut loss = 0.0;
        for i in 0..n {
            let best = usize::from(q_next_online[[i, 1]] > q_next_online[[i, 0]]);
            let bootstrap = if b.terminated[i] {
                0.0
            } else {
                self.cfg.gamma * q_next_target[[i, best]]
            };
            let target = b.reward[i] + bootstrap;
            let a = b.action[i] as usize;
            let err = q[[i, a]] - target;
            // Huber loss, delta 1.
            let (l, g) = if err.abs() <= 1.0 {
                (0.5 * err * err, err)
            } else {
                (err.abs() - 0.5, err.signum())
            };
            loss += l;
            d_out[[i, a]] = g / n as f32;
        }
        let grads = self.online.backward(&tape, d_out);
        self.adam.step(&mut self.online, &grads);
        loss / n as f32
    }

    pub fn sync_target(&mut self) {
        self.target = self.online.clone();
    }
}
