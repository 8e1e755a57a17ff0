//! Per-tensor statistics for run reports: L2 norm, NaN/Inf counts, and the
//! norm of the change between two versions of a tensor.
//!
//! Everything streams over the stored elements once, in `f64`, without
//! copying the tensor. Sums of squares run over eight independent
//! accumulators so the loop is not serialised on one floating-point add
//! (the compiler may not reorder `f64` additions by itself); the order of
//! additions therefore differs from a naive left-to-right sum by rounding
//! only.

use serde::Serialize;

use crate::Element;

/// Lanes of independent accumulators in the streaming loops.
pub const LANES: usize = 8;

/// What one stored tensor holds, summarized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TensorSummary {
    /// Elements in the tensor.
    pub elements: u64,
    /// Elements that are NaN.
    pub nan: u64,
    /// Elements that are +Inf or −Inf.
    pub inf: u64,
    /// Sum of the squares of the finite elements.
    pub sum_squares: f64,
}

impl TensorSummary {
    /// The L2 norm over the finite elements (NaN and ±Inf are counted
    /// separately, so one bad element does not hide the rest's scale).
    pub fn l2(&self) -> f64 {
        self.sum_squares.sqrt()
    }

    /// True when some element is NaN or infinite.
    pub fn has_non_finite(&self) -> bool {
        self.nan + self.inf > 0
    }
}

/// Running sums behind a [`TensorSummary`] and a change, fed block by block
/// so a caller can stream several tensors side by side. Blocks whose length
/// is a multiple of [`LANES`] (all but the last) leave every lane's order of
/// additions the same as one pass over the whole tensor, so the result is
/// bit-identical to [`summarize`] / [`summarize_change`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Accumulator {
    elements: u64,
    sq: [f64; LANES],
    dsq: [f64; LANES],
    /// Non-finite elements per lane; NaN and Inf are told apart only in
    /// the (rare) blocks that hold any, so the hot loop keeps one counter
    /// per lane instead of two (two did not fit the vector registers).
    bad: [u64; LANES],
    nan: u64,
}

impl Accumulator {
    /// Adds the next block of a tensor.
    pub fn add<T: Element>(&mut self, xs: &[T]) {
        self.elements += xs.len() as u64;
        let bad = self.bad_total();
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                self.value(i, c[i].to_f64());
            }
        }
        for (i, x) in chunks.remainder().iter().enumerate() {
            self.value(i, x.to_f64());
        }
        if self.bad_total() != bad {
            self.count_nan(xs);
        }
    }

    fn bad_total(&self) -> u64 {
        self.bad.iter().sum()
    }

    fn count_nan<T: Element>(&mut self, xs: &[T]) {
        self.nan += xs.iter().filter(|x| x.to_f64().is_nan()).count() as u64;
    }

    /// Adds the next block of a tensor and of its previous version (same
    /// length), for `Σ (cur − prev)²` over the pairs where both are finite.
    pub fn add_change<T: Element>(&mut self, prev: &[T], cur: &[T]) {
        debug_assert_eq!(prev.len(), cur.len());
        self.elements += cur.len() as u64;
        let bad = self.bad_total();
        let mut pc = prev.chunks_exact(LANES);
        let mut cc = cur.chunks_exact(LANES);
        for (p, c) in (&mut pc).zip(&mut cc) {
            for i in 0..LANES {
                self.pair(i, p[i].to_f64(), c[i].to_f64());
            }
        }
        for (i, (p, c)) in pc.remainder().iter().zip(cc.remainder()).enumerate() {
            self.pair(i, p.to_f64(), c.to_f64());
        }
        if self.bad_total() != bad {
            self.count_nan(cur);
        }
    }

    // Selects instead of branches, so the lanes stay a straight line of
    // arithmetic the compiler can keep in vector registers.
    #[inline(always)]
    fn value(&mut self, i: usize, v: f64) {
        let finite = v.is_finite();
        self.sq[i] += if finite { v * v } else { 0.0 };
        self.bad[i] += !finite as u64;
    }

    #[inline(always)]
    fn pair(&mut self, i: usize, p: f64, v: f64) {
        self.value(i, v);
        let d = v - p;
        self.dsq[i] += if v.is_finite() && p.is_finite() {
            d * d
        } else {
            0.0
        };
    }

    /// The summary of everything added.
    pub fn summary(&self) -> TensorSummary {
        TensorSummary {
            elements: self.elements,
            nan: self.nan,
            inf: self.bad_total() - self.nan,
            sum_squares: self.sq.iter().sum(),
        }
    }

    /// `Σ (cur − prev)²` of everything added with [`Accumulator::add_change`].
    pub fn delta_sum_squares(&self) -> f64 {
        self.dsq.iter().sum()
    }
}

/// Summarizes `xs` in one pass.
pub fn summarize<T: Element>(xs: &[T]) -> TensorSummary {
    let mut a = Accumulator::default();
    a.add(xs);
    a.summary()
}

/// `cur` summarized, and `Σ (cur − prev)²` over the element pairs where both
/// are finite, streaming both tensors in lockstep. `None` for the second
/// when the lengths differ.
pub fn summarize_change<T: Element>(prev: &[T], cur: &[T]) -> (TensorSummary, Option<f64>) {
    if prev.len() != cur.len() {
        return (summarize(cur), None);
    }
    let mut a = Accumulator::default();
    a.add_change(prev, cur);
    (a.summary(), Some(a.delta_sum_squares()))
}

/// `‖Δ‖ / ‖w_prev‖`: the relative change from the previous version, from
/// `Σ Δ²` and the previous version's summary. `0` when nothing changed,
/// `+Inf` when a zero tensor became non-zero.
pub fn relative_change(delta_sum_squares: f64, prev: &TensorSummary) -> f64 {
    let d = delta_sum_squares.sqrt();
    if d == 0.0 {
        0.0
    } else {
        d / prev.l2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bf16, f16};

    /// The textbook definitions, element by element, for comparison.
    fn naive_l2(xs: &[f64]) -> f64 {
        xs.iter()
            .filter(|x| x.is_finite())
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn norm_of_a_known_vector() {
        // 3-4-5 and 1-2-2-(3): ‖[3, 4]‖ = 5, ‖[1, 2, 2]‖ = 3.
        assert_eq!(summarize(&[3.0f32, 4.0]).l2(), 5.0);
        assert_eq!(summarize(&[1i64, 2, 2]).l2(), 3.0);
        assert_eq!(summarize(&[true, false, true, true]).sum_squares, 3.0);
        let empty = summarize::<f32>(&[]);
        assert_eq!((empty.elements, empty.l2()), (0, 0.0));
    }

    #[test]
    fn norm_matches_the_definition_across_lane_remainders() {
        for n in [1usize, 7, 8, 9, 63, 1000] {
            let xs: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
                .collect();
            let s = summarize(&xs);
            assert!(close(s.l2(), naive_l2(&xs)), "n={n}");
            assert_eq!((s.elements, s.nan, s.inf), (n as u64, 0, 0));
        }
    }

    #[test]
    fn counts_nan_and_inf_and_leaves_them_out_of_the_norm() {
        let xs = [
            1.0f32,
            f32::NAN,
            2.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2.0,
            f32::NAN,
            0.0,
            0.0,
            f32::NAN,
        ];
        let s = summarize(&xs);
        assert_eq!((s.elements, s.nan, s.inf), (10, 3, 2));
        assert_eq!(s.l2(), 3.0);
        assert!(s.has_non_finite());
        let h = [f16::from_f32(3.0), f16::NAN, f16::from_f32(4.0)];
        let s = summarize(&h);
        assert_eq!((s.nan, s.l2()), (1, 5.0));
        let b = [bf16::INFINITY, bf16::from_f32(-2.0)];
        let s = summarize(&b);
        assert_eq!((s.inf, s.l2()), (1, 2.0));
    }

    #[test]
    fn change_matches_the_definition() {
        for n in [1usize, 5, 8, 17, 300] {
            let a: Vec<f32> = (0..n).map(|i| ((i + 1) as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i + 1) as f32 * 0.37).sin() + if i % 3 == 0 { 0.25 } else { 0.0 })
                .collect();
            let (s, d) = summarize_change(&a, &b);
            assert_eq!(s, summarize(&b));
            let expect: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (y as f64 - x as f64).powi(2))
                .sum();
            assert!(close(d.unwrap(), expect), "n={n}");
            let rel = relative_change(d.unwrap(), &summarize(&a));
            let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
            assert!(close(rel, expect.sqrt() / naive_l2(&a64)), "n={n}");
        }
    }

    #[test]
    fn relative_change_of_known_vectors() {
        // [3, 4] → [3, 4 + 10]: ‖Δ‖ = 10, ‖w‖ = 5.
        let (_, d) = summarize_change(&[3.0f64, 4.0], &[3.0, 14.0]);
        assert_eq!(relative_change(d.unwrap(), &summarize(&[3.0f64, 4.0])), 2.0);
        let (_, d) = summarize_change(&[1.0f64, 2.0], &[1.0, 2.0]);
        assert_eq!(relative_change(d.unwrap(), &summarize(&[1.0f64, 2.0])), 0.0);
        let (_, d) = summarize_change(&[0.0f64], &[1.0]);
        assert_eq!(
            relative_change(d.unwrap(), &summarize(&[0.0f64])),
            f64::INFINITY
        );
    }

    #[test]
    fn change_skips_non_finite_pairs_and_refuses_other_lengths() {
        let (s, d) = summarize_change(&[1.0f32, f32::NAN, 5.0], &[2.0, 7.0, f32::INFINITY]);
        assert_eq!((s.nan, s.inf), (0, 1));
        assert_eq!(d, Some(1.0));
        let (s, d) = summarize_change(&[1.0f32], &[1.0, 2.0]);
        assert_eq!((s.elements, d), (2, None));
    }
}
