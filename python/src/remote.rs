//! The database on S3-compatible object storage (`ckptdb.open_remote`,
//! `ckptdb.push`, `ckptdb.pull`), over `ckptdb::remote`.
//!
//! Options not given come from the standard `AWS_*` environment variables,
//! as in the Rust crate and the CLI; a keyword given here wins over its
//! variable. Every call releases the GIL for its transfers.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ckptdb::remote::{Remote, RemoteOptions};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{invalid, released, OrRaise};
use crate::NativeDb;

/// How to reach the store: the environment's `AWS_*` settings, with the
/// keywords a caller gave on top. The one list of those keywords: every
/// function here takes them as `**reach`.
#[derive(Default)]
struct Reach {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    allow_http: Option<bool>,
    timeout: Option<f64>,
}

impl Reach {
    /// Reads the keywords; an unknown one is a `TypeError`, as for any
    /// Python function, and `None` means "not given".
    fn from_kwargs(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Reach> {
        let mut reach = Reach::default();
        let Some(kwargs) = kwargs else {
            return Ok(reach);
        };
        for (key, value) in kwargs.iter() {
            let key: String = key.extract()?;
            let bad = |e: PyErr| PyTypeError::new_err(format!("option {key}: {e}"));
            match key.as_str() {
                "endpoint" => reach.endpoint = value.extract().map_err(bad)?,
                "region" => reach.region = value.extract().map_err(bad)?,
                "access_key_id" => reach.access_key_id = value.extract().map_err(bad)?,
                "secret_access_key" => reach.secret_access_key = value.extract().map_err(bad)?,
                "allow_http" => reach.allow_http = value.extract().map_err(bad)?,
                "timeout" => reach.timeout = value.extract().map_err(bad)?,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "unexpected keyword argument '{key}' (the options are endpoint, \
                         region, access_key_id, secret_access_key, allow_http and timeout)"
                    )))
                }
            }
        }
        Ok(reach)
    }

    fn options(&self) -> PyResult<RemoteOptions> {
        let mut o = RemoteOptions::from_env();
        if let Some(e) = &self.endpoint {
            o = o.endpoint(e.clone());
        }
        if let Some(r) = &self.region {
            o = o.region(r.clone());
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(k), Some(s)) => o = o.credentials(k.clone(), s.clone()),
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "give access_key_id and secret_access_key together, or neither",
                ))
            }
        }
        if let Some(h) = self.allow_http {
            o = o.allow_http(h);
        }
        if let Some(t) = self.timeout {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(format!("timeout must be > 0 seconds, got {t}")));
            }
            let t = Duration::from_secs_f64(t);
            // One budget for a request, the connection and the retries, so
            // an unreachable server fails within about `timeout`.
            o = o.request_timeout(t).connect_timeout(t).retries(3, t);
        }
        Ok(o)
    }

    fn connect(&self, py: Python<'_>, url: &str) -> PyResult<Remote> {
        let options = self.options()?;
        released(py, || Remote::open(url, options)).or_raise()
    }
}

/// Opens the newest generation at `url` read-only through `cache_dir`.
#[pyfunction]
#[pyo3(signature = (url, cache_dir, **reach))]
pub fn open_remote(
    py: Python<'_>,
    url: &str,
    cache_dir: PathBuf,
    reach: Option<&Bound<'_, PyDict>>,
) -> PyResult<NativeDb> {
    let remote = Reach::from_kwargs(reach)?.connect(py, url)?;
    let db = released(py, || remote.open_db(&cache_dir)).or_raise()?;
    Ok(NativeDb {
        db: RwLock::new(Some(Arc::new(db))),
    })
}

/// Uploads what the remote lacks of the database at `path`.
#[pyfunction]
#[pyo3(signature = (path, url, **reach))]
pub fn push<'py>(
    py: Python<'py>,
    path: PathBuf,
    url: &str,
    reach: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let remote = Reach::from_kwargs(reach)?.connect(py, url)?;
    let stats = released(py, || remote.push(&path)).or_raise()?;
    let out = PyDict::new(py);
    out.set_item("generation", stats.generation)?;
    out.set_item("bytes_uploaded", stats.bytes_uploaded)?;
    out.set_item("pieces_uploaded", stats.pieces_uploaded)?;
    out.set_item("objects_deleted", stats.objects_deleted)?;
    Ok(out)
}

/// Copies the newest generation at `url` into a new local database.
#[pyfunction]
#[pyo3(signature = (url, path, **reach))]
pub fn pull(
    py: Python<'_>,
    url: &str,
    path: PathBuf,
    reach: Option<&Bound<'_, PyDict>>,
) -> PyResult<u64> {
    let remote = Reach::from_kwargs(reach)?.connect(py, url)?;
    released(py, || remote.pull(&path)).or_raise()
}
