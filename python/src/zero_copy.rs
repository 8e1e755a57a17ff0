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

/// A caller's bytes lent to the transaction's writer thread for the length
/// of one call (see `NativeTx`): the put is written into the log straight
/// from the caller's buffer, with no copy.
pub struct LentBytes {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a `LentBytes` is only a pointer and a length; it is sent to one
// writer thread, which reads through it while the lending call waits (see
// `LentBytes::lend`).
unsafe impl Send for LentBytes {}

impl LentBytes {
    /// Lends `bytes` to `f`, which sends the `LentBytes` to the writer
    /// thread and must not return before that thread has replied that it
    /// is done with them (dropped the `LentBytes` or its slice).
    ///
    /// The caller holds `bytes` borrowed (from a numpy array held by a
    /// `PyReadonlyArray`, which keeps the array alive and registers the
    /// borrow with rust-numpy) for the whole of `f`, so the memory stays
    /// valid for as long as the writer thread can read it.
    pub fn lend<R>(bytes: &[u8], f: impl FnOnce(LentBytes) -> R) -> R {
        f(LentBytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        })
    }

    /// The lent bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: by the contract of `lend`, the lender's borrow of these
        // bytes outlasts every use of this `LentBytes`, and the slice
        // returned here borrows `self`, so it cannot outlive it either.
        // Nothing writes through the pointer; another Python thread that
        // writes to the array meanwhile races as it would with any numpy
        // operation that releases the GIL, and only changes which bytes
        // are stored, never memory safety of this read of plain bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
