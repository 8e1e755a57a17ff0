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
        E::Poisoned { .. } | E::Panicked { .. } => "PoisonedError",
        E::Catalog(_) => "CatalogError",
        E::Remote { .. } => "RemoteError",
        _ => "Error",
    }
}

/// The `kind` attribute of a `RemoteError`: what a caller may branch on.
fn remote_kind(kind: ckptdb::RemoteErrorKind) -> &'static str {
    use ckptdb::RemoteErrorKind as K;
    match kind {
        K::InvalidUrl => "invalid_url",
        K::BucketNotFound => "bucket_not_found",
        K::Credentials => "credentials",
        K::Unreachable => "unreachable",
        K::Conflict => "conflict",
        K::NotFound => "not_found",
        K::Corrupt => "corrupt",
        K::Diverged => "diverged",
        _ => "other",
    }
}

/// Attributes an exception carries besides its message.
#[derive(Default)]
struct Extra {
    errno: Option<i32>,
    kind: Option<&'static str>,
}

fn build(py: Python<'_>, class: &str, message: String, extra: Extra) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let cls = py.import("ckptdb._errors")?.getattr(class)?;
        let exc = cls.call1((message.clone(),))?;
        if let Some(n) = extra.errno {
            exc.setattr("errno", n)?;
        }
        if let Some(k) = extra.kind {
            exc.setattr("kind", k)?;
        }
        Ok(PyErr::from_value(exc))
    })();
    // Without the Python half (a broken install) the message still gets out.
    made.unwrap_or_else(|_| PyRuntimeError::new_err(message))
}

/// The exception for a Rust error.
pub fn raise(e: ckptdb::Error) -> PyErr {
    let extra = match &e {
        ckptdb::Error::Io { source, .. } => Extra {
            errno: source.raw_os_error(),
            kind: None,
        },
        ckptdb::Error::Remote { kind, .. } => Extra {
            errno: None,
            kind: Some(remote_kind(*kind)),
        },
        _ => Extra::default(),
    };
    Python::attach(|py| build(py, class_of(&e), e.to_string(), extra))
}

/// An `InvalidArgumentError` raised by the binding itself.
pub fn invalid(message: impl Into<String>) -> PyErr {
    raise(ckptdb::Error::InvalidArgument(message.into()))
}

/// The error of a call on a closed database.
pub fn closed() -> PyErr {
    Python::attach(|py| {
        build(
            py,
            "ClosedError",
            "the database is closed".into(),
            Extra::default(),
        )
    })
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

/// A Rust panic caught at the binding boundary, with its message.
pub struct Panicked(String);

impl Panicked {
    fn of(payload: Box<dyn std::any::Any + Send>) -> Panicked {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Panicked(message)
    }
}

impl From<Panicked> for PyErr {
    // pyo3 would raise its own `PanicException`, which derives from
    // `BaseException` and so escapes `except Exception` (and `except
    // ckptdb.Error`); a panic is a bug of ckptdb, reported as one of its
    // errors.
    fn from(p: Panicked) -> PyErr {
        Python::attach(|py| {
            build(
                py,
                "InternalError",
                format!(
                    "internal error in ckptdb (a bug; please report it): {}",
                    p.0
                ),
                Extra::default(),
            )
        })
    }
}

/// Runs `f`, turning a panic into [`Panicked`].
pub fn shielded<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(Panicked::of)
}

/// Runs `f` with the GIL released, turning a panic into [`Panicked`]: every
/// call into the engine that may block (I/O, fsync, locks) goes through
/// here.
pub fn released<R, F>(py: Python<'_>, f: F) -> Result<R, Panicked>
where
    F: Send + FnOnce() -> R,
    R: Send,
{
    py.detach(|| shielded(f))
}

impl<T> OrRaise<T> for Result<ckptdb::Result<T>, Panicked> {
    fn or_raise(self) -> PyResult<T> {
        self?.map_err(raise)
    }
}
