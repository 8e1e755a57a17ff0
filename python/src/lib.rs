//! The native half of the `ckptdb` Python package.
//!
//! This module is deliberately thin: it moves bytes, shapes and dtype names
//! between Python and the Rust engine and leaves the numpy conversions
//! (`__array__`, `__dlpack__`, bfloat16 through `ml_dtypes`) to the pure
//! Python layer in `ckptdb/`, which is the public API. Every call that reads
//! or writes files runs with the GIL released.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread::ThreadId;

use ckptdb::replay::{Batch, Field, ReplayOptions, ReplayTable, ReplayView, SampleIndex, Schema};
use ckptdb::trainer::{CheckpointManager, CheckpointOptions, MetricMode, PendingStep};
use ckptdb::{DType, Db, DbOptions, Snapshot, StepTx};
use numpy::ndarray::Array2;
use numpy::{PyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::value::RawValue;

mod errors;
#[cfg(feature = "s3")]
mod remote;
mod zero_copy;

use errors::{closed, released, shielded, OrRaise, Panicked};
use zero_copy::LentBytes;

fn dtype_of(name: &str) -> PyResult<DType> {
    DType::from_name(name)
        .ok_or_else(|| PyTypeError::new_err(format!("ckptdb stores no dtype named {name:?}")))
}

fn mode_of(mode: &str) -> PyResult<MetricMode> {
    match mode {
        "max" => Ok(MetricMode::Max),
        "min" => Ok(MetricMode::Min),
        other => Err(PyValueError::new_err(format!(
            "mode must be \"max\" or \"min\", not {other:?}"
        ))),
    }
}

/// An open database. `close()` drops this handle's share of it; the files
/// and the writer lock are released once every snapshot, table and manager
/// made from it is gone too.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeDb {
    db: RwLock<Option<Arc<Db>>>,
}

impl NativeDb {
    fn get(&self) -> PyResult<Arc<Db>> {
        self.db
            .read()
            .map_err(|_| closed())?
            .as_ref()
            .cloned()
            .ok_or_else(closed)
    }
}

/// How a transaction picks the entries it starts from.
#[derive(Clone, Copy)]
enum Parent {
    Empty,
    Latest,
    Step(u64),
}

fn begin(db: &Db, step: u64, parent: Parent) -> ckptdb::Result<StepTx<'_>> {
    match parent {
        Parent::Empty => db.begin_step(step),
        Parent::Latest => db.begin_step_from_latest(step),
        Parent::Step(p) => db.begin_step_from(step, p),
    }
}

fn parent_of(parent: Option<&Bound<'_, PyAny>>) -> PyResult<Parent> {
    match parent {
        None => Ok(Parent::Empty),
        Some(p) if p.is_none() => Ok(Parent::Empty),
        Some(p) => {
            if let Ok(s) = p.extract::<String>() {
                if s == "latest" {
                    return Ok(Parent::Latest);
                }
                return Err(PyValueError::new_err(format!(
                    "parent must be \"latest\", a step number or None, not {s:?}"
                )));
            }
            Ok(Parent::Step(p.extract::<u64>()?))
        }
    }
}

#[pymethods]
impl NativeDb {
    #[getter]
    fn path(&self) -> PyResult<String> {
        Ok(self.get()?.path().display().to_string())
    }

    #[getter]
    fn read_only(&self) -> PyResult<bool> {
        Ok(self.get()?.is_read_only())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.db.read().map(|d| d.is_none()).unwrap_or(true)
    }

    fn close(&self) {
        if let Ok(mut d) = self.db.write() {
            d.take();
        }
    }

    fn steps(&self) -> PyResult<Vec<u64>> {
        Ok(self.get()?.steps())
    }

    fn last_committed_step(&self) -> PyResult<Option<u64>> {
        Ok(self.get()?.last_committed_step())
    }

    fn latest(&self, py: Python<'_>) -> PyResult<Option<NativeSnapshot>> {
        let db = self.get()?;
        let snap = released(py, || db.latest()).or_raise()?;
        Ok(snap.map(NativeSnapshot::new))
    }

    fn snapshot(&self, py: Python<'_>, step: u64) -> PyResult<NativeSnapshot> {
        let db = self.get()?;
        let snap = released(py, || db.snapshot(step)).or_raise()?;
        Ok(NativeSnapshot::new(snap))
    }

    /// The live step with the best value of `metric`, or None.
    fn best(&self, metric: &str, mode: &str) -> PyResult<Option<u64>> {
        let mode = mode_of(mode)?;
        let infos = self.get()?.step_infos();
        let candidates: Vec<ckptdb::trainer::policy::Candidate<'_>> = infos
            .iter()
            .map(|i| ckptdb::trainer::policy::Candidate {
                step: i.step,
                metrics: &i.metrics,
            })
            .collect();
        Ok(
            ckptdb::trainer::policy::best_steps(&candidates, metric, mode, 1)
                .first()
                .copied(),
        )
    }

    fn tag(&self, py: Python<'_>, step: u64, name: &str) -> PyResult<()> {
        let db = self.get()?;
        no_open_tx(&db, "tagging")?;
        released(py, || db.tag(step, name)).or_raise()
    }

    fn untag(&self, py: Python<'_>, name: &str) -> PyResult<u64> {
        let db = self.get()?;
        no_open_tx(&db, "untagging")?;
        released(py, || db.untag(name)).or_raise()
    }

    fn tags(&self) -> PyResult<BTreeMap<String, u64>> {
        Ok(self.get()?.tags())
    }

    fn tagged_step(&self, name: &str) -> PyResult<u64> {
        self.get()?.tagged_step(name).or_raise()
    }

    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        let db = self.get()?;
        released(py, || db.refresh()).or_raise()
    }

    fn history(&self, py: Python<'_>, key: &str) -> PyResult<Vec<u64>> {
        let db = self.get()?;
        released(py, || db.history(key)).or_raise()
    }

    /// Checks every live entry; returns (steps, entries, bytes, problems)
    /// with each problem as (key, steps, message).
    #[allow(clippy::type_complexity)]
    fn verify(
        &self,
        py: Python<'_>,
    ) -> PyResult<(usize, u64, u64, Vec<(String, Vec<u64>, String)>)> {
        let db = self.get()?;
        let report = released(py, || db.verify_all(&mut |_, _| {})).or_raise()?;
        let problems = report
            .problems
            .into_iter()
            .map(|p| (p.key, p.steps, p.error.to_string()))
            .collect();
        Ok((report.steps, report.entries, report.bytes, problems))
    }

    /// Reclaims space; returns (bytes_before, bytes_after, segments_deleted).
    fn compact(&self, py: Python<'_>) -> PyResult<(u64, u64, usize)> {
        let db = self.get()?;
        no_open_tx(&db, "compaction")?;
        let s = released(py, || db.compact()).or_raise()?;
        Ok((s.bytes_before, s.bytes_after, s.segments_deleted))
    }

    fn disk_usage(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.get()?;
        released(py, || db.disk_usage()).or_raise()
    }

    #[pyo3(signature = (step, parent=None))]
    fn begin_step(
        &self,
        py: Python<'_>,
        step: u64,
        parent: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<NativeTx> {
        let db = self.get()?;
        if db.is_read_only() {
            return Err(ckptdb::Error::ReadOnly).or_raise();
        }
        no_open_tx(&db, "beginning another step")?;
        let parent = parent_of(parent)?;
        NativeTx::begin(py, db, step, parent)
    }

    // The arguments are the Python keyword arguments.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (name, schema, capacity, page_size, alpha=None, at=None))]
    fn replay_table(
        &self,
        py: Python<'_>,
        name: &str,
        schema: &str,
        capacity: u64,
        page_size: u64,
        alpha: Option<f64>,
        at: Option<u64>,
    ) -> PyResult<NativeTable> {
        let db = self.get()?;
        let schema = shielded(|| Schema::parse(schema)).or_raise()?;
        let mut options = ReplayOptions::new(capacity, page_size);
        if let Some(a) = alpha {
            options = options.prioritized(a);
        }
        let cell = released(py, || {
            OwnedTable::try_new(db, |db| match at {
                Some(step) => db.replay_table_at(name, &schema, options, step),
                None => db.replay_table(name, &schema, options),
            })
        })
        .or_raise()?;
        Ok(NativeTable {
            table: Arc::new(Mutex::new(cell)),
            rng: Mutex::new(StdRng::seed_from_u64(rand::random())),
        })
    }
}

#[pyfunction]
#[pyo3(signature = (path, read_only=false, segment_size=None))]
fn open(
    py: Python<'_>,
    path: std::path::PathBuf,
    read_only: bool,
    segment_size: Option<u64>,
) -> PyResult<NativeDb> {
    let db = released(py, || match (read_only, segment_size) {
        (true, _) => Db::open_read_only(&path),
        (false, None) => Db::open(&path),
        (false, Some(n)) => Db::open_with(&path, DbOptions::default().segment_size(n)),
    })
    .or_raise()?;
    Ok(NativeDb {
        db: RwLock::new(Some(Arc::new(db))),
    })
}

/// Deletes the database at `path` (nothing if there is none); refuses a
/// path that is not a database and a database another handle holds.
#[pyfunction]
fn destroy(py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
    released(py, || Db::destroy(&path)).or_raise()
}

/// Panics inside the binding's panic guard, as an engine bug would: the
/// test of the guard calls it (`_native._panic_for_tests`); not public API.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, released_gil: bool) -> PyResult<()> {
    fn boom() -> ckptdb::Result<()> {
        panic!("deliberate panic for the test of the panic guard")
    }
    if released_gil {
        released(py, boom).or_raise()
    } else {
        shielded(boom).or_raise()
    }
}

/// Whether `key` is a valid entry key; raises the engine's error if not.
#[pyfunction]
fn validate_key(key: &str) -> PyResult<()> {
    ckptdb::validate_key(key).or_raise()
}

/// What a transaction's writer thread is asked to do, in call order.
enum Cmd {
    Tensor {
        key: String,
        dtype: DType,
        shape: Vec<u64>,
        bytes: LentBytes,
    },
    Blob {
        key: String,
        bytes: LentBytes,
    },
    Value {
        key: String,
        json: Box<RawValue>,
    },
    Metric {
        name: String,
        value: f64,
    },
    Remove(String),
    Replay(Arc<Mutex<OwnedTable>>),
    Commit,
    Abort,
}

/// The writer thread's answer to one command.
type Reply = Result<ckptdb::Result<()>, Panicked>;

type Commands = mpsc::Sender<(Cmd, mpsc::SyncSender<Reply>)>;

/// The transactions open now, as (database, thread that began it, step):
/// a call in that thread that needs the database's writer would wait for
/// the transaction forever, so it fails instead (`no_open_tx`).
static OPEN_TXS: Mutex<Vec<(usize, ThreadId, u64)>> = Mutex::new(Vec::new());

fn db_id(db: &Arc<Db>) -> usize {
    Arc::as_ptr(db) as usize
}

/// Fails if this thread holds an open transaction on `db`: `what` needs
/// the writer that transaction holds until it commits or aborts.
fn no_open_tx(db: &Arc<Db>, what: &str) -> PyResult<()> {
    let me = std::thread::current().id();
    let open = lock(&OPEN_TXS);
    match open.iter().find(|(d, t, _)| *d == db_id(db) && *t == me) {
        Some((_, _, step)) => Err(errors::invalid(format!(
            "{what} needs the database's writer, which the open transaction of step \
             {step} in this thread holds; commit or abort it first"
        ))),
        None => Ok(()),
    }
}

/// A step being written. The Rust transaction holds the database's writer
/// lock, which must stay on one thread, so it lives on a thread of its own
/// for as long as the step is open, and every call hands it one command
/// and waits (with the GIL released) for it to be done. A tensor is
/// written into the log during its `put_tensor` call, straight from the
/// caller's buffer: no copy, and the step holds exactly the bytes the
/// array had when it was put.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeTx {
    step: u64,
    db: usize,
    thread: ThreadId,
    /// The writer thread's queue; dropped by commit or abort (and by the
    /// drop of an abandoned transaction, which the thread rolls back).
    commands: Mutex<Option<Commands>>,
}

impl Drop for NativeTx {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl NativeTx {
    /// Starts the writer thread and the step on it; returns once the step
    /// has begun (or failed to).
    fn begin(py: Python<'_>, db: Arc<Db>, step: u64, parent: Parent) -> PyResult<NativeTx> {
        let (commands, queue) = mpsc::channel::<(Cmd, mpsc::SyncSender<Reply>)>();
        let (ready, begun) = mpsc::sync_channel::<Reply>(1);
        let id = db_id(&db);
        std::thread::Builder::new()
            .name(format!("ckptdb step {step}"))
            .spawn(move || write_step(db, step, parent, ready, queue))
            .map_err(|e| errors::invalid(format!("cannot start the writer thread: {e}")))?;
        settle(released(py, move || {
            begun.recv().unwrap_or_else(|_| writer_gone())
        }))?;
        let thread = std::thread::current().id();
        lock(&OPEN_TXS).push((id, thread, step));
        Ok(NativeTx {
            step,
            db: id,
            thread,
            commands: Mutex::new(Some(commands)),
        })
    }

    /// Runs `cmd` on the writer thread and waits for it.
    fn call(&self, py: Python<'_>, cmd: Cmd) -> PyResult<()> {
        let commands = lock(&self.commands).clone().ok_or_else(finished)?;
        Self::send(py, &commands, cmd)
    }

    fn send(py: Python<'_>, commands: &Commands, cmd: Cmd) -> PyResult<()> {
        let (reply, answer) = mpsc::sync_channel(1);
        // Returns only once the thread has replied or is gone: either way
        // it is done with any bytes `cmd` lends it.
        settle(released(py, move || match commands.send((cmd, reply)) {
            Ok(()) => answer.recv().unwrap_or_else(|_| writer_gone()),
            Err(_) => writer_gone(),
        }))
    }

    /// Takes the queue (no call can follow) and sends it `cmd`.
    fn finish(&self, py: Python<'_>, cmd: Cmd) -> PyResult<()> {
        let commands = lock(&self.commands).take().ok_or_else(finished)?;
        self.unregister();
        Self::send(py, &commands, cmd)
    }

    fn unregister(&self) {
        let mut open = lock(&OPEN_TXS);
        if let Some(i) = open
            .iter()
            .position(|&(d, t, s)| d == self.db && t == self.thread && s == self.step)
        {
            open.swap_remove(i);
        }
    }
}

/// The error of a call whose writer thread has stopped.
fn errors_gone() -> ckptdb::Error {
    ckptdb::Error::InvalidArgument(
        "the transaction is no longer open: it was aborted after an internal error".into(),
    )
}

fn writer_gone() -> Reply {
    Ok(Err(errors_gone()))
}

/// The Python result of a writer thread's reply.
fn settle(reply: Result<Reply, Panicked>) -> PyResult<()> {
    reply??.or_raise()
}

/// The writer thread of one step: begins it, runs each command in order,
/// and ends with the commit, the abort, or (when the transaction object is
/// dropped unfinished) the rollback of the dropped Rust transaction.
fn write_step(
    db: Arc<Db>,
    step: u64,
    parent: Parent,
    ready: mpsc::SyncSender<Reply>,
    queue: mpsc::Receiver<(Cmd, mpsc::SyncSender<Reply>)>,
) {
    let last = run_step(&db, step, parent, ready, queue);
    // The last reply goes out only once this thread holds no share of the
    // database: a caller that closes its handle right after a commit can
    // reopen the database at once.
    drop(db);
    if let Some((to, reply)) = last {
        let _ = to.send(reply);
    }
}

/// The body of [`write_step`]; returns the reply that ends the step, to be
/// sent after the transaction and the database are dropped.
fn run_step(
    db: &Db,
    step: u64,
    parent: Parent,
    ready: mpsc::SyncSender<Reply>,
    queue: mpsc::Receiver<(Cmd, mpsc::SyncSender<Reply>)>,
) -> Option<(mpsc::SyncSender<Reply>, Reply)> {
    let mut tx = match shielded(|| begin(db, step, parent)) {
        Ok(Ok(tx)) => tx,
        Ok(Err(e)) => return Some((ready, Ok(Err(e)))),
        Err(p) => return Some((ready, Err(p))),
    };
    if ready.send(Ok(Ok(()))).is_err() {
        return None;
    }
    while let Ok((cmd, reply)) = queue.recv() {
        match cmd {
            Cmd::Commit => return Some((reply, shielded(move || tx.commit().map(drop)))),
            Cmd::Abort => return Some((reply, shielded(move || tx.abort()))),
            cmd => {
                let answer = shielded(|| apply(&mut tx, cmd));
                if answer.is_err() {
                    // The transaction's state is unknown after a panic:
                    // drop it (a rollback) rather than commit it.
                    return Some((reply, answer));
                }
                let _ = reply.send(answer);
            }
        }
    }
    None
}

fn finished() -> PyErr {
    errors::invalid("the transaction has already been committed or aborted")
}

fn check_key(key: &str) -> PyResult<()> {
    ckptdb::validate_key(key).or_raise()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a table was locked cannot leave it half-updated in a
    // way the engine does not already guard against (each push checks its
    // input before changing anything), so a poisoned lock is taken over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one command (not commit or abort) on the open transaction; lent
/// bytes are dropped before this returns.
fn apply(tx: &mut StepTx<'_>, cmd: Cmd) -> ckptdb::Result<()> {
    match cmd {
        Cmd::Tensor {
            key,
            dtype,
            shape,
            bytes,
        } => tx.put_tensor_raw(&key, dtype, &shape, bytes.as_slice()),
        Cmd::Blob { key, bytes } => tx.put_blob(&key, bytes.as_slice()),
        Cmd::Value { key, json } => tx.put_value(&key, &json),
        Cmd::Metric { name, value } => tx.put_metric(&name, value),
        Cmd::Remove(key) => {
            tx.remove(&key);
            Ok(())
        }
        Cmd::Replay(table) => lock(&table).with_dependent_mut(|_, t| tx.put_replay(t)),
        Cmd::Commit | Cmd::Abort => unreachable!("handled by write_step"),
    }
}

#[pymethods]
impl NativeTx {
    #[getter]
    fn step(&self) -> u64 {
        self.step
    }

    /// Writes the tensor into the log now, from `data`'s buffer.
    fn put_tensor(
        &self,
        py: Python<'_>,
        key: String,
        dtype: &str,
        shape: Vec<u64>,
        data: PyReadonlyArray1<'_, u8>,
    ) -> PyResult<()> {
        check_key(&key)?;
        let dtype = dtype_of(dtype)?;
        let bytes = data.as_slice()?;
        LentBytes::lend(bytes, |bytes| {
            self.call(
                py,
                Cmd::Tensor {
                    key,
                    dtype,
                    shape,
                    bytes,
                },
            )
        })
    }

    fn put_blob(&self, py: Python<'_>, key: String, data: &[u8]) -> PyResult<()> {
        check_key(&key)?;
        LentBytes::lend(data, |bytes| self.call(py, Cmd::Blob { key, bytes }))
    }

    fn put_json(&self, py: Python<'_>, key: String, json: String) -> PyResult<()> {
        check_key(&key)?;
        let json = RawValue::from_string(json)
            .map_err(|e| errors::invalid(format!("{key:?} is not JSON: {e}")))?;
        self.call(py, Cmd::Value { key, json })
    }

    fn put_metric(&self, py: Python<'_>, name: String, value: f64) -> PyResult<()> {
        self.call(py, Cmd::Metric { name, value })
    }

    fn remove(&self, py: Python<'_>, key: String) -> PyResult<()> {
        self.call(py, Cmd::Remove(key))
    }

    fn put_replay(&self, py: Python<'_>, table: &NativeTable) -> PyResult<()> {
        self.call(py, Cmd::Replay(table.table.clone()))
    }

    /// Commits the step (durable when this returns); returns its number.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        self.finish(py, Cmd::Commit)?;
        Ok(self.step)
    }

    /// Rolls the step back: nothing of it stays in the log.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        if self.finished() {
            // Aborting a finished transaction changes nothing.
            return Ok(());
        }
        self.finish(py, Cmd::Abort)
    }

    #[getter]
    fn finished(&self) -> bool {
        lock(&self.commands).is_none()
    }
}

/// One committed step. Arrays read from it borrow its maps.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeSnapshot {
    snap: Arc<Snapshot>,
}

impl NativeSnapshot {
    fn new(snap: Snapshot) -> NativeSnapshot {
        NativeSnapshot {
            snap: Arc::new(snap),
        }
    }
}

#[pymethods]
impl NativeSnapshot {
    #[getter]
    fn step(&self) -> u64 {
        self.snap.step()
    }

    /// Commit time, in seconds since the epoch.
    #[getter]
    fn time(&self) -> f64 {
        self.snap
            .time()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    #[getter]
    fn metrics(&self) -> BTreeMap<String, f64> {
        self.snap.metrics().clone()
    }

    #[getter]
    fn tags(&self) -> Vec<String> {
        self.snap.tags().to_vec()
    }

    #[getter]
    fn logical_bytes(&self) -> u64 {
        self.snap.logical_bytes()
    }

    #[getter]
    fn new_bytes(&self) -> u64 {
        self.snap.new_bytes()
    }

    #[pyo3(signature = (prefix=""))]
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.snap
            .keys_with_prefix(prefix)
            .map(str::to_owned)
            .collect()
    }

    fn contains(&self, key: &str) -> bool {
        self.snap.contains(key)
    }

    fn len(&self) -> usize {
        self.snap.len()
    }

    /// (kind, dtype or None, shape) of the entry under `key`.
    fn entry(&self, key: &str) -> PyResult<(String, Option<String>, Vec<u64>)> {
        let e = shielded(|| self.snap.entry(key)).or_raise()?;
        Ok((
            e.kind.name().to_owned(),
            e.dtype.map(|d| d.name().to_owned()),
            e.shape.clone(),
        ))
    }

    /// The tensor under `key` as (u8 array over the mapped payload, dtype
    /// name, shape). With `verify` the payload's crc32 is checked first (once
    /// per process); without it only bounds and the entry header are, so
    /// the call costs the same for any size.
    #[pyo3(signature = (key, verify=true))]
    fn tensor<'py>(
        slf: &Bound<'py, Self>,
        key: &str,
        verify: bool,
    ) -> PyResult<(Bound<'py, PyArray1<u8>>, String, Vec<u64>)> {
        let py = slf.py();
        let snap = &slf.get().snap;
        let t = shielded(|| snap.tensor(key)).or_raise()?;
        let bytes = if verify {
            released(py, || t.bytes()).or_raise()?
        } else {
            shielded(|| t.bytes_unverified()).or_raise()?
        };
        let array = zero_copy::borrow_bytes(slf, bytes)?;
        Ok((array, t.dtype().name().to_owned(), t.shape().to_vec()))
    }

    fn blob<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = released(py, || self.snap.blob(key)).or_raise()?;
        Ok(PyBytes::new(py, bytes))
    }

    /// The JSON text of the value under `key`.
    fn json(&self, key: &str) -> PyResult<String> {
        let raw: Box<RawValue> = shielded(|| self.snap.value(key)).or_raise()?;
        Ok(raw.get().to_owned())
    }

    fn replay_tables(&self) -> Vec<String> {
        self.snap.replay_tables()
    }

    fn replay(&self, py: Python<'_>, name: &str) -> PyResult<NativeView> {
        let view = released(py, || self.snap.replay(name)).or_raise()?;
        Ok(NativeView {
            view,
            rng: Mutex::new(StdRng::seed_from_u64(rand::random())),
        })
    }

    /// Checks every entry of the step; returns (key, message) per failure.
    fn verify(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        Ok(released(py, || self.snap.verify())?
            .into_iter()
            .map(|(e, err)| (e.key, err.to_string()))
            .collect())
    }
}

self_cell::self_cell!(
    /// A writable replay table together with the database it borrows, so
    /// that Python can hold it as one object.
    struct OwnedTable {
        owner: Arc<Db>,
        #[not_covariant]
        dependent: ReplayTable,
    }
);

/// A sampled batch: every field whose dtype NumPy knows as a typed array
/// of shape `[rows, field shape…]`, built here so that no Python code runs
/// per column; the rest (bfloat16, which needs `ml_dtypes`) as
/// (name, u8 array, dtype, shape) for the Python side to view; the indices
/// as an (n, 2) array of (slot, serial); and the weights.
type SampleOut<'py> = (
    Bound<'py, PyDict>,
    Vec<(String, Bound<'py, PyArray1<u8>>, String, Vec<usize>)>,
    Bound<'py, PyArray2<u64>>,
    Option<Bound<'py, PyArray1<f64>>>,
);

fn typed_column<'py, T: ckptdb::Element + numpy::Element>(
    py: Python<'py>,
    batch: &Batch,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let view = batch.view::<T>(name).or_raise()?;
    Ok(PyArray::from_array(py, &view).into_any())
}

fn sample_out<'py>(py: Python<'py>, batch: &Batch) -> PyResult<SampleOut<'py>> {
    let columns = PyDict::new(py);
    let mut rest = Vec::new();
    for name in batch.fields() {
        let c = batch.column(name).or_raise()?;
        let array = match c.dtype() {
            DType::Bool => typed_column::<bool>(py, batch, name)?,
            DType::U8 => typed_column::<u8>(py, batch, name)?,
            DType::I8 => typed_column::<i8>(py, batch, name)?,
            DType::U16 => typed_column::<u16>(py, batch, name)?,
            DType::I16 => typed_column::<i16>(py, batch, name)?,
            DType::U32 => typed_column::<u32>(py, batch, name)?,
            DType::I32 => typed_column::<i32>(py, batch, name)?,
            DType::U64 => typed_column::<u64>(py, batch, name)?,
            DType::I64 => typed_column::<i64>(py, batch, name)?,
            DType::F16 => typed_column::<ckptdb::f16>(py, batch, name)?,
            DType::F32 => typed_column::<f32>(py, batch, name)?,
            DType::F64 => typed_column::<f64>(py, batch, name)?,
            _ => {
                rest.push((
                    name.to_owned(),
                    PyArray1::from_slice(py, c.bytes()),
                    c.dtype().name().to_owned(),
                    c.shape().to_vec(),
                ));
                continue;
            }
        };
        columns.set_item(name, array)?;
    }
    let idx = Array2::from_shape_fn((batch.len(), 2), |(r, c)| {
        let i = batch.indices()[r];
        if c == 0 {
            i.slot
        } else {
            i.serial
        }
    });
    let weights = batch.weights().map(|w| PyArray1::from_slice(py, w));
    Ok((columns, rest, PyArray2::from_owned_array(py, idx), weights))
}

enum How {
    Uniform,
    Distinct,
    Prioritized(f64),
}

fn how_of(distinct: bool, beta: Option<f64>) -> PyResult<How> {
    match (distinct, beta) {
        (false, None) => Ok(How::Uniform),
        (true, None) => Ok(How::Distinct),
        (false, Some(b)) => Ok(How::Prioritized(b)),
        (true, Some(_)) => Err(errors::invalid(
            "distinct sampling is uniform; it takes no beta",
        )),
    }
}

fn rng_for(seed: Option<u64>, own: &Mutex<StdRng>) -> StdRng {
    match seed {
        Some(s) => StdRng::seed_from_u64(s),
        None => {
            let mut g = lock(own);
            StdRng::seed_from_u64(rand::RngExt::random(&mut *g))
        }
    }
}

macro_rules! sample_with {
    ($t:expr, $rng:expr, $n:expr, $how:expr) => {
        match $how {
            How::Uniform => $t.sample_uniform($rng, $n),
            How::Distinct => $t.sample_uniform_distinct($rng, $n),
            How::Prioritized(beta) => $t.sample_prioritized($rng, $n, beta),
        }
    };
}

/// A replay table open for pushing.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeTable {
    table: Arc<Mutex<OwnedTable>>,
    rng: Mutex<StdRng>,
}

/// Reads the columns a Python caller passed: (name, dtype, shape, bytes).
type Columns<'py> = Vec<(String, String, Vec<usize>, PyReadonlyArray1<'py, u8>)>;

#[pymethods]
impl NativeTable {
    fn __len__(&self) -> usize {
        lock(&self.table).with_dependent(|_, t| t.len()) as usize
    }

    #[getter]
    fn name(&self) -> String {
        lock(&self.table).with_dependent(|_, t| t.name().to_owned())
    }

    #[getter]
    fn schema(&self) -> String {
        lock(&self.table).with_dependent(|_, t| t.schema().to_string())
    }

    #[getter]
    fn capacity(&self) -> u64 {
        lock(&self.table).with_dependent(|_, t| t.capacity())
    }

    #[getter]
    fn total_inserted(&self) -> u64 {
        lock(&self.table).with_dependent(|_, t| t.total_inserted())
    }

    /// Pushes columns whose first dimension is the number of rows (or, with
    /// `batched=False`, one row).
    fn push(&self, py: Python<'_>, columns: Columns<'_>, batched: bool) -> PyResult<()> {
        let mut parts = Vec::with_capacity(columns.len());
        let mut dtypes = Vec::with_capacity(columns.len());
        for (_, dtype, _, data) in &columns {
            dtypes.push(dtype_of(dtype)?);
            parts.push(data.as_slice()?);
        }
        let fields: Vec<Field<'_>> = columns
            .iter()
            .zip(&dtypes)
            .zip(&parts)
            .map(|(((name, _, shape, _), &dtype), bytes)| Field::raw(name, dtype, shape, bytes))
            .collect();
        let table = &self.table;
        released(py, || {
            lock(table).with_dependent_mut(|_, t| {
                if batched {
                    t.push_batch(&fields)
                } else {
                    t.push(&fields)
                }
            })
        })
        .or_raise()
    }

    #[pyo3(signature = (n, seed=None, distinct=false, beta=None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        seed: Option<u64>,
        distinct: bool,
        beta: Option<f64>,
    ) -> PyResult<SampleOut<'py>> {
        let how = how_of(distinct, beta)?;
        let mut rng = rng_for(seed, &self.rng);
        let table = &self.table;
        let batch = released(py, || {
            lock(table).with_dependent(|_, t| sample_with!(t, &mut rng, n, how))
        })
        .or_raise()?;
        sample_out(py, &batch)
    }

    /// Sets priorities of sampled rows; `indices` is the (n, 2) array of
    /// (slot, serial) that `sample` returned, flattened.
    fn update_priorities(
        &self,
        py: Python<'_>,
        indices: Vec<u64>,
        priorities: Vec<f64>,
    ) -> PyResult<usize> {
        let idx: Vec<SampleIndex> = indices
            .chunks_exact(2)
            .map(|c| SampleIndex {
                slot: c[0],
                serial: c[1],
            })
            .collect();
        let table = &self.table;
        released(py, || {
            lock(table).with_dependent_mut(|_, t| t.update_priorities(&idx, &priorities))
        })
        .or_raise()
    }

    /// Seconds each of `rounds` uniform samples of `n` rows takes inside
    /// Rust, without building Python objects: the baseline the binding's
    /// own overhead is measured against (`benches/python`).
    #[pyo3(signature = (n, rounds, seed=0))]
    fn time_sample_in_rust(
        &self,
        py: Python<'_>,
        n: usize,
        rounds: usize,
        seed: u64,
    ) -> PyResult<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let table = &self.table;
        released(py, || {
            let t = lock(table);
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let start = std::time::Instant::now();
                let batch = t.with_dependent(|_, t| t.sample_uniform(&mut rng, n))?;
                std::hint::black_box(&batch);
                times.push(start.elapsed().as_secs_f64());
            }
            Ok::<_, ckptdb::Error>(times)
        })
        .or_raise()
    }

    /// Row `i` (0 = oldest) as packed bytes in schema order.
    fn row<'py>(&self, py: Python<'py>, i: u64) -> PyResult<Bound<'py, PyBytes>> {
        let table = lock(&self.table);
        table.with_dependent(|_, t| {
            let row = t.get(i).or_raise()?;
            Ok(PyBytes::new(py, row.bytes()))
        })
    }
}

/// A replay table as a step recorded it, read-only.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeView {
    view: ReplayView,
    rng: Mutex<StdRng>,
}

#[pymethods]
impl NativeView {
    fn __len__(&self) -> usize {
        self.view.len() as usize
    }

    #[getter]
    fn name(&self) -> String {
        self.view.name().to_owned()
    }

    #[getter]
    fn schema(&self) -> String {
        self.view.schema().to_string()
    }

    #[getter]
    fn capacity(&self) -> u64 {
        self.view.capacity()
    }

    #[getter]
    fn total_inserted(&self) -> u64 {
        self.view.total_inserted()
    }

    #[pyo3(signature = (n, seed=None, distinct=false, beta=None))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        seed: Option<u64>,
        distinct: bool,
        beta: Option<f64>,
    ) -> PyResult<SampleOut<'py>> {
        let how = how_of(distinct, beta)?;
        let mut rng = rng_for(seed, &self.rng);
        let view = &self.view;
        let batch = released(py, || sample_with!(view, &mut rng, n, how)).or_raise()?;
        sample_out(py, &batch)
    }

    fn row<'py>(&self, py: Python<'py>, i: u64) -> PyResult<Bound<'py, PyBytes>> {
        let row = self.view.get(i).or_raise()?;
        Ok(PyBytes::new(py, row.bytes()))
    }
}

/// The trainer layer: schedule, retention, asynchronous commits.
#[pyclass(module = "ckptdb._native", frozen)]
struct NativeManager {
    manager: CheckpointManager,
    db: Arc<Db>,
}

/// Everything a save writes, read from Python: tensors as (key, dtype,
/// shape, bytes), values as (key, json), metrics, replay tables.
struct SaveArgs<'py> {
    tensors: Columns<'py>,
    values: Vec<(String, String)>,
    metrics: Vec<(String, f64)>,
    tables: Vec<Arc<Mutex<OwnedTable>>>,
}

fn save_args<'py>(
    tensors: Columns<'py>,
    values: Vec<(String, String)>,
    metrics: Vec<(String, f64)>,
    tables: &Bound<'py, PyList>,
) -> PyResult<SaveArgs<'py>> {
    let mut owned = Vec::new();
    for t in tables.iter() {
        owned.push(t.cast::<NativeTable>()?.get().table.clone());
    }
    Ok(SaveArgs {
        tensors,
        values,
        metrics,
        tables: owned,
    })
}

#[pymethods]
impl NativeManager {
    #[new]
    #[pyo3(signature = (db, save_every_steps=None, keep_last=None, keep_best=None, keep_every=None, reclaim=true))]
    fn new(
        db: &NativeDb,
        save_every_steps: Option<u64>,
        keep_last: Option<usize>,
        keep_best: Option<(String, usize, String)>,
        keep_every: Option<u64>,
        reclaim: bool,
    ) -> PyResult<NativeManager> {
        let db = db.get()?;
        if db.is_read_only() {
            return Err(ckptdb::Error::ReadOnly).or_raise();
        }
        let mut options = CheckpointOptions::new();
        if let Some(n) = save_every_steps {
            options = options.save_every_steps(n);
        }
        if let Some(n) = keep_last {
            options = options.keep_last(n);
        }
        if let Some(k) = keep_every {
            options = options.keep_every(k);
        }
        if let Some((metric, k, mode)) = keep_best {
            options = options.keep_best(&metric, k, mode_of(&mode)?);
        }
        if !reclaim {
            options = options.reclaim_threshold(None);
        }
        Ok(NativeManager {
            manager: CheckpointManager::new(db.clone(), options),
            db,
        })
    }

    fn should_save(&self, step: u64) -> bool {
        self.manager.should_save(step)
    }

    fn save(
        &self,
        py: Python<'_>,
        step: u64,
        tensors: Columns<'_>,
        values: Vec<(String, String)>,
        metrics: Vec<(String, f64)>,
        tables: &Bound<'_, PyList>,
    ) -> PyResult<u64> {
        no_open_tx(&self.db, "a save")?;
        let args = save_args(tensors, values, metrics, tables)?;
        let mut parts = Vec::with_capacity(args.tensors.len());
        for (key, dtype, shape, data) in &args.tensors {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            parts.push((key.as_str(), dtype_of(dtype)?, shape, data.as_slice()?));
        }
        let mut jsons = Vec::with_capacity(args.values.len());
        for (key, json) in &args.values {
            jsons.push((key.as_str(), raw_json(key, json)?));
        }
        let (metrics, tables) = (&args.metrics, &args.tables);
        let info = released(py, || {
            self.manager.save(step, |tx| {
                for (key, dtype, shape, bytes) in &parts {
                    tx.put_tensor_raw(key, *dtype, shape, bytes)?;
                }
                for (key, json) in &jsons {
                    tx.put_value(key, json)?;
                }
                for (name, value) in metrics {
                    tx.put_metric(name, *value)?;
                }
                for table in tables {
                    lock(table).with_dependent_mut(|_, t| tx.put_replay(t))?;
                }
                Ok(())
            })
        })
        .or_raise()?;
        Ok(info.step)
    }

    /// Copies everything now (with the GIL held, so the caller may change
    /// its arrays as soon as this returns) and commits in the background.
    fn save_async(
        &self,
        py: Python<'_>,
        step: u64,
        tensors: Columns<'_>,
        values: Vec<(String, String)>,
        metrics: Vec<(String, f64)>,
        tables: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        no_open_tx(&self.db, "a save")?;
        let args = save_args(tensors, values, metrics, tables)?;
        let mut pending = PendingStep::new();
        for (key, dtype, shape, data) in &args.tensors {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            pending
                .put_tensor_raw(key, dtype_of(dtype)?, &shape, data.as_slice()?)
                .or_raise()?;
        }
        for (key, json) in &args.values {
            pending.put_value(key, &raw_json(key, json)?).or_raise()?;
        }
        for (name, value) in &args.metrics {
            pending.put_metric(name, *value).or_raise()?;
        }
        let tables = &args.tables;
        released(py, || {
            for table in tables {
                lock(table).with_dependent_mut(|_, t| pending.put_replay(t))?;
            }
            self.manager.save_async(step, pending)
        })
        .or_raise()
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        no_open_tx(&self.db, "a flush")?;
        released(py, || self.manager.flush()).or_raise()
    }

    fn in_flight(&self) -> Option<u64> {
        self.manager.in_flight()
    }

    fn tag(&self, py: Python<'_>, step: u64, name: &str) -> PyResult<()> {
        no_open_tx(&self.db, "tagging")?;
        released(py, || self.manager.tag(step, name)).or_raise()
    }

    fn restore_latest(&self, py: Python<'_>) -> PyResult<Option<NativeSnapshot>> {
        let s = released(py, || self.manager.restore_latest()).or_raise()?;
        Ok(s.map(NativeSnapshot::new))
    }

    fn restore(&self, py: Python<'_>, step: u64) -> PyResult<NativeSnapshot> {
        let s = released(py, || self.manager.restore(step)).or_raise()?;
        Ok(NativeSnapshot::new(s))
    }

    fn restore_tag(&self, py: Python<'_>, name: &str) -> PyResult<NativeSnapshot> {
        let s = released(py, || self.manager.restore_tag(name)).or_raise()?;
        Ok(NativeSnapshot::new(s))
    }

    fn restore_best(
        &self,
        py: Python<'_>,
        metric: &str,
        mode: Option<&str>,
    ) -> PyResult<Option<NativeSnapshot>> {
        let mode = mode.map(mode_of).transpose()?;
        let s = released(py, || match mode {
            Some(m) => self.manager.restore_best_by(metric, m),
            None => self.manager.restore_best(metric),
        })
        .or_raise()?;
        Ok(s.map(NativeSnapshot::new))
    }

    /// The database, as a handle of its own.
    fn db(&self) -> NativeDb {
        NativeDb {
            db: RwLock::new(Some(self.db.clone())),
        }
    }
}

fn raw_json(key: &str, json: &str) -> PyResult<Box<RawValue>> {
    RawValue::from_string(json.to_owned())
        .map_err(|e| errors::invalid(format!("{key:?} is not JSON: {e}")))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(validate_key, m)?)?;
    m.add_function(wrap_pyfunction!(destroy, m)?)?;
    #[cfg(feature = "s3")]
    {
        m.add_function(wrap_pyfunction!(remote::open_remote, m)?)?;
        m.add_function(wrap_pyfunction!(remote::push, m)?)?;
        m.add_function(wrap_pyfunction!(remote::pull, m)?)?;
    }
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_class::<NativeDb>()?;
    m.add_class::<NativeTx>()?;
    m.add_class::<NativeSnapshot>()?;
    m.add_class::<NativeTable>()?;
    m.add_class::<NativeView>()?;
    m.add_class::<NativeManager>()?;
    m.add_class::<zero_copy::MappedBytes>()?;
    Ok(())
}
