//! Shared by the crash-safety tests: an in-memory model of a database, a
//! deterministic workload that drives a [`Db`] and the model side by side,
//! and a reader that turns a real database back into a model to compare.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ckptdb::{DType, Db, Kind, Result};

/// One stored entry as the model knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub kind: Kind,
    pub dtype: Option<DType>,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

impl Val {
    pub fn tensor(dtype: DType, shape: &[u64], bytes: Vec<u8>) -> Val {
        Val {
            kind: Kind::Tensor,
            dtype: Some(dtype),
            shape: shape.to_vec(),
            bytes,
        }
    }

    pub fn blob(bytes: Vec<u8>) -> Val {
        Val {
            kind: Kind::Blob,
            dtype: None,
            shape: Vec::new(),
            bytes,
        }
    }

    /// A serde value; the model keeps its JSON bytes, which `put_value`
    /// reproduces exactly.
    pub fn value(v: &serde_json::Value) -> Val {
        Val {
            kind: Kind::Value,
            dtype: None,
            shape: Vec::new(),
            bytes: serde_json::to_vec(v).unwrap(),
        }
    }
}

/// One live step.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StepModel {
    pub entries: BTreeMap<String, Val>,
    pub metrics: BTreeMap<String, f64>,
}

/// The whole visible state of a database.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Model {
    pub steps: BTreeMap<u64, StepModel>,
    /// The newest step ever committed (retention does not lower it).
    pub last_step: Option<u64>,
}

/// What one step transaction does.
#[derive(Clone, Debug, Default)]
pub struct TxSpec {
    pub step: u64,
    /// `begin_step_from(step, parent)` when set.
    pub parent: Option<u64>,
    pub puts: Vec<(String, Val)>,
    pub removes: Vec<String>,
    /// Retention: steps dropped atomically with this commit.
    pub drops: Vec<u64>,
    pub metrics: Vec<(String, f64)>,
}

/// One step of a workload. New kinds of work (replay pushes, space
/// reclamation) become new variants, with their effect on the model in
/// [`Action::apply`] and on the database in [`Action::run`].
#[derive(Clone, Debug)]
pub enum Action {
    /// A transaction that commits.
    Commit(TxSpec),
    /// A transaction dropped without commit: it must leave no trace.
    Abandon(TxSpec),
}

/// How far an action got when it failed.
#[derive(Debug)]
pub enum Failure {
    /// Failed before `commit` was called: nothing of it can be durable.
    Before(ckptdb::Error),
    /// `commit` itself returned the error: it may or may not be durable.
    InCommit(ckptdb::Error),
}

impl Failure {
    pub fn error(&self) -> &ckptdb::Error {
        match self {
            Failure::Before(e) | Failure::InCommit(e) => e,
        }
    }
}

impl Model {
    /// The model after `spec` commits.
    pub fn commit(&self, spec: &TxSpec) -> Model {
        let mut m = self.clone();
        let mut step = match spec.parent {
            Some(p) => StepModel {
                entries: self.steps[&p].entries.clone(),
                metrics: BTreeMap::new(),
            },
            None => StepModel::default(),
        };
        for (k, v) in &spec.puts {
            step.entries.insert(k.clone(), v.clone());
        }
        for k in &spec.removes {
            step.entries.remove(k);
        }
        for (k, v) in &spec.metrics {
            step.metrics.insert(k.clone(), *v);
        }
        for d in &spec.drops {
            m.steps.remove(d);
        }
        m.steps.insert(spec.step, step);
        m.last_step = Some(spec.step);
        m
    }
}

impl Action {
    /// The model after this action succeeds.
    pub fn apply(&self, m: &Model) -> Model {
        match self {
            Action::Commit(spec) => m.commit(spec),
            Action::Abandon(_) => m.clone(),
        }
    }

    /// Runs the action on `db`.
    pub fn run(&self, db: &Db) -> std::result::Result<(), Failure> {
        match self {
            Action::Commit(spec) => {
                let tx = fill(db, spec).map_err(Failure::Before)?;
                tx.commit().map_err(Failure::InCommit)?;
                Ok(())
            }
            Action::Abandon(spec) => {
                let tx = fill(db, spec).map_err(Failure::Before)?;
                drop(tx);
                Ok(())
            }
        }
    }
}

fn fill<'db>(db: &'db Db, spec: &TxSpec) -> Result<ckptdb::StepTx<'db>> {
    let mut tx = match spec.parent {
        Some(p) => db.begin_step_from(spec.step, p)?,
        None => db.begin_step(spec.step)?,
    };
    for (k, v) in &spec.puts {
        match v.kind {
            Kind::Tensor => tx.put_tensor_raw(k, v.dtype.unwrap(), &v.shape, &v.bytes)?,
            Kind::Blob => tx.put_blob(k, &v.bytes)?,
            Kind::Value => {
                let j: serde_json::Value = serde_json::from_slice(&v.bytes).unwrap();
                tx.put_value(k, &j)?
            }
            other => panic!("the workload does not put {other:?}"),
        }
    }
    for k in &spec.removes {
        assert!(tx.remove(k), "workload removes {k}, which the step lacks");
    }
    for &d in &spec.drops {
        tx.drop_step(d)?;
    }
    for (k, v) in &spec.metrics {
        tx.put_metric(k, *v)?;
    }
    Ok(tx)
}

/// Reads everything a database shows into a model. Any read error is
/// returned (a crash must never make a committed entry unreadable).
pub fn read_model(db: &Db) -> Result<Model> {
    let mut m = Model {
        steps: BTreeMap::new(),
        last_step: db.last_committed_step(),
    };
    for s in db.steps() {
        let snap = db.snapshot(s)?;
        let mut step = StepModel {
            entries: BTreeMap::new(),
            metrics: snap.metrics().clone(),
        };
        for info in snap.entries().collect::<Vec<_>>() {
            let bytes = snap.raw_bytes(&info.key)?.to_vec();
            if info.kind == Kind::Tensor {
                // The typed path must agree with the raw one.
                assert_eq!(snap.tensor(&info.key)?.bytes()?, &bytes[..]);
            }
            step.entries.insert(
                info.key.clone(),
                Val {
                    kind: info.kind,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes,
                },
            );
        }
        let bad = snap.verify();
        assert!(bad.is_empty(), "verify of step {s} reports {bad:?}");
        m.steps.insert(s, step);
    }
    Ok(m)
}

/// Deterministic bytes: `n` bytes from `seed`.
pub fn bytes_of(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A deterministic tensor of `dtype` and `shape` (valid for every dtype:
/// bools are 0/1, floats are finite).
pub fn tensor_of(seed: u64, dtype: DType, shape: &[u64]) -> Val {
    let n: u64 = shape.iter().product();
    let raw = bytes_of(seed, (n as usize) * dtype.size());
    let bytes = match dtype {
        DType::Bool => raw.iter().map(|b| b & 1).collect(),
        // Small integers as floats: always finite, bit-exact comparisons.
        DType::F32 => raw
            .chunks(4)
            .flat_map(|c| (c[0] as f32 - 128.0).to_le_bytes())
            .collect(),
        DType::F64 => raw
            .chunks(8)
            .flat_map(|c| (c[0] as f64 / 7.0).to_le_bytes())
            .collect(),
        DType::F16 => raw
            .chunks(2)
            .flat_map(|c| ckptdb::f16::from_f32(c[0] as f32).to_le_bytes())
            .collect(),
        DType::BF16 => raw
            .chunks(2)
            .flat_map(|c| ckptdb::bf16::from_f32(c[0] as f32).to_le_bytes())
            .collect(),
        _ => raw,
    };
    Val::tensor(dtype, shape, bytes)
}

/// The standard crash workload: `commits` commits (at least 20 make sense)
/// mixing tensors of several dtypes, blobs, values, metrics, dedup (a
/// tensor put again with equal bytes, under its key and under a new one),
/// steps built from a parent with entries removed, retention drops, a few
/// large payloads written around the buffer, and abandoned transactions.
pub fn workload(commits: u64) -> Vec<Action> {
    let mut out = Vec::new();
    let mut model = Model::default();
    let big = tensor_of(999, DType::F32, &[256, 260]); // > 256 KiB: direct write
    for i in 0..commits {
        let step = 10 * (i + 1);
        let parent = if i.is_multiple_of(5) {
            None
        } else {
            model.steps.keys().next_back().copied()
        };
        let mut spec = TxSpec {
            step,
            parent,
            ..TxSpec::default()
        };
        spec.puts
            .push(("policy/w".into(), tensor_of(i, DType::F32, &[4, 4 + i % 3])));
        spec.puts
            .push(("policy/b".into(), tensor_of(i / 3, DType::BF16, &[8])));
        spec.puts
            .push(("opt/count".into(), tensor_of(i % 4, DType::I64, &[3])));
        if i.is_multiple_of(2) {
            spec.puts
                .push(("mask".into(), tensor_of(i, DType::Bool, &[5])));
            spec.puts
                .push(("opt/m".into(), tensor_of(i * 7, DType::F16, &[2, 3])));
        }
        if i.is_multiple_of(3) {
            spec.puts
                .push(("rng".into(), Val::blob(bytes_of(1000 + i, 40 + i as usize))));
            spec.puts.push((
                "config".into(),
                Val::value(&serde_json::json!({"lr": 0.001, "i": i, "name": "dqn"})),
            ));
        }
        // Dedup: the same content under a second key, and an old step's
        // content put again.
        spec.puts.push((
            "policy/w_copy".into(),
            tensor_of(i, DType::F32, &[4, 4 + i % 3]),
        ));
        if i % 4 == 1 {
            spec.puts
                .push(("counter".into(), tensor_of(0, DType::U8, &[7])));
        }
        if i == 6 || i == 13 {
            spec.puts.push(("big".into(), big.clone()));
        }
        if i == 14 {
            spec.puts
                .push(("big2".into(), tensor_of(4242, DType::F64, &[64, 520])));
        }
        if let Some(p) = parent {
            // Remove an inherited key now and then.
            if i % 5 == 2 && model.steps[&p].entries.contains_key("mask") {
                spec.removes.push("mask".into());
            }
        }
        spec.metrics.push(("loss".into(), 1.0 / (i + 1) as f64));
        if i % 2 == 1 {
            spec.metrics.push(("reward".into(), i as f64));
        }
        // Retention: keep at most four live steps.
        let live: Vec<u64> = model.steps.keys().copied().collect();
        if live.len() >= 4 {
            spec.drops.push(live[0]);
            if i % 6 == 5 && live.len() >= 5 {
                spec.drops.push(live[1]);
            }
        }
        if i % 7 == 3 {
            let mut dead = spec.clone();
            dead.drops.clear();
            dead.puts
                .push(("never".into(), tensor_of(5000 + i, DType::I32, &[33])));
            out.push(Action::Abandon(dead));
        }
        let a = Action::Commit(spec);
        model = a.apply(&model);
        out.push(a);
    }
    out
}

/// Runs `actions` on `db` until one fails. Returns the model after the last
/// acknowledged action, the model of the one in flight when it failed in
/// `commit` (it may or may not have become durable), and the failure.
pub fn run_until_failure(db: &Db, actions: &[Action]) -> (Model, Option<Model>, Option<Failure>) {
    let mut acked = Model::default();
    for a in actions {
        match a.run(db) {
            Ok(()) => acked = a.apply(&acked),
            Err(f) => {
                let in_flight = match &f {
                    Failure::InCommit(_) => Some(a.apply(&acked)),
                    Failure::Before(_) => None,
                };
                return (acked, in_flight, Some(f));
            }
        }
    }
    (acked, None, None)
}

/// Copies a database directory (for checking one crash state twice).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let dst = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_dir(&ent.path(), &dst);
        } else {
            std::fs::copy(ent.path(), dst).unwrap();
        }
    }
}

/// A temporary directory, in memory when the machine has `/dev/shm`: crash
/// sweeps open thousands of databases, and the catalog's own fsyncs would
/// dominate their time on a disk. (Crash semantics come from the
/// fault-injecting storage, not from the file system.)
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("ckptdb-").tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}
