//! Shared by the crash-safety tests: an in-memory model of a database, a
//! deterministic workload that drives a [`Db`] and the model side by side,
//! and a reader that turns a real database back into a model to compare.
//!
//! Replay tables: the workloads use the tables of [`TABLES`] (one schema,
//! two geometries). Row `id` of a table holds bytes derived from the table
//! and `id` ([`row_bytes`]), and rows are pushed with consecutive ids, so a
//! table's contents are fixed by how many rows were ever pushed: the last
//! `capacity` of them. A [`Session`] holds the open table handles of one
//! database handle; the model's working tables ([`Model::tables`]) follow
//! it, and [`Model::reopen`] gives what a new session starts from (the
//! newest live step's recorded tables: unrecorded pushes are lost).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ckptdb::replay::{Field, ReplayOptions, ReplayTable, Schema};
use ckptdb::{DType, Db, Kind, Result};

/// The workloads' replay tables: name, capacity, page size. `aux` has a
/// capacity that is not a multiple of its page size (a short last page).
pub const TABLES: [(&str, u64, u64); 2] = [("buf", 48, 8), ("aux", 20, 6)];

/// The schema of every table of [`TABLES`] (25-byte rows).
pub fn replay_schema() -> Schema {
    Schema::parse("id: u64[], obs: f32[4], done: bool[]").unwrap()
}

fn table_index(name: &str) -> usize {
    TABLES
        .iter()
        .position(|t| t.0 == name)
        .unwrap_or_else(|| panic!("no table {name}"))
}

/// Capacity and page size of table `name` of [`TABLES`].
pub fn table_options(name: &str) -> ReplayOptions {
    let (_, capacity, page) = TABLES[table_index(name)];
    // Batches of two pages, so that the workloads' short runs of pushes
    // hand full pages to the log outside transactions.
    let page_bytes = page as usize * replay_schema().row_size();
    ReplayOptions::new(capacity, page).write_batch(2 * page_bytes)
}

/// The fields of row `id` of table `name`.
pub fn row_values(name: &str, id: u64) -> (u64, [f32; 4], bool) {
    let salt = 1000 * (table_index(name) as u64 + 1);
    let x = ((id + salt) % 100_000) as f32;
    (
        id,
        [x, x + 0.5, -x, x * 0.25],
        (id + salt).is_multiple_of(3),
    )
}

/// Row `id` of table `name`, packed in schema order.
pub fn row_bytes(name: &str, id: u64) -> Vec<u8> {
    let (id, obs, done) = row_values(name, id);
    let mut out = id.to_le_bytes().to_vec();
    for v in obs {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(done as u8);
    out
}

/// What a step recorded of one replay table.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TableRows {
    /// Rows ever pushed (`total_inserted`).
    pub total: u64,
    /// Ids of the rows held, oldest first.
    pub rows: Vec<u64>,
}

impl TableRows {
    /// Table `name` after `total` pushes.
    pub fn of(name: &str, total: u64) -> TableRows {
        let capacity = TABLES[table_index(name)].1;
        TableRows {
            total,
            rows: (total.saturating_sub(capacity)..total).collect(),
        }
    }
}

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
    /// Replay tables recorded in (or inherited by) the step.
    pub replay: BTreeMap<String, TableRows>,
}

/// The whole visible state of a database, and the working replay tables of
/// the session that drives it.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub steps: BTreeMap<u64, StepModel>,
    /// The newest step ever committed (retention does not lower it).
    pub last_step: Option<u64>,
    /// Rows ever pushed to each open table (absent: none). Not visible in
    /// the database until a commit records the table, so not compared.
    pub tables: BTreeMap<String, u64>,
}

/// Equality of what a reader sees: the working tables are not part of it.
impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.steps == other.steps && self.last_step == other.last_step
    }
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
    /// Rows pushed to replay tables while the transaction is open (full
    /// pages wait in memory: the writer is busy).
    pub pushes: Vec<(String, u64)>,
    /// Replay tables recorded in the step (`put_replay`), after the pushes.
    pub records: Vec<String>,
}

/// One step of a workload: its effect on the model is in [`Action::apply`],
/// on the database in [`Session::run`].
#[derive(Clone, Debug)]
pub enum Action {
    /// A transaction that commits.
    Commit(TxSpec),
    /// A transaction dropped without commit: it must leave no trace (its
    /// pushes stay in the working tables, which are not part of it).
    Abandon(TxSpec),
    /// Rows pushed to a replay table outside any transaction: full pages go
    /// to the log at once, named by no root until a commit records them.
    Push { table: String, rows: u64 },
    /// Space reclamation: `compact_with(t)`, or `compact()` for `None`. Not
    /// a commit: it may publish a maintenance root, but a reader sees the
    /// same steps and bytes before and after.
    Compact(Option<f64>),
}

/// How far an action got when it failed.
#[derive(Debug)]
pub enum Failure {
    /// Failed before `commit` was called: nothing of it can be durable.
    Before(ckptdb::Error),
    /// `commit` itself returned the error: it may or may not be durable.
    InCommit(ckptdb::Error),
    /// A compaction failed: its maintenance root may or may not be durable,
    /// which changes nothing a reader sees.
    InMaintenance(ckptdb::Error),
}

impl Failure {
    pub fn error(&self) -> &ckptdb::Error {
        match self {
            Failure::Before(e) | Failure::InCommit(e) | Failure::InMaintenance(e) => e,
        }
    }
}

impl Model {
    /// The model after `spec` commits.
    pub fn commit(&self, spec: &TxSpec) -> Model {
        let mut m = self.pushed(&spec.pushes);
        let mut step = match spec.parent {
            Some(p) => StepModel {
                entries: self.steps[&p].entries.clone(),
                metrics: BTreeMap::new(),
                replay: self.steps[&p].replay.clone(),
            },
            None => StepModel::default(),
        };
        for t in &spec.records {
            let total = m.tables.get(t).copied().unwrap_or(0);
            step.replay.insert(t.clone(), TableRows::of(t, total));
        }
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

    /// The model after `pushes` (working tables only).
    pub fn pushed(&self, pushes: &[(String, u64)]) -> Model {
        let mut m = self.clone();
        for (t, n) in pushes {
            *m.tables.entry(t.clone()).or_default() += n;
        }
        m
    }

    /// The model a new session on this database starts from: every table
    /// as the newest live step recorded it, or empty.
    pub fn reopen(&self) -> Model {
        let mut m = self.clone();
        m.tables = match self.steps.values().next_back() {
            Some(s) => s.replay.iter().map(|(k, t)| (k.clone(), t.total)).collect(),
            None => BTreeMap::new(),
        };
        m
    }
}

impl Action {
    /// The model after this action succeeds.
    pub fn apply(&self, m: &Model) -> Model {
        match self {
            Action::Commit(spec) => m.commit(spec),
            Action::Abandon(spec) => m.pushed(&spec.pushes),
            Action::Push { table, rows } => m.pushed(&[(table.clone(), *rows)]),
            Action::Compact(_) => m.clone(),
        }
    }
}

/// The open replay tables of one database handle (every table of
/// [`TABLES`], opened at once so that they start where [`Model::reopen`]
/// says).
pub struct Session<'db> {
    db: &'db Db,
    tables: BTreeMap<String, ReplayTable<'db>>,
    /// What each compaction run by [`Session::run`] did.
    pub compactions: Vec<ckptdb::CompactStats>,
}

impl<'db> Session<'db> {
    pub fn open(db: &'db Db) -> Result<Session<'db>> {
        let mut tables = BTreeMap::new();
        for (name, _, _) in TABLES {
            let t = db.replay_table(name, &replay_schema(), table_options(name))?;
            tables.insert(name.to_owned(), t);
        }
        Ok(Session {
            db,
            tables,
            compactions: Vec::new(),
        })
    }

    pub fn db(&self) -> &'db Db {
        self.db
    }

    /// The open handle of table `name`.
    pub fn table(&self, name: &str) -> &ReplayTable<'db> {
        &self.tables[name]
    }

    /// Runs `a` on the database.
    pub fn run(&mut self, a: &Action) -> std::result::Result<(), Failure> {
        match a {
            Action::Commit(spec) => {
                let tx = self.fill(spec).map_err(Failure::Before)?;
                tx.commit().map_err(Failure::InCommit)?;
            }
            Action::Abandon(spec) => {
                let tx = self.fill(spec).map_err(Failure::Before)?;
                drop(tx);
            }
            Action::Push { table, rows } => self.push(table, *rows).map_err(Failure::Before)?,
            Action::Compact(threshold) => {
                let stats = match threshold {
                    Some(t) => self.db.compact_with(*t),
                    None => self.db.compact(),
                }
                .map_err(Failure::InMaintenance)?;
                self.compactions.push(stats);
            }
        }
        Ok(())
    }

    /// Pushes the next `n` rows of table `name`: packed bytes and typed
    /// fields in turn (both paths of the API).
    pub fn push(&mut self, name: &str, n: u64) -> Result<()> {
        let t = self
            .tables
            .get_mut(name)
            .unwrap_or_else(|| panic!("no table {name}"));
        for _ in 0..n {
            let id = t.total_inserted();
            if id.is_multiple_of(2) {
                t.push_bytes(&row_bytes(name, id))?;
            } else {
                let (id, obs, done) = row_values(name, id);
                t.push(&[
                    Field::vector("obs", &obs),
                    Field::scalar("done", &done),
                    Field::scalar("id", &id),
                ])?;
            }
        }
        Ok(())
    }

    /// Begins `spec`'s transaction and does all of it but the commit.
    pub fn fill(&mut self, spec: &TxSpec) -> Result<ckptdb::StepTx<'db>> {
        let mut tx = fill(self.db, spec)?;
        for (t, n) in &spec.pushes {
            self.push(t, *n)?;
        }
        for t in &spec.records {
            let table = self
                .tables
                .get_mut(t)
                .unwrap_or_else(|| panic!("no table {t}"));
            tx.put_replay(table)?;
        }
        Ok(tx)
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
        tables: BTreeMap::new(),
    };
    for s in db.steps() {
        let snap = db.snapshot(s)?;
        let mut step = StepModel {
            entries: BTreeMap::new(),
            metrics: snap.metrics().clone(),
            replay: BTreeMap::new(),
        };
        for name in snap.replay_tables() {
            let view = snap.replay(&name)?;
            let mut rows = Vec::new();
            for i in 0..view.len() {
                let row = view.get(i)?;
                let id: u64 = row.scalar("id")?;
                assert_eq!(
                    row.bytes(),
                    &row_bytes(&name, id)[..],
                    "step {s}, table {name}, row {i} (id {id})"
                );
                rows.push(id);
            }
            let total = view.total_inserted();
            step.replay.insert(name, TableRows { total, rows });
        }
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
/// large payloads written around the buffer, abandoned transactions, replay
/// pushes (full pages appended outside transactions, and pages filled
/// inside one, which the commit writes), replay tables recorded, inherited
/// or left out, and compactions (forced copy-forward and the default), some
/// while pushed pages wait for their commit.
pub fn workload(commits: u64) -> Vec<Action> {
    let mut out = Vec::new();
    let mut model = Model::default();
    let big = tensor_of(999, DType::F32, &[256, 260]); // > 256 KiB: direct write
    let add = |out: &mut Vec<Action>, model: &mut Model, a: Action| {
        *model = a.apply(model);
        out.push(a);
    };
    for i in 0..commits {
        let step = 10 * (i + 1);
        add(
            &mut out,
            &mut model,
            Action::Push {
                table: "buf".into(),
                rows: 5 + (i * 7) % 23,
            },
        );
        if i % 4 == 0 {
            add(
                &mut out,
                &mut model,
                Action::Push {
                    table: "aux".into(),
                    rows: 13,
                },
            );
        }
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
        // Replay: rows pushed while the transaction is open, and the tables
        // the step records (a step from a parent that records neither
        // inherits the parent's; one without a parent then has none).
        if i % 3 == 1 {
            spec.pushes.push(("aux".into(), 7 + i % 5));
        }
        if i % 4 != 3 {
            spec.records.push("buf".into());
        }
        if i % 3 != 2 {
            spec.records.push("aux".into());
        }
        if i % 7 == 3 {
            let mut dead = spec.clone();
            dead.drops.clear();
            dead.puts
                .push(("never".into(), tensor_of(5000 + i, DType::I32, &[33])));
            add(&mut out, &mut model, Action::Abandon(dead));
        }
        add(&mut out, &mut model, Action::Commit(spec));
        // Space reclamation: forced copy-forward of every sealed segment
        // (with pushed pages no root names yet), or the default.
        if i % 5 == 3 {
            add(
                &mut out,
                &mut model,
                Action::Push {
                    table: "buf".into(),
                    rows: 17,
                },
            );
            add(&mut out, &mut model, Action::Compact(Some(1.0)));
        } else if i % 5 == 4 {
            add(&mut out, &mut model, Action::Compact(None));
        }
    }
    out
}

/// Runs `actions` on `db` until one fails. Returns the model after the last
/// acknowledged action, the model of the one in flight when it failed in
/// `commit` (it may or may not have become durable), and the failure.
pub fn run_until_failure(db: &Db, actions: &[Action]) -> (Model, Option<Model>, Option<Failure>) {
    let (acked, in_flight, failure) = run_until_failure_at(db, actions);
    (acked, in_flight, failure.map(|(_, f)| f))
}

/// [`run_until_failure`], also telling which action failed.
pub fn run_until_failure_at(
    db: &Db,
    actions: &[Action],
) -> (Model, Option<Model>, Option<(usize, Failure)>) {
    let mut acked = Model::default();
    let mut session = match Session::open(db) {
        Ok(s) => s,
        Err(e) => return (acked, None, Some((0, Failure::Before(e)))),
    };
    for (i, a) in actions.iter().enumerate() {
        match session.run(a) {
            Ok(()) => acked = a.apply(&acked),
            Err(f) => {
                let in_flight = match &f {
                    Failure::InCommit(_) => Some(a.apply(&acked)),
                    Failure::Before(_) | Failure::InMaintenance(_) => None,
                };
                return (acked, in_flight, Some((i, f)));
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

#[path = "../common/scratch.rs"]
mod scratch;

/// A temporary directory, in memory when the machine has `/dev/shm`: crash
/// sweeps open thousands of databases, and the catalog's own fsyncs would
/// dominate their time on a disk. (Crash semantics come from the
/// fault-injecting storage, not from the file system.)
#[allow(unused_imports)]
pub use scratch::scratch_dir;
