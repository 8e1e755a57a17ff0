//! Rust errors as Python exceptions.
//!
//! The exception classes live in `ckptdb/_errors.py`, because several of
//! them have two bases (`NotFoundError` is also a `KeyError`,
//! `DtypeMismatchError` a `TypeError`, …), which is plain in Python. Each
//! carries the Rust error's message unchanged.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The class name in `ckptdb._errors` for each variant.
fn class_of(e: &ckptdb::Error) -> &'static str {
    use ckptdb::Error as E;
    match e {
        E::Io { .. } => "IoError",
        E::Corruption { .. } => "CorruptionError",
        E::ChecksumMismatch { .. } => "ChecksumMismatchError",
        E::Misaligned { .. } => "MisalignedError",
        E::StepNotFound { .. } => "StepNotFoundError",
        E::KeyNotFound { .. } => "KeyNotFoundError",
        E::NotFound { .. } => "NotFoundError",
        E::DtypeMismatch { .. } => "DtypeMismatchError",
        E::ShapeMismatch { .. } => "ShapeMismatchError",
        E::Locked { .. } => "LockedError",
        E::IncompatibleVersion { .. } => "IncompatibleVersionError",
        E::NotADatabase { .. } => "NotADatabaseError",
        E::InvalidFile { .. } => "InvalidFileError",
        E::LostCommits { .. } => "LostCommitsError",
        E::InvalidArgument(_) => "InvalidArgumentError",
        E::Value { .. } => "ValueDecodeError",
        E::ReadOnly => "ReadOnlyError",
        E::Poisoned { .. } => "PoisonedError",
        E::Catalog(_) => "CatalogError",
        _ => "Error",
    }
}

fn build(py: Python<'_>, class: &str, message: String, errno: Option<i32>) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("ckptdb._errors")?.getattr(class)?;
        let exc = cls.call1((message.clone(),))?;
        if let Some(n) = errno {
            exc.setattr("errno", n)?;
        }
        Ok(PyErr::from_value(exc))
    })();
    // Without the Python half (a broken install) the message still gets out.
    made.unwrap_or_else(|_| PyRuntimeError::new_err(message))
}

/// The exception for a Rust error.
pub fn raise(e: ckptdb::Error) -> PyErr {
    let errno = match &e {
        ckptdb::Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    };
    Python::attach(|py| build(py, class_of(&e), e.to_string(), errno))
}

/// An `InvalidArgumentError` raised by the binding itself.
pub fn invalid(message: impl Into<String>) -> PyErr {
    raise(ckptdb::Error::InvalidArgument(message.into()))
}

/// The error of a call on a closed database.
pub fn closed() -> PyErr {
    Python::attach(|py| build(py, "ClosedError", "the database is closed".into(), None))
}

/// `.or_raise()` turns an engine result into a Python one.
pub trait OrRaise<T> {
    /// Maps the error to its exception class.
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for ckptdb::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(raise)
    }
}
