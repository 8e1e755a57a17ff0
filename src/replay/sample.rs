//! Sampling: uniform with and without replacement, and prioritized, into a
//! [`Batch`] of one contiguous array per field.
//!
//! **Prioritized sampling** is proportional (Schaul et al., 2016): slot `i`
//! is drawn with probability `P(i) = p_i^α / Σ_k p_k^α`, independently for
//! each row of the batch (with replacement). Each row gets the importance
//! weight `w_i = (N·P(i))^-β`, normalized by the largest weight any
//! transition in the table could get, `max_w = (N·P_min)^-β`: so
//! `w_i / max_w = (p_i^α / p_min^α)^-β`, in `(0, 1]`, comparable across
//! batches.

use std::collections::BTreeMap;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand::{Rng, RngExt};

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};

use super::ring::Ring;

/// Which transition a sampled row is: the slot it was read from and the
/// transition's serial number (its position in the order of all pushes).
/// [`update_priorities`](crate::replay::ReplayTable::update_priorities)
/// uses the serial to ignore a slot overwritten since it was sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleIndex {
    /// The slot in the ring, `0..capacity`.
    pub slot: u64,
    /// The transition's serial number, `0..total_inserted`.
    pub serial: u64,
}

/// One field of a batch: `rows × field shape` elements in one contiguous,
/// 8-byte-aligned buffer.
#[derive(Clone, Debug)]
pub struct Column {
    dtype: DType,
    shape: Vec<usize>,
    /// Backing store; `u64` so that every element type is aligned.
    data: Vec<u64>,
    len: usize,
}

impl Column {
    fn new(dtype: DType, shape: Vec<usize>, len: usize) -> Column {
        Column {
            dtype,
            shape,
            data: vec![0u64; len.div_ceil(8)],
            len,
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape: the batch size, then the field's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The little-endian bytes, row-major.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.data)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.data)[..self.len]
    }
}

/// A sampled batch: one contiguous array per field, the sampled indices
/// and, for prioritized sampling, the importance weights.
#[derive(Clone, Debug)]
pub struct Batch {
    table: String,
    indices: Vec<SampleIndex>,
    weights: Option<Vec<f64>>,
    columns: BTreeMap<String, Column>,
}

impl Batch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True for a batch of no rows.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The transitions sampled, row by row.
    pub fn indices(&self) -> &[SampleIndex] {
        &self.indices
    }

    /// Normalized importance weights, row by row (prioritized sampling
    /// only).
    pub fn weights(&self) -> Option<&[f64]> {
        self.weights.as_deref()
    }

    /// Field names, sorted.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.columns.keys().map(String::as_str)
    }

    /// The column of field `name`.
    pub fn column(&self, name: &str) -> Result<&Column> {
        self.columns.get(name).ok_or_else(|| Error::NotFound {
            what: format!("field {name:?} in replay table {:?}", self.table),
        })
    }

    /// Field `name` as an array view of shape `[rows, field shape…]`;
    /// [`Error::DtypeMismatch`] when `T` is not the field's element type.
    pub fn view<T: Element>(&self, name: &str) -> Result<ArrayViewD<'_, T>> {
        let c = self.column(name)?;
        if c.dtype != T::DTYPE {
            return Err(Error::DtypeMismatch {
                key: format!("{}/{name}", self.table),
                stored: c.dtype,
                requested: T::DTYPE,
            });
        }
        let values: &[T] = bytemuck::checked::try_cast_slice(c.bytes()).map_err(|_| {
            Error::invalid(format!(
                "field {name:?} of replay table {:?} holds an invalid {}",
                self.table, c.dtype
            ))
        })?;
        ArrayViewD::from_shape(IxDyn(&c.shape), values).map_err(|_| Error::ShapeMismatch {
            what: name.to_owned(),
            expected: c.shape.iter().map(|&d| d as u64).collect(),
            actual: vec![values.len() as u64],
        })
    }

    /// Field `name` as an owned array.
    pub fn array<T: Element>(&self, name: &str) -> Result<ArrayD<T>> {
        Ok(self.view::<T>(name)?.to_owned())
    }
}

/// `dst.copy_from_slice(src)`, with the common small field sizes copied
/// inline instead of through a `memcpy` call.
#[inline]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    match (dst.len(), src.len()) {
        (1, 1) => dst[0] = src[0],
        (4, 4) => dst.copy_from_slice(&<[u8; 4]>::try_from(src).unwrap_or_default()),
        (8, 8) => dst.copy_from_slice(&<[u8; 8]>::try_from(src).unwrap_or_default()),
        (16, 16) => dst.copy_from_slice(&<[u8; 16]>::try_from(src).unwrap_or_default()),
        _ => dst.copy_from_slice(src),
    }
}

/// Copies the rows of `slots` into a batch.
pub(crate) fn gather(ring: &Ring, slots: &[u64], weights: Option<Vec<f64>>) -> Result<Batch> {
    let schema = &ring.schema;
    let n = slots.len();
    let mut cols: Vec<Column> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut shape = Vec::with_capacity(f.shape.len() + 1);
            shape.push(n);
            shape.extend(f.shape.iter().map(|&d| d as usize));
            Column::new(f.dtype, shape, n * schema.size(i))
        })
        .collect();
    let layout: Vec<(usize, usize)> = (0..cols.len())
        .map(|i| (schema.offset(i), schema.size(i)))
        .collect();
    // Two passes: first find every row and touch its first and last byte,
    // loads that do not depend on each other, so the CPU overlaps the cache
    // misses of a random batch; then copy fields out of rows already in
    // cache.
    let mut rows: Vec<&[u8]> = Vec::with_capacity(n);
    let mut indices = Vec::with_capacity(n);
    let mut touch = 0u8;
    for &slot in slots {
        let row = ring.row_checked(slot)?;
        touch ^= row[0] ^ row[row.len() - 1];
        rows.push(row);
        let serial = ring.serial_at(slot).unwrap_or(0);
        indices.push(SampleIndex { slot, serial });
    }
    std::hint::black_box(touch);
    for (col, &(off, size)) in cols.iter_mut().zip(&layout) {
        let out = col.bytes_mut();
        for (b, row) in rows.iter().enumerate() {
            copy_small(&mut out[b * size..(b + 1) * size], &row[off..off + size]);
        }
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .zip(cols)
        .collect();
    Ok(Batch {
        table: ring.name.clone(),
        indices,
        weights,
        columns,
    })
}

fn check_nonempty(ring: &Ring, n: usize) -> Result<()> {
    if ring.len() == 0 && n > 0 {
        return Err(Error::invalid(format!(
            "replay table {:?} is empty",
            ring.name
        )));
    }
    Ok(())
}

/// `n` rows drawn uniformly with replacement.
pub(crate) fn uniform<R: Rng + ?Sized>(ring: &Ring, rng: &mut R, n: usize) -> Result<Batch> {
    check_nonempty(ring, n)?;
    let len = ring.len();
    // While the ring is not full, the occupied slots are exactly 0..len.
    let slots: Vec<u64> = (0..n).map(|_| rng.random_range(0..len)).collect();
    gather(ring, &slots, None)
}

/// `n` distinct rows drawn uniformly (without replacement).
pub(crate) fn uniform_distinct<R: Rng + ?Sized>(
    ring: &Ring,
    rng: &mut R,
    n: usize,
) -> Result<Batch> {
    let len = ring.len();
    if n as u64 > len {
        return Err(Error::invalid(format!(
            "cannot draw {n} distinct rows from replay table {:?} of {len}",
            ring.name
        )));
    }
    let idx = rand::seq::index::sample(rng, len as usize, n);
    let slots: Vec<u64> = idx.iter().map(|i| i as u64).collect();
    gather(ring, &slots, None)
}

/// `n` rows drawn in proportion to `p^α`, with importance weights for `beta`.
pub(crate) fn prioritized<R: Rng + ?Sized>(
    ring: &Ring,
    rng: &mut R,
    n: usize,
    beta: f64,
) -> Result<Batch> {
    let Some(tree) = &ring.prio else {
        return Err(Error::invalid(format!(
            "replay table {:?} keeps no priorities",
            ring.name
        )));
    };
    if !(beta.is_finite() && beta >= 0.0) {
        return Err(Error::invalid(format!(
            "beta must be finite and >= 0, got {beta}"
        )));
    }
    check_nonempty(ring, n)?;
    if n == 0 {
        // Zero rows from an empty table are an empty batch, as for the
        // uniform draws; the sum-tree's descent would find no leaf.
        return gather(ring, &[], Some(Vec::new()));
    }
    let total = tree.total();
    let min = tree.min() as f64;
    let mut us: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * total).collect();
    let mut found = vec![0usize; n];
    if !tree.find_many(&mut us, &mut found) {
        return Err(Error::invalid(format!(
            "replay table {:?} is empty",
            ring.name
        )));
    }
    let slots: Vec<u64> = found.iter().map(|&s| s as u64).collect();
    let weights: Vec<f64> = found
        .iter()
        .map(|&s| (tree.get(s) as f64 / min).powf(-beta))
        .collect();
    gather(ring, &slots, Some(weights))
}
