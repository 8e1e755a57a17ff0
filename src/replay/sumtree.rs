//! The sum-tree behind prioritized sampling.
//!
//! A textbook sum-tree keeps one `f64` node per slot and per inner node:
//! 16 bytes per transition, 16 MiB for a million. This one keeps the
//! per-slot values (`p^α`) as `f32` leaves (4 bytes per slot) and builds the
//! tree over **blocks** of [`BLOCK`] leaves: a sample descends the tree of
//! block sums (`f64`) and then scans at most `BLOCK` leaves. A block's sum is
//! recomputed from its leaves whenever they change rather than adjusted by a
//! difference, and every inner node from its two children, so rounding
//! errors never accumulate however long training runs.
//!
//! A second tree of block minima gives the smallest priority in the table,
//! which normalizes importance weights. A leaf of 0 is an empty slot: never
//! sampled, and not part of the minimum.
//!
//! # New transitions update the tree lazily
//!
//! Every pushed row gets the maximum priority, so pushing would recompute
//! its block and the 15 nodes above it for every row: five times the rest
//! of a push. Instead a push only writes its leaves and widens the range of
//! *stale* blocks; the nodes are brought up to date, each stale block and
//! each node above them once, by the next operation that reads them (a
//! sample, a priority update). Pushing row after row between two samples
//! then costs the tree one block per 64 rows. The result is the tree a
//! rebuild from the leaves gives, as an eager update would.
//!
//! Reads take `&self` (a table may be sampled from several threads), so the
//! nodes sit behind a `RwLock`: a read that finds stale blocks takes it for
//! writing once to bring them up to date, every other read shares it.

use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// Leaves per block.
const BLOCK: usize = 64;

#[derive(Debug)]
pub(crate) struct SumTree {
    leaves: Vec<f32>,
    blocks: usize,
    /// Number of tree leaves (blocks rounded up to a power of two).
    width: usize,
    nodes: RwLock<Nodes>,
}

#[derive(Debug)]
struct Nodes {
    /// `sums[1]` is the root; the children of `i` are `2i` and `2i + 1`; the
    /// block `b` is node `width + b`.
    sums: Vec<f64>,
    mins: Vec<f32>,
    /// The first and last block whose leaves changed since the nodes were
    /// computed (blocks in between may not have changed).
    stale: Option<(usize, usize)>,
}

impl SumTree {
    /// A tree of `n` empty slots.
    pub(crate) fn new(n: usize) -> SumTree {
        let blocks = n.div_ceil(BLOCK).max(1);
        let width = blocks.next_power_of_two();
        SumTree {
            leaves: vec![0.0; n],
            blocks,
            width,
            nodes: RwLock::new(Nodes {
                sums: vec![0.0; 2 * width],
                mins: vec![f32::INFINITY; 2 * width],
                stale: None,
            }),
        }
    }

    /// A tree over `leaves`, which the caller has checked to be finite and
    /// non-negative.
    pub(crate) fn from_leaves(leaves: Vec<f32>) -> SumTree {
        let mut t = SumTree::new(leaves.len());
        t.leaves = leaves;
        let nodes = t.nodes.get_mut().unwrap_or_else(PoisonError::into_inner);
        nodes.stale = Some((0, t.blocks - 1));
        bring_up_to_date(nodes, &t.leaves, t.width);
        t
    }

    pub(crate) fn leaves(&self) -> &[f32] {
        &self.leaves
    }

    pub(crate) fn get(&self, slot: usize) -> f32 {
        self.leaves.get(slot).copied().unwrap_or(0.0)
    }

    /// Sum of all leaves.
    pub(crate) fn total(&self) -> f64 {
        self.nodes().sums.get(1).copied().unwrap_or(0.0)
    }

    /// Smallest non-zero leaf (infinite when all are zero).
    pub(crate) fn min(&self) -> f32 {
        self.nodes().mins.get(1).copied().unwrap_or(f32::INFINITY)
    }

    /// Sets leaf `slot` to `value` (finite, >= 0) and updates the tree.
    pub(crate) fn set(&mut self, slot: usize, value: f32) {
        let Some(leaf) = self.leaves.get_mut(slot) else {
            return;
        };
        *leaf = value;
        let (leaves, width) = (&self.leaves, self.width);
        let nodes = self.nodes.get_mut().unwrap_or_else(PoisonError::into_inner);
        bring_up_to_date(nodes, leaves, width);
        update_block(nodes, leaves, width, slot / BLOCK);
    }

    /// Sets the `n` leaves from `first` on (those that exist) to `value`
    /// (finite, >= 0); the blocks they touch become stale (see the module
    /// documentation).
    pub(crate) fn set_run(&mut self, first: usize, n: usize, value: f32) {
        let end = first.saturating_add(n).min(self.leaves.len());
        let Some(run) = self.leaves.get_mut(first..end) else {
            return;
        };
        if run.is_empty() {
            return;
        }
        run.fill(value);
        let (lo, hi) = (first / BLOCK, (end - 1) / BLOCK);
        let nodes = self.nodes.get_mut().unwrap_or_else(PoisonError::into_inner);
        nodes.stale = Some(match nodes.stale {
            Some((a, z)) => (a.min(lo), z.max(hi)),
            None => (lo, hi),
        });
    }

    /// The nodes, up to date, for reading.
    fn nodes(&self) -> RwLockReadGuard<'_, Nodes> {
        let read = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        if read.stale.is_none() {
            return read;
        }
        drop(read);
        {
            let mut write = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
            bring_up_to_date(&mut write, &self.leaves, self.width);
        }
        // Only a `&mut self` call makes blocks stale again, and none can
        // run while `self` is borrowed.
        self.nodes.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot where the running sum of leaves first exceeds `u`, for `u`
    /// in `[0, total)`. Never returns a zero leaf while the total is
    /// positive; `None` when every leaf is zero.
    #[cfg(test)]
    pub(crate) fn find(&self, u: f64) -> Option<usize> {
        let mut out = [0usize];
        self.find_many(&mut [u], &mut out).then_some(out[0])
    }

    /// [`SumTree::find`] for many values at once, into `out`. The descents
    /// advance level by level across groups of values, and the leaves of
    /// every block found are loaded before any is scanned, so cache misses
    /// overlap instead of following one another. Returns false (and leaves
    /// `out` alone) when every leaf is zero.
    pub(crate) fn find_many(&self, us: &mut [f64], out: &mut [usize]) -> bool {
        let tree = self.nodes();
        if tree.sums.get(1).is_none_or(|&t| t <= 0.0) {
            return false;
        }
        // Eight descents at a time, kept in registers: each level's loads
        // depend on the level before, so one descent alone waits for every
        // load in turn; eight interleaved overlap their waits.
        const GROUP: usize = 8;
        let mut nodes = vec![1usize; us.len()];
        for (us, nodes) in us.chunks_mut(GROUP).zip(nodes.chunks_mut(GROUP)) {
            let mut u = [0.0f64; GROUP];
            let mut node = [1usize; GROUP];
            u[..us.len()].copy_from_slice(us);
            let mut width = 1;
            while width < self.width {
                for (i, u) in node.iter_mut().zip(u.iter_mut()) {
                    let left = tree.sums.get(2 * *i).copied().unwrap_or(0.0);
                    let right = tree.sums.get(2 * *i + 1).copied().unwrap_or(0.0);
                    // Rounding can leave `u` at or past the left sum when
                    // the right side is empty; never walk into an empty
                    // subtree. Branch-free: the direction is random, a
                    // branch on it would be mispredicted half the time.
                    let go_right = (*u >= left) & (right > 0.0);
                    *u -= if go_right { left } else { 0.0 };
                    *i = 2 * *i + go_right as usize;
                }
                width *= 2;
            }
            us.copy_from_slice(&u[..us.len()]);
            nodes.copy_from_slice(&node[..nodes.len()]);
        }
        // Bring the blocks' leaves into the cache together first: these
        // loads do not depend on one another, so their misses overlap,
        // while each scan below stops at a leaf that depends on the loads
        // before it and would take its block's misses one at a time.
        let mut touched = 0u32;
        for &i in &nodes {
            let lo = (i - self.width).min(self.blocks - 1) * BLOCK;
            let hi = (lo + BLOCK).min(self.leaves.len());
            for v in self
                .leaves
                .get(lo..hi)
                .unwrap_or_default()
                .iter()
                .step_by(16)
            {
                touched |= v.to_bits();
            }
        }
        std::hint::black_box(touched);
        for ((o, &i), &u) in out.iter_mut().zip(&nodes).zip(us.iter()) {
            *o = self.scan_block(i - self.width, u);
        }
        true
    }

    /// The leaf of block `b` where the running sum first exceeds `u` (the
    /// last non-zero leaf when rounding leaves `u` past the block's sum).
    fn scan_block(&self, b: usize, u: f64) -> usize {
        let b = b.min(self.blocks - 1);
        let lo = b * BLOCK;
        let hi = (lo + BLOCK).min(self.leaves.len());
        let mut acc = 0.0f64;
        let mut last = lo;
        for (j, &v) in self.leaves[lo..hi].iter().enumerate() {
            if v > 0.0 {
                acc += v as f64;
                last = lo + j;
                if u < acc {
                    return last;
                }
            }
        }
        last
    }
}

/// Recomputes the stale blocks of `nodes` from `leaves`, then every node
/// above them, each once: level by level, over the range of nodes above
/// the stale range.
fn bring_up_to_date(nodes: &mut Nodes, leaves: &[f32], width: usize) {
    let Some((lo, hi)) = nodes.stale else {
        return;
    };
    for b in lo..=hi {
        let (sum, min) = block_values(leaves, b);
        if let (Some(s), Some(m)) = (nodes.sums.get_mut(width + b), nodes.mins.get_mut(width + b)) {
            *s = sum;
            *m = min;
        }
    }
    let (mut a, mut z) = ((width + lo) / 2, (width + hi) / 2);
    while a >= 1 {
        for i in a..=z {
            pull(nodes, i);
        }
        a /= 2;
        z /= 2;
    }
    nodes.stale = None;
}

/// Recomputes block `b` from its leaves and every node above it (the
/// nodes are otherwise up to date). The path's new values are carried up
/// in registers: each level adds the sibling's sum (loads that do not
/// depend on one another) instead of reading back the child just stored.
fn update_block(nodes: &mut Nodes, leaves: &[f32], width: usize, b: usize) {
    let (mut sum, mut min) = block_values(leaves, b);
    let mut i = width + b;
    while i >= 1 {
        if let (Some(s), Some(m)) = (nodes.sums.get_mut(i), nodes.mins.get_mut(i)) {
            *s = sum;
            *m = min;
        }
        if i == 1 {
            break;
        }
        // The same sums `pull` computes: a two-term addition is exact
        // whichever side comes first.
        sum += nodes.sums.get(i ^ 1).copied().unwrap_or(0.0);
        min = min.min(nodes.mins.get(i ^ 1).copied().unwrap_or(f32::INFINITY));
        i /= 2;
    }
}

/// Node `i` from its two children.
fn pull(nodes: &mut Nodes, i: usize) {
    let (l, r) = (2 * i, 2 * i + 1);
    let sum = nodes.sums.get(l).copied().unwrap_or(0.0) + nodes.sums.get(r).copied().unwrap_or(0.0);
    let min = nodes
        .mins
        .get(l)
        .copied()
        .unwrap_or(f32::INFINITY)
        .min(nodes.mins.get(r).copied().unwrap_or(f32::INFINITY));
    if let (Some(s), Some(m)) = (nodes.sums.get_mut(i), nodes.mins.get_mut(i)) {
        *s = sum;
        *m = min;
    }
}

/// The sum and smallest non-zero leaf of block `b`. Eight running sums
/// instead of one: the additions of one chain wait for each other, eight
/// chains overlap (and vectorize). The order is fixed, so a block's sum is
/// the same whenever it is computed.
fn block_values(leaves: &[f32], b: usize) -> (f64, f32) {
    let lo = b * BLOCK;
    let hi = (lo + BLOCK).min(leaves.len());
    let leaves = leaves.get(lo..hi).unwrap_or_default();
    let mut sums = [0.0f64; 8];
    let mut mins = [f32::INFINITY; 8];
    let mut chunks = leaves.chunks_exact(8);
    for c in &mut chunks {
        for ((s, m), &v) in sums.iter_mut().zip(mins.iter_mut()).zip(c) {
            *s += v as f64;
            *m = if v > 0.0 { m.min(v) } else { *m };
        }
    }
    for ((s, m), &v) in sums.iter_mut().zip(mins.iter_mut()).zip(chunks.remainder()) {
        *s += v as f64;
        *m = if v > 0.0 { m.min(v) } else { *m };
    }
    let sum =
        ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]));
    let min = mins.iter().fold(f32::INFINITY, |a, &m| a.min(m));
    (sum, min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_mins_and_find() {
        let mut t = SumTree::new(100);
        assert_eq!(t.find(0.0), None);
        for i in 0..100 {
            t.set(i, (i + 1) as f32);
        }
        assert_eq!(t.total(), 5050.0);
        assert_eq!(t.min(), 1.0);
        assert_eq!(t.find(0.0), Some(0));
        assert_eq!(t.find(0.999), Some(0));
        assert_eq!(t.find(1.0), Some(1));
        assert_eq!(t.find(5049.9), Some(99));
        // Past the end (rounding) still lands on a real leaf.
        assert_eq!(t.find(1e9), Some(99));
        t.set(0, 0.0);
        assert_eq!(t.min(), 2.0);
        assert_eq!(t.find(0.0), Some(1));
        let u = SumTree::from_leaves(t.leaves().to_vec());
        assert_eq!(u.total(), t.total());
        assert_eq!(u.min(), t.min());
    }

    #[test]
    fn updates_give_the_tree_a_rebuild_gives() {
        // 1000 leaves: 16 blocks, the last one short.
        let mut t = SumTree::new(1000);
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        for round in 0..400 {
            let slot = next() % 1000;
            let value = (next() % 1000) as f32 * 0.37;
            match round % 4 {
                0 => t.set_run(slot, next() % 150, value),
                // Several runs far apart before the next read: one stale
                // range spans them.
                1 => {
                    for _ in 0..3 {
                        t.set_run(next() % 1000, next() % 40, (next() % 9) as f32);
                    }
                }
                _ => t.set(slot, value),
            }
            let u = SumTree::from_leaves(t.leaves().to_vec());
            let (got, want) = (t.nodes(), u.nodes());
            assert_eq!(got.sums, want.sums, "round {round}");
            assert_eq!(got.mins, want.mins, "round {round}");
            drop(got);
            // Reads bring stale blocks up to date; nothing is stale after.
            assert!(t.nodes.read().unwrap().stale.is_none());
        }
        let exact: f64 = t.leaves().iter().map(|&v| v as f64).sum();
        assert!((t.total() - exact).abs() <= exact * 1e-12);
        let smallest = t.leaves().iter().copied().filter(|&v| v > 0.0);
        assert_eq!(t.min(), smallest.fold(f32::INFINITY, f32::min));
    }
}
