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
use crate::key::{validate_key, validate_metric};
use crate::replay::{ReplayCapture, ReplayTable};
use crate::txn::{check_rank, check_tensor_bytes, StepTx};

/// Bytes owned in whatever container they arrived in.
trait OwnedBytes: Send {
    fn bytes(&self) -> &[u8];
}

struct OwnedVec<T: Element>(Vec<T>);

impl<T: Element> OwnedBytes for OwnedVec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

enum Item {
    Tensor {
        dtype: DType,
        shape: Vec<u64>,
        bytes: Box<dyn OwnedBytes>,
    },
    Blob(Vec<u8>),
    Value(Vec<u8>),
}

/// Everything one step will commit, owned: tensors, blobs, values and
/// metrics. Build it on the training thread and hand it to
/// [`CheckpointManager::save_async`](super::CheckpointManager::save_async).
#[derive(Default)]
pub struct PendingStep {
    items: Vec<(String, Item)>,
    metrics: BTreeMap<String, f64>,
    /// Replay tables, as captured by [`PendingStep::put_replay`].
    replay: Vec<ReplayCapture>,
    bytes: u64,
}

impl std::fmt::Debug for PendingStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStep")
            .field("entries", &self.items.len())
            .field("bytes", &self.bytes)
            .field("metrics", &self.metrics)
            .field("replay", &self.replay)
            .finish()
    }
}

fn shape_of(dims: &[usize]) -> Result<Vec<u64>> {
    check_rank(dims.len())?;
    Ok(dims.iter().map(|&d| d as u64).collect())
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

    fn push(&mut self, key: &str, item: Item) {
        self.bytes += match &item {
            Item::Tensor { bytes, .. } => bytes.bytes().len() as u64,
            Item::Blob(b) | Item::Value(b) => b.len() as u64,
        };
        self.items.push((key.to_owned(), item));
    }

    fn push_tensor<T: Element>(&mut self, key: &str, dtype: DType, shape: Vec<u64>, data: Vec<T>) {
        self.push(
            key,
            Item::Tensor {
                dtype,
                shape,
                bytes: Box::new(OwnedVec(data)),
            },
        );
    }

    /// Copies a tensor in (any layout; stored row-major).
    pub fn put_tensor<T, S, D>(&mut self, key: &str, array: &ArrayBase<S, D>) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        validate_key(key)?;
        let shape = shape_of(array.shape())?;
        let data: Vec<T> = match array.as_slice() {
            Some(s) => s.to_vec(),
            None => array.iter().copied().collect(),
        };
        self.push_tensor(key, T::DTYPE, shape, data);
        Ok(())
    }

    /// Moves an owned tensor in without copying it (a tensor that is not in
    /// standard layout is copied into row-major order).
    pub fn put_tensor_owned<T, D>(&mut self, key: &str, array: Array<T, D>) -> Result<()>
    where
        T: Element,
        D: Dimension,
    {
        validate_key(key)?;
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
        self.push_tensor(key, T::DTYPE, shape, data);
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
        validate_key(key)?;
        check_tensor_bytes(key, dtype, shape, &bytes)?;
        self.push_tensor(key, dtype, shape.to_vec(), bytes);
        Ok(())
    }

    /// Copies raw bytes in.
    pub fn put_blob(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_blob_owned(key, bytes.to_vec())
    }

    /// Moves raw bytes in.
    pub fn put_blob_owned(&mut self, key: &str, bytes: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        self.push(key, Item::Blob(bytes));
        Ok(())
    }

    /// Serializes a serde value (as JSON) now.
    pub fn put_value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        validate_key(key)?;
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::invalid(format!("{key:?} does not serialize: {e}")))?;
        self.push(key, Item::Value(json));
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

    /// Puts everything into `tx`. Later puts of the same key win, as they
    /// would on the transaction itself.
    pub(crate) fn apply(self, tx: &mut StepTx<'_>) -> Result<()> {
        for (key, item) in &self.items {
            match item {
                Item::Tensor {
                    dtype,
                    shape,
                    bytes,
                } => tx.put_checked_tensor(key, *dtype, shape, bytes.bytes())?,
                Item::Blob(b) => tx.put_blob(key, b)?,
                Item::Value(json) => tx.put_json(key, json)?,
            }
        }
        for (name, &v) in &self.metrics {
            tx.put_metric(name, v)?;
        }
        for table in self.replay {
            table.record(tx)?;
        }
        Ok(())
    }
}
