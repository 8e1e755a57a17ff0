//! What an entry must satisfy before a step may name it, checked in one
//! place for every way of putting one.
//!
//! A [`Put`] is a user entry that passed its checks: a valid key and, for a
//! tensor, bytes that are exactly `shape` elements of `dtype` (and, for
//! `bool`, only 0 or 1). Its fields are private, so holding a `Put` is proof
//! of the checks. A [`StepTx`](crate::StepTx) builds one per put and writes
//! it at once; a [`PendingStep`](crate::trainer::PendingStep) builds the
//! same `Put` over bytes it owns, on the training thread, so a bad argument
//! fails the call that made it, and the background commit writes it without
//! checking again.

use std::borrow::Cow;

use ndarray::{ArrayBase, Data, Dimension};
use serde::Serialize;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::format::{Kind, MAX_RANK};
use crate::key::validate_key;

/// A checked user entry over bytes held as `B`.
pub(crate) struct Put<B> {
    key: String,
    kind: Kind,
    dtype: Option<DType>,
    shape: Vec<u64>,
    bytes: B,
}

impl<B: AsRef<[u8]>> Put<B> {
    /// A tensor of `dtype` and `shape` given as little-endian row-major
    /// bytes.
    pub(crate) fn tensor(key: &str, dtype: DType, shape: Vec<u64>, bytes: B) -> Result<Put<B>> {
        validate_key(key)?;
        check_tensor_bytes(key, dtype, &shape, bytes.as_ref())?;
        Ok(Put {
            key: key.to_owned(),
            kind: Kind::Tensor,
            dtype: Some(dtype),
            shape,
            bytes,
        })
    }

    /// Opaque bytes.
    pub(crate) fn blob(key: &str, bytes: B) -> Result<Put<B>> {
        Put::untyped(key, Kind::Blob, bytes)
    }

    /// A value already serialized as JSON.
    pub(crate) fn json(key: &str, json: B) -> Result<Put<B>> {
        Put::untyped(key, Kind::Value, json)
    }

    fn untyped(key: &str, kind: Kind, bytes: B) -> Result<Put<B>> {
        validate_key(key)?;
        Ok(Put {
            key: key.to_owned(),
            kind,
            dtype: None,
            shape: Vec::new(),
            bytes,
        })
    }

    /// The parts a transaction writes: key, kind, dtype, shape and payload.
    pub(crate) fn into_parts(self) -> (String, Kind, Option<DType>, Vec<u64>, B) {
        (self.key, self.kind, self.dtype, self.shape, self.bytes)
    }

    /// Payload bytes.
    pub(crate) fn len(&self) -> u64 {
        self.bytes.as_ref().len() as u64
    }
}

/// Typed elements read as their little-endian bytes (every supported
/// target is little-endian; `Element` types have no padding).
pub(crate) struct CastBytes<'a, T: Element>(Cow<'a, [T]>);

impl<T: Element> AsRef<[u8]> for CastBytes<'_, T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// The elements of `array` in row-major order: borrowed when the array is
/// already in standard layout, copied otherwise.
pub(crate) fn row_major<T, S, D>(array: &ArrayBase<S, D>) -> Cow<'_, [T]>
where
    T: Element,
    S: Data<Elem = T>,
    D: Dimension,
{
    match array.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(array.iter().copied().collect()),
    }
}

/// The elements of `array` in row-major order, as bytes.
pub(crate) fn row_major_bytes<T, S, D>(array: &ArrayBase<S, D>) -> CastBytes<'_, T>
where
    T: Element,
    S: Data<Elem = T>,
    D: Dimension,
{
    CastBytes(row_major(array))
}

/// A tensor put from an array: its dtype, checked shape and row-major
/// elements.
pub(crate) fn array_put<'a, T, S, D>(
    key: &str,
    array: &'a ArrayBase<S, D>,
) -> Result<Put<CastBytes<'a, T>>>
where
    T: Element,
    S: Data<Elem = T>,
    D: Dimension,
{
    let shape = shape_of(array.shape())?;
    Put::tensor(key, T::DTYPE, shape, row_major_bytes(array))
}

/// `value` serialized as JSON, or an error naming `key`.
pub(crate) fn to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::invalid(format!("{key:?} does not serialize: {e}")))
}

/// An array's shape as stored, checking the rank.
pub(crate) fn shape_of(dims: &[usize]) -> Result<Vec<u64>> {
    check_rank(dims.len())?;
    Ok(dims.iter().map(|&d| d as u64).collect())
}

/// Checks that `bytes` can be a tensor of `dtype` and `shape`: rank within
/// the limit, element count and byte length without overflow and equal to
/// the bytes given, every bool byte 0 or 1.
pub(crate) fn check_tensor_bytes(
    key: &str,
    dtype: DType,
    shape: &[u64],
    bytes: &[u8],
) -> Result<()> {
    check_rank(shape.len())?;
    let expected = element_count(shape)?
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| Error::invalid(format!("shape {shape:?} has too many bytes")))?;
    if expected != bytes.len() as u64 {
        return Err(Error::invalid(format!(
            "{key:?}: shape {shape:?} of {dtype} needs {expected} bytes, got {}",
            bytes.len()
        )));
    }
    if dtype == DType::Bool && bytes.iter().any(|&b| b > 1) {
        return Err(Error::invalid(format!(
            "{key:?}: bool tensor holds a byte other than 0 or 1"
        )));
    }
    Ok(())
}

/// Checks a tensor rank against the format's limit.
pub(crate) fn check_rank(rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(Error::invalid(format!(
            "rank {rank} over the limit {MAX_RANK}"
        )));
    }
    Ok(())
}

/// Number of elements of `shape`, checking for overflow.
pub(crate) fn element_count(shape: &[u64]) -> Result<u64> {
    shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::invalid(format!("shape {shape:?} has too many elements")))
    })
}
