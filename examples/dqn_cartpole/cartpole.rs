//! CartPole with the classic physics constants (Barto, Sutton & Anderson
//! 1983, as in Gym's CartPole-v1): a pole on a cart, push left or right,
//! +1 reward per step while the pole is within 12° and the cart within 2.4
//! units of the centre, at most 500 steps.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
const HALF_LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * HALF_LENGTH;
const FORCE: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_LIMIT: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_LIMIT: f64 = 2.4;
/// Episode length cap.
pub const MAX_STEPS: u32 = 500;

/// The full state of an episode in progress; part of every checkpoint so a
/// resumed run continues the very same episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartPole {
    /// x, x_dot, theta, theta_dot
    pub state: [f64; 4],
    /// Steps taken in this episode.
    pub steps: u32,
}

/// What one step returns.
pub struct Outcome {
    pub reward: f32,
    /// The pole fell or the cart left the track.
    pub terminated: bool,
    /// The episode hit the step cap.
    pub truncated: bool,
}

impl CartPole {
    pub fn reset(rng: &mut impl Rng) -> CartPole {
        let mut state = [0.0; 4];
        for s in &mut state {
            *s = rng.random_range(-0.05..0.05);
        }
        CartPole { state, steps: 0 }
    }

    pub fn observation(&self) -> [f32; 4] {
        self.state.map(|v| v as f32)
    }

    /// Applies action 0 (push left) or 1 (push right), Euler integration.
    pub fn step(&mut self, action: usize) -> Outcome {
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE } else { -FORCE };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        self.steps += 1;
        let [x, _, theta, _] = self.state;
        let terminated =
            !(-X_LIMIT..=X_LIMIT).contains(&x) || !(-THETA_LIMIT..=THETA_LIMIT).contains(&theta);
        Outcome {
            reward: 1.0,
            terminated,
            truncated: !terminated && self.steps >= MAX_STEPS,
        }
    }
}
