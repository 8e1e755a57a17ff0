//! A small multi-layer perceptron (ReLU hidden layers, linear output) with
//! hand-written backpropagation, and the Adam optimizer.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, RngExt};

/// Weights `[in, out]` and biases `[out]` of every layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    pub weights: Vec<Array2<f32>>,
    pub biases: Vec<Array1<f32>>,
}

/// Activations kept by the forward pass for the backward pass.
pub struct Tape {
    /// Input of each layer (after the previous ReLU).
    inputs: Vec<Array2<f32>>,
}

/// Gradients, shaped like the parameters.
pub struct Grads {
    pub weights: Vec<Array2<f32>>,
    pub biases: Vec<Array1<f32>>,
}

impl Mlp {
    /// He-uniform initialisation from a seeded generator.
    pub fn new(sizes: &[usize], rng: &mut impl Rng) -> Mlp {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for pair in sizes.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = (6.0 / fan_in as f32).sqrt();
            weights.push(Array2::from_shape_fn((fan_in, fan_out), |_| {
                rng.random_range(-bound..bound)
            }));
            biases.push(Array1::zeros(fan_out));
        }
        Mlp { weights, biases }
    }

    pub fn layers(&self) -> usize {
        self.weights.len()
    }

    /// Outputs for a batch of inputs `[batch, in]`.
    pub fn forward(&self, x: ArrayView2<f32>) -> (Array2<f32>, Tape) {
        let mut inputs = Vec::with_capacity(self.layers());
        let mut h = x.to_owned();
        for l in 0..self.layers() {
            let mut z = h.dot(&self.weights[l]) + &self.biases[l];
            inputs.push(h);
            if l + 1 < self.layers() {
                z.mapv_inplace(|v| v.max(0.0));
            }
            h = z;
        }
        (h, Tape { inputs })
    }

    /// Gradients of the loss given its gradient with respect to the outputs.
    pub fn backward(&self, tape: &Tape, d_out: Array2<f32>) -> Grads {
        let n = self.layers();
        let mut weights = vec![Array2::zeros((0, 0)); n];
        let mut biases = vec![Array1::zeros(0); n];
        let mut d = d_out;
        for l in (0..n).rev() {
            let input = &tape.inputs[l];
            weights[l] = input.t().dot(&d);
            biases[l] = d.sum_axis(Axis(0));
            if l > 0 {
                let mut d_in = d.dot(&self.weights[l].t());
                // ReLU gate: the input of layer l is the ReLU output of l-1.
                ndarray::Zip::from(&mut d_in).and(input).for_each(|g, &a| {
                    if a <= 0.0 {
                        *g = 0.0;
                    }
                });
                d = d_in;
            }
        }
        Grads { weights, biases }
    }
}

/// Adam (Kingma & Ba) with bias correction.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub m: Mlp,
    pub v: Mlp,
    pub t: u64,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

impl Adam {
    pub fn new(model: &Mlp, lr: f32) -> Adam {
        let zeros = Mlp {
            weights: model
                .weights
                .iter()
                .map(|w| Array2::zeros(w.raw_dim()))
                .collect(),
            biases: model
                .biases
                .iter()
                .map(|b| Array1::zeros(b.raw_dim()))
                .collect(),
        };
        Adam {
            lr,
            m: zeros.clone(),
            v: zeros,
            t: 0,
        }
    }

    pub fn step(&mut self, model: &mut Mlp, grads: &Grads) {
        self.t += 1;
        let c1 = 1.0 - BETA1.powi(self.t as i32);
        let c2 = 1.0 - BETA2.powi(self.t as i32);
        let lr = self.lr;
        let update = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
        };
        for l in 0..model.layers() {
            ndarray::Zip::from(&mut model.weights[l])
                .and(&mut self.m.weights[l])
                .and(&mut self.v.weights[l])
                .and(&grads.weights[l])
                .for_each(|p, m, v, &g| update(p, m, v, g));
            ndarray::Zip::from(&mut model.biases[l])
                .and(&mut self.m.biases[l])
                .and(&mut self.v.biases[l])
                .and(&grads.biases[l])
                .for_each(|p, m, v, &g| update(p, m, v, g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
        let net = Mlp::new(&[3, 5, 2], &mut rng);
        let x = Array2::from_shape_fn((4, 3), |_| rng.random_range(-1.0..1.0f32));
        let loss = |n: &Mlp| n.forward(x.view()).0.mapv(|v| v * v).sum() / 2.0;
        let (out, tape) = net.forward(x.view());
        let g = net.backward(&tape, out);
        let h = 1e-3;
        for (i, j) in [(0, 0), (2, 4), (1, 3)] {
            let mut p = net.clone();
            p.weights[0][[i, j]] += h;
            let mut m = net.clone();
            m.weights[0][[i, j]] -= h;
            let numeric = (loss(&p) - loss(&m)) / (2.0 * h);
            assert!(
                (numeric - g.weights[0][[i, j]]).abs() < 1e-2,
                "{numeric} vs {}",
                g.weights[0][[i, j]]
            );
        }
    }
}
