//! Numpy arrays over mapped payloads, without a copy.
//!
//! The only `unsafe` of the binding. An array made here points into a
//! segment map held by a [`MappedBytes`] object, which numpy keeps as the
//! array's base: the map lives as long as any array (or view of one) over
//! it, after the snapshot, the database and even the segment file are gone
//! (a map outlives the unlinking of its file).

use std::sync::Arc;

use ckptdb::Snapshot;
use numpy::ndarray::ArrayView1;
use numpy::PyArray1;
use pyo3::prelude::*;

use crate::NativeSnapshot;

/// Keeps a snapshot's segment maps alive for the arrays that point into
/// them. Python sees it as the `.base` of every array a snapshot returns.
#[pyclass(module = "ckptdb._native", frozen)]
pub struct MappedBytes {
    snap: Arc<Snapshot>,
}

#[pymethods]
impl MappedBytes {
    /// The step whose maps this object keeps alive.
    #[getter]
    fn step(&self) -> u64 {
        self.snap.step()
    }
}

/// A read-only `uint8` array over `bytes`, which must lie in the maps of
/// `owner`'s snapshot.
pub fn borrow_bytes<'py>(
    owner: &Bound<'py, NativeSnapshot>,
    bytes: &[u8],
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let py = owner.py();
    let keeper = Bound::new(
        py,
        MappedBytes {
            snap: owner.get().snap.clone(),
        },
    )?;
    let view = ArrayView1::from(bytes);
    // SAFETY: `bytes` borrows a map of `owner.snap`; the map is reference
    // counted by the snapshot, and `keeper` holds a clone of that snapshot
    // for as long as numpy keeps it as the array's base, so the pointer
    // stays valid for the array's whole life. The maps are never written
    // through (they are mapped read-only), and the array is made read-only
    // below before Python sees it; numpy refuses to make it writeable again
    // because its base exposes no writable buffer.
    let array = unsafe { PyArray1::borrow_from_array(&view, keeper.into_any()) };
    array.call_method1("setflags", (false,))?;
    Ok(array)
}
