//! The owned snapshot a training loop hands to an asynchronous commit.
//!
//! A [`PendingStep`] owns every byte it will write, so the training loop can
//! mutate its model as soon as [`CheckpointManager::save_async`] returns.
//! Borrowed arrays are copied (the only cost the loop pays); owned arrays
//! and vectors are moved in without a copy. Keys, shapes and lengths are
//! checked here, so a bad argument is reported by the call that made it and
//! not later by the background commit.
//!
//! [`CheckpointManager::save_async`]: super::CheckpointManager::save_async

use std::collections::BTreeMap;

use ndarray::{Array, ArrayBase, Data, Dimension};
use serde::Serialize;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::key::validate_metric;
use crate::put::{row_major, shape_of, to_json, Put};
use crate::replay::{ReplayCapture, ReplayTable};
use crate::txn::StepTx;

/// Bytes owned in whatever container they arrived in: a `Vec<u8>`, or the
/// `Vec<T>` of an array moved in without a copy.
struct Owned(Box<dyn AsBytes>);

trait AsBytes: Send {
    fn bytes(&self) -> &[u8];
}

impl<T: Element> AsBytes for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl<T: Element> From<Vec<T>> for Owned {
    fn from(v: Vec<T>) -> Owned {
        Owned(Box::new(v))
    }
}

/// Everything one step will commit, owned: tensors, blobs, values and
/// metrics. Build it on the training thread and hand it to
/// [`CheckpointManager::save_async`](super::CheckpointManager::save_async),
/// or apply it to a transaction with [`StepTx::apply`]. Every put is
/// checked here, as the same put on a [`StepTx`] would be.
#[derive(Default)]
pub struct PendingStep {
    puts: Vec<Put<Owned>>,
    metrics: BTreeMap<String, f64>,
    /// Replay tables, as captured by [`PendingStep::put_replay`].
    replay: Vec<ReplayCapture>,
    bytes: u64,
}

impl std::fmt::Debug for PendingStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStep")
            .field("entries", &self.puts.len())
            .field("bytes", &self.bytes)
            .field("metrics", &self.metrics)
            .field("replay", &self.replay)
            .finish()
    }
}

impl PendingStep {
    /// An empty step.
    pub fn new() -> PendingStep {
        PendingStep::default()
    }

    /// Payload bytes held so far.
    pub fn byte_len(&self) -> u64 {
        self.bytes
    }

    fn push(&mut self, put: Put<Owned>) {
        self.bytes += put.len();
        self.puts.push(put);
    }

    /// Copies a tensor in (any layout; stored row-major).
    pub fn put_tensor<T, S, D>(&mut self, key: &str, array: &ArrayBase<S, D>) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let shape = shape_of(array.shape())?;
        let data = row_major(array).into_owned();
        self.push(Put::tensor(key, T::DTYPE, shape, data.into())?);
        Ok(())
    }

    /// Moves an owned tensor in without copying it (a tensor that is not in
    /// standard layout is copied into row-major order).
    pub fn put_tensor_owned<T, D>(&mut self, key: &str, array: Array<T, D>) -> Result<()>
    where
        T: Element,
        D: Dimension,
    {
        let shape = shape_of(array.shape())?;
        let n = array.len();
        let data = if array.is_standard_layout() {
            match array.into_raw_vec_and_offset() {
                (v, Some(0) | None) if v.len() == n => v,
                (v, Some(off)) if v.len() >= off + n => v[off..off + n].to_vec(),
                (v, _) => {
                    return Err(Error::invalid(format!(
                        "{key:?}: array storage of {} elements does not hold {n}",
                        v.len()
                    )))
                }
            }
        } else {
            array.iter().copied().collect()
        };
        self.push(Put::tensor(key, T::DTYPE, shape, data.into())?);
        Ok(())
    }

    /// Copies a tensor given as little-endian row-major bytes.
    pub fn put_tensor_raw(
        &mut self,
        key: &str,
        dtype: DType,
        shape: &[u64],
        bytes: &[u8],
    ) -> Result<()> {
        self.put_tensor_raw_owned(key, dtype, shape, bytes.to_vec())
    }

    /// Moves a tensor given as little-endian row-major bytes in.
    pub fn put_tensor_raw_owned(
        &mut self,
        key: &str,
        dtype: DType,
        shape: &[u64],
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.push(Put::tensor(key, dtype, shape.to_vec(), bytes.into())?);
        Ok(())
    }

    /// Copies raw bytes in.
    pub fn put_blob(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_blob_owned(key, bytes.to_vec())
    }

    /// Moves raw bytes in.
    pub fn put_blob_owned(&mut self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.push(Put::blob(key, bytes.into())?);
        Ok(())
    }

    /// Serializes a serde value (as JSON) now.
    pub fn put_value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.push(Put::json(key, to_json(key, value)?.into())?);
        Ok(())
    }

    /// Records a metric.
    pub fn put_metric(&mut self, name: &str, value: f64) -> Result<()> {
        validate_metric(name, value)?;
        self.metrics.insert(name.to_owned(), value);
        Ok(())
    }

    /// Records replay table `table` in the step as it is now, as
    /// [`StepTx::put_replay`] would: the table's full pages are already in
    /// the log (pages still waiting for their batch are appended now), so
    /// only its small state is copied — the page being filled, the
    /// priorities and the ring counters. The table can go on pushing at
    /// once; the step holds the rows pushed before this call.
    ///
    /// Takes the database's writer for a moment, so it waits for a commit
    /// in flight; don't call it while this thread holds a [`StepTx`].
    pub fn put_replay(&mut self, table: &mut ReplayTable<'_>) -> Result<()> {
        let capture = table.capture()?;
        self.replay.push(capture);
        Ok(())
    }

    /// Puts everything into `tx`, in the order it was put here.
    pub(crate) fn apply(self, tx: &mut StepTx<'_>) -> Result<()> {
        for put in self.puts {
            tx.put(put)?;
        }
        for (name, &v) in &self.metrics {
            tx.put_metric(name, v)?;
        }
        for table in self.replay {
            let recorded = table.record(tx)?;
            tx.insert_replay(recorded);
        }
        Ok(())
    }
}
