//! Exchange with other tools: safetensors files and NumPy `.npy` arrays.
//!
//! Both formats are written here from their specifications (no dependency
//! on the reference libraries), because library users want them without the
//! command-line tool. Names read from a foreign file are validated as keys
//! before they are used, and names written as paths are checked component by
//! component so that no entry can be written outside the chosen directory.

pub mod npy;
pub mod safetensors;

use crate::dtype::DType;

/// Bytes of a tensor of `dtype` and `shape`, or `None` on overflow.
pub(crate) fn tensor_bytes(dtype: DType, shape: &[u64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))?
        .checked_mul(dtype.size() as u64)
}
