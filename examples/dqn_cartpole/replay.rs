//! The replay buffer: a ring of transitions, uniform sampling.

use ndarray::{Array1, Array2};
use rand::{Rng, RngExt};

use crate::agent::Batch;

/// A ring buffer of transitions, stored column by column so a checkpoint
/// writes each column as one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub obs: Vec<[f32; 4]>,
    pub action: Vec<i64>,
    pub reward: Vec<f32>,
    pub next_obs: Vec<[f32; 4]>,
    pub terminated: Vec<bool>,
    /// Next slot to write.
    pub head: usize,
    capacity: usize,
}

impl Replay {
    pub fn new(capacity: usize) -> Replay {
        Replay {
            obs: Vec::with_capacity(capacity),
            action: Vec::with_capacity(capacity),
            reward: Vec::with_capacity(capacity),
            next_obs: Vec::with_capacity(capacity),
            terminated: Vec::with_capacity(capacity),
            head: 0,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.obs.len()
    }

    pub fn push(
        &mut self,
        obs: [f32; 4],
        action: i64,
        reward: f32,
        next_obs: [f32; 4],
        terminated: bool,
    ) {
        if self.len() < self.capacity {
            self.obs.push(obs);
            self.action.push(action);
            self.reward.push(reward);
            self.next_obs.push(next_obs);
            self.terminated.push(terminated);
        } else {
            let h = self.head;
            self.obs[h] = obs;
            self.action[h] = action;
            self.reward[h] = reward;
            self.next_obs[h] = next_obs;
            self.terminated[h] = terminated;
        }
        self.head = (self.head + 1) % self.capacity;
    }

    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Batch {
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..self.len())).collect();
        Batch {
            obs: Array2::from_shape_fn((n, 4), |(i, j)| self.obs[idx[i]][j]),
            action: Array1::from_shape_fn(n, |i| self.action[idx[i]]),
            reward: Array1::from_shape_fn(n, |i| self.reward[idx[i]]),
            next_obs: Array2::from_shape_fn((n, 4), |(i, j)| self.next_obs[idx[i]][j]),
            terminated: Array1::from_shape_fn(n, |i| self.terminated[idx[i]]),
        }
    }
}
