//! Per-tensor statistics for run reports: L2 norm, NaN/Inf counts, and the
//! norm of the change between two versions of a tensor.
//!
//! Everything streams over the stored elements once, without copying the
//! tensor. Sums of squares run over independent lanes so the loop is not
//! serialised on one floating-point add (the compiler may not reorder
//! additions by itself); the order of additions therefore differs from a
//! naive left-to-right sum by rounding only.
//!
//! `f32` tensors, nearly all of what training stores, take a faster path:
//! a block of [`F32_BLOCK`] elements is summed in `f32` over sixteen lanes
//! (one vector register with AVX-512, chosen at run time, so the same
//! binary runs on any x86-64), and each block's sum is added to an `f64`
//! total. Each lane then sums 128 squares in `f32`, so a norm is within a
//! relative 1e-5 of the exact one, far below what a report shows. Where
//! `f32` would lose more than rounding (a block whose squares overflow, or
//! whose sum is so small that squares may have underflowed), that block is
//! summed again in `f64`, as every other dtype is.

use multiversion::multiversion;
use serde::Serialize;

use crate::{DType, Element};

/// Lanes of independent accumulators in the `f64` loops.
pub const LANES: usize = 8;

/// Elements of an `f32` tensor summed in `f32` before the sum joins the
/// `f64` total. Streams fed in blocks of a multiple of this (and of
/// [`LANES`]) add up exactly as one pass would.
pub const F32_BLOCK: usize = 2048;

/// Lanes of the `f32` kernels: one AVX-512 register.
const F32_LANES: usize = 16;

/// Below this, a block's `f32` sum of squares may have lost precision to
/// underflow (a square below `f32::MIN_POSITIVE` keeps few or no bits);
/// the block is summed again in `f64`. Squares that small in a block whose
/// sum is larger are too small to matter to it.
const F32_TINY: f32 = 1.0 / (1u64 << 60) as f32;

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
        match as_f32(xs) {
            Some(xs) => {
                for block in xs.chunks(F32_BLOCK) {
                    let (sq, bad) = squares_f32(block);
                    if f32_sum_holds(sq) {
                        self.sq[0] += f64::from(sq);
                        self.bad[0] += u64::from(bad);
                        if bad > 0 {
                            self.count_nan(block);
                        }
                    } else {
                        self.add_f64(block);
                    }
                }
            }
            None => self.add_f64(xs),
        }
    }

    fn add_f64<T: Element>(&mut self, xs: &[T]) {
        let bad = self.bad_total();
        let mut chunks = xs.chunks_exact(LANES);
        for c in &mut chunks {
            for (i, &x) in c.iter().enumerate() {
                self.value(i, x.to_f64());
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
        match (as_f32(prev), as_f32(cur)) {
            (Some(prev), Some(cur)) => {
                for (p, c) in prev.chunks(F32_BLOCK).zip(cur.chunks(F32_BLOCK)) {
                    let (sq, dsq, bad) = change_f32(p, c);
                    if f32_sum_holds(sq) && f32_sum_holds(dsq) {
                        self.sq[0] += f64::from(sq);
                        self.dsq[0] += f64::from(dsq);
                        self.bad[0] += u64::from(bad);
                        if bad > 0 {
                            self.count_nan(c);
                        }
                    } else {
                        self.add_change_f64(p, c);
                    }
                }
            }
            _ => self.add_change_f64(prev, cur),
        }
    }

    fn add_change_f64<T: Element>(&mut self, prev: &[T], cur: &[T]) {
        let bad = self.bad_total();
        let mut pc = prev.chunks_exact(LANES);
        let mut cc = cur.chunks_exact(LANES);
        for (p, c) in (&mut pc).zip(&mut cc) {
            for (i, (&p, &c)) in p.iter().zip(c).enumerate() {
                self.pair(i, p.to_f64(), c.to_f64());
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

/// `xs` as `f32`s when that is its element type.
fn as_f32<T: Element>(xs: &[T]) -> Option<&[f32]> {
    if T::DTYPE == DType::F32 {
        bytemuck::try_cast_slice(xs).ok()
    } else {
        None
    }
}

/// True when a block's `f32` sum of squares is as good as an `f64` one up
/// to rounding: finite, and not small enough for squares to have
/// underflowed (a block of zeros takes the `f64` path too, at no loss).
fn f32_sum_holds(sum: f32) -> bool {
    sum.is_finite() && sum >= F32_TINY
}

#[inline(always)]
fn is_finite_f32(v: f32) -> bool {
    // The exponent bits all set is NaN or ±Inf; on bits, so it vectorizes
    // as integer compares.
    v.to_bits() & 0x7f80_0000 != 0x7f80_0000
}

// One lane's step of the f32 kernels; inlined into each target's copy, so
// it takes that copy's instructions.
#[inline(always)]
fn square_lane(sq: &mut f32, bad: &mut u32, v: f32) {
    let finite = is_finite_f32(v);
    *sq += if finite { v * v } else { 0.0 };
    *bad += u32::from(!finite);
}

#[inline(always)]
fn change_lane(dsq: &mut f32, p: f32, v: f32) {
    let d = v - p;
    *dsq += if is_finite_f32(v) && is_finite_f32(p) {
        d * d
    } else {
        0.0
    };
}

/// `(Σ v² over the finite v, count of non-finite v)` of one block.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn squares_f32(xs: &[f32]) -> (f32, u32) {
    let mut sq = [0f32; F32_LANES];
    let mut bad = [0u32; F32_LANES];
    let (chunks, rest) = xs.as_chunks::<F32_LANES>();
    for c in chunks {
        for i in 0..F32_LANES {
            square_lane(&mut sq[i], &mut bad[i], c[i]);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        square_lane(&mut sq[i], &mut bad[i], v);
    }
    (sq.iter().sum(), bad.iter().sum())
}

/// `(Σ c² over the finite c, Σ (c − p)² over the pairs where both are
/// finite, count of non-finite c)` of one block of a tensor `c` and its
/// previous version `p`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw", "x86_64+avx2+fma"))]
fn change_f32(prev: &[f32], cur: &[f32]) -> (f32, f32, u32) {
    let mut sq = [0f32; F32_LANES];
    let mut dsq = [0f32; F32_LANES];
    let mut bad = [0u32; F32_LANES];
    let n = prev.len().min(cur.len());
    let (pc, prest) = prev[..n].as_chunks::<F32_LANES>();
    let (cc, crest) = cur[..n].as_chunks::<F32_LANES>();
    for (p, c) in pc.iter().zip(cc) {
        for i in 0..F32_LANES {
            square_lane(&mut sq[i], &mut bad[i], c[i]);
            change_lane(&mut dsq[i], p[i], c[i]);
        }
    }
    for (i, (&p, &v)) in prest.iter().zip(crest).enumerate() {
        square_lane(&mut sq[i], &mut bad[i], v);
        change_lane(&mut dsq[i], p, v);
    }
    (sq.iter().sum(), dsq.iter().sum(), bad.iter().sum())
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
            // f32 tensors are summed in f32 blocks (see the module's doc).
            assert!(close_f32(d.unwrap(), expect), "n={n}");
            let rel = relative_change(d.unwrap(), &summarize(&a));
            let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
            assert!(close_f32(rel, expect.sqrt() / naive_l2(&a64)), "n={n}");
        }
    }

    fn close_f32(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-5 * a.abs().max(b.abs())
    }

    #[test]
    fn f32_blocks_match_f64_sums_over_many_blocks() {
        let n = 10 * F32_BLOCK + 37;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.013).cos() * 3.0).collect();
        let b: Vec<f32> = a.iter().map(|&x| x * 1.01 + 0.5).collect();
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        assert!(close_f32(summarize(&a).l2(), naive_l2(&a64)));
        let (s, d) = summarize_change(&a, &b);
        let expect: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (y as f64 - x as f64).powi(2))
            .sum();
        assert!(close_f32(d.unwrap(), expect));
        assert_eq!(s.elements, n as u64);
    }

    #[test]
    fn f32_blocks_that_would_overflow_or_underflow_are_summed_in_f64() {
        // Squares of 1e25 overflow f32 and squares of 1e-25 underflow it;
        // the f64 path gets them to rounding.
        for v in [1e25f32, -3e30, 1e-25, 7e-40] {
            let xs = vec![v; 3 * F32_BLOCK + 5];
            let want = (v as f64).abs() * (xs.len() as f64).sqrt();
            let s = summarize(&xs);
            assert!(close(s.l2(), want), "{v}: {} vs {want}", s.l2());
            assert_eq!((s.nan, s.inf), (0, 0));
            let prev = vec![0f32; xs.len()];
            let (_, d) = summarize_change(&prev, &xs);
            assert!(close(d.unwrap().sqrt(), want), "{v}");
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
