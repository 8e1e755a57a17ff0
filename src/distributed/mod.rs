//! One training step written by many ranks, committed atomically, and read
//! back at any world size.
//!
//! A run of `world_size` ranks lives under one root directory (a local or
//! shared file system):
//!
//! ```text
//! <root>/WORLD                      world size, written once at creation
//! <root>/ranks/<r>/                 rank r's own ckptdb database
//! <root>/global/<N>/part-<r>        rank r's part of global step N
//! <root>/global/<N>/COMMIT          the verdict on step N, written once
//! ```
//!
//! A rank commits its part of step `N` in its own database (durable when
//! that commit returns), then publishes a part record naming the local step
//! and, per key, the global shape and the slice it holds. Whoever sees all
//! `world_size` parts writes `COMMIT` with a create-only put: exactly one
//! writer creates it, and the content is a function of the parts, so a
//! racing writer finds the same bytes. Readers see only steps whose
//! `COMMIT` says committed. When step `N` commits, every older step without
//! a verdict gets an "abandoned" one (again create-only, so an old step can
//! never commit after it), its part records are deleted, and each rank
//! drops its local data of abandoned or never-published attempts at its
//! next commit.
//!
//! Records go through [`RecordStore`], so an object store with conditional
//! puts can hold them instead of a directory.
//!
//! ```no_run
//! use ckptdb::distributed::{DistributedDb, RankDb};
//! use ndarray::Array2;
//!
//! # fn main() -> ckptdb::Result<()> {
//! let (rank, world) = (1, 4);
//! let db = RankDb::open("run.ckpt", rank, world)?;
//! let mut tx = db.begin_step(10)?;
//! let bias = Array2::<f32>::zeros((1, 8)); // the same on every rank
//! tx.put("bias", &bias)?;
//! let mine = Array2::<f32>::ones((2, 8)); // rows 2..4 of an (8, 8) tensor
//! tx.put_shard("w", &[8, 8], &[2 * rank as u64, 0], &mine)?;
//! tx.commit()?;
//!
//! let run = DistributedDb::open("run.ckpt")?;
//! let snap = run.snapshot(10)?; // once all four ranks committed step 10
//! let rows = snap.read_slice::<f32>("w", &[0, 0], &[3, 8])?;
//! assert_eq!(rows.shape(), &[3, 8]);
//! # Ok(())
//! # }
//! ```

mod record;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{ArrayBase, ArrayD, CowArray, Data, Dimension, IxDyn, Slice};

use crate::db::Db;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result, ShardProblem};
use crate::log::crc::payload_crc32;
use crate::put::Put as EntryPut;
use crate::snapshot::Snapshot;
use crate::txn::StepTx;

use record::{
    build_commit, check_bounds, CommitRecord, PartEntry, PartRecord, Verdict, RECORD_VERSION,
};
pub use store::{LocalStore, Put, RecordStore};

const WORLD: &str = "WORLD";
const RANKS_DIR: &str = "ranks";
const GLOBAL_DIR: &str = "global";
const COMMIT: &str = "COMMIT";

/// A rank's local step for attempt `attempt` of global step `step`: the
/// global step in the high bits keeps local steps increasing, and a retry
/// of a step after a crash takes the next attempt.
const ATTEMPT_BITS: u32 = 16;

fn local_step(step: u64, attempt: u64) -> u64 {
    (step << ATTEMPT_BITS) | attempt
}

fn global_of(local: u64) -> u64 {
    local >> ATTEMPT_BITS
}

fn step_dir(step: u64) -> String {
    // Zero-padded so that names sort by step.
    format!("{GLOBAL_DIR}/{step:020}")
}

fn part_name(step: u64, rank: u32) -> String {
    format!("{}/part-{rank}", step_dir(step))
}

fn commit_name(step: u64) -> String {
    format!("{}/{COMMIT}", step_dir(step))
}

fn decode<T: serde::de::DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corruption(name, 0, format!("record does not decode: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::invalid(format!("record does not encode: {e}")))
}

/// What a global commit attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalOutcome {
    /// The step is globally committed; `won` is true when this call wrote
    /// the commit record.
    Committed {
        /// This call created the commit record.
        won: bool,
    },
    /// Not every rank has published its part yet.
    Pending {
        /// Parts published so far.
        parts: u32,
    },
    /// A newer step committed first; this step never commits.
    Abandoned,
}

/// The records of one run, shared by writers and readers.
#[derive(Debug)]
struct Global {
    root: PathBuf,
    store: Box<dyn RecordStore>,
    world_size: u32,
}

impl Global {
    fn verdict(&self, step: u64) -> Result<Option<Verdict>> {
        let name = commit_name(step);
        self.store
            .get(&name)?
            .map(|b| decode(&name, &b))
            .transpose()
    }

    fn part(&self, step: u64, rank: u32) -> Result<Option<PartRecord>> {
        let name = part_name(step, rank);
        self.store
            .get(&name)?
            .map(|b| decode(&name, &b))
            .transpose()
    }

    /// Steps that have a folder under `global/`, ascending.
    fn step_folders(&self) -> Result<Vec<u64>> {
        Ok(self
            .store
            .list(GLOBAL_DIR)?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    fn committed_steps(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for s in self.step_folders()? {
            if let Some(Verdict::Committed { .. }) = self.verdict(s)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn outcome_of(v: &Verdict, won: bool) -> GlobalOutcome {
        match v {
            Verdict::Committed { .. } => GlobalOutcome::Committed { won },
            Verdict::Abandoned { .. } => GlobalOutcome::Abandoned,
        }
    }

    /// Writes the commit of `step` when all parts are there.
    fn try_commit(&self, step: u64) -> Result<GlobalOutcome> {
        if let Some(v) = self.verdict(step)? {
            return Ok(Global::outcome_of(&v, false));
        }
        let names = self.store.list(&step_dir(step))?;
        let mut parts = Vec::new();
        for r in 0..self.world_size {
            if names.iter().any(|n| *n == format!("part-{r}")) {
                match self.part(step, r)? {
                    Some(p) => parts.push(p),
                    None => break, // reclaimed meanwhile: a verdict exists
                }
            }
        }
        if parts.len() < self.world_size as usize {
            if let Some(v) = self.verdict(step)? {
                return Ok(Global::outcome_of(&v, false));
            }
            return Ok(GlobalOutcome::Pending {
                parts: parts.len() as u32,
            });
        }
        let record = build_commit(step, self.world_size, &parts)?;
        let verdict = Verdict::Committed {
            version: RECORD_VERSION,
            record,
        };
        let name = commit_name(step);
        let won = match self.store.put_new(&name, &encode(&verdict)?)? {
            Put::Created => true,
            Put::Exists => {
                let found = self.verdict(step)?.ok_or_else(|| {
                    Error::corruption(&name, 0, "commit record vanished after it existed")
                })?;
                match &found {
                    Verdict::Committed { .. } if found != verdict => {
                        return Err(Error::CommitConflict {
                            record: name,
                            reason: "another commit of the same step differs".into(),
                        })
                    }
                    Verdict::Committed { .. } => false,
                    Verdict::Abandoned { .. } => return Ok(GlobalOutcome::Abandoned),
                }
            }
        };
        self.abandon_older(step)?;
        Ok(GlobalOutcome::Committed { won })
    }

    /// Gives every step older than committed `step` without a verdict the
    /// verdict "abandoned", and deletes the part records of abandoned
    /// steps: they are no part of any commit.
    fn abandon_older(&self, step: u64) -> Result<()> {
        for s in self.step_folders()?.into_iter().filter(|&s| s < step) {
            let name = commit_name(s);
            let abandoned = Verdict::Abandoned {
                version: RECORD_VERSION,
                by_step: step,
            };
            self.store.put_new(&name, &encode(&abandoned)?)?;
            // The verdict stays: it keeps the step from ever committing,
            // and tells each rank that its data of the step can go.
            if !matches!(self.verdict(s)?, Some(Verdict::Abandoned { .. })) {
                continue;
            }
            let parts = self.store.list(&step_dir(s))?;
            for p in parts.iter().filter(|n| n.starts_with("part-")) {
                self.store.delete(&format!("{}/{p}", step_dir(s)))?;
            }
        }
        Ok(())
    }
}

/// Reads the world size recorded at `root`, recording `given` when the run
/// is new.
fn world_size_of(root: &Path, store: &dyn RecordStore, given: Option<u32>) -> Result<u32> {
    if let Some(w) = given {
        if w == 0 {
            return Err(Error::invalid("world size 0"));
        }
        store.put_new(WORLD, format!("{w}\n").as_bytes())?;
    }
    let bytes = store.get(WORLD)?.ok_or_else(|| Error::NotADatabase {
        path: root.to_owned(),
        reason: "it has no WORLD file (not a multi-rank run)".into(),
    })?;
    let recorded: u32 = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&w| w > 0)
        .ok_or_else(|| Error::corruption(root.join(WORLD), 0, "not a world size"))?;
    if let Some(w) = given {
        if w != recorded {
            return Err(Error::WorldSizeMismatch {
                root: root.to_owned(),
                recorded,
                given: w,
            });
        }
    }
    Ok(recorded)
}

/// The writer of one rank of a multi-rank run.
#[derive(Debug)]
pub struct RankDb {
    global: Global,
    rank: u32,
    db: Db,
}

impl RankDb {
    /// Opens rank `rank` of the run at `root` for writing, creating the run
    /// (and recording `world_size`) when it is new. A second writer of the
    /// same rank gets [`Error::Locked`]; another world size than the
    /// recorded one gets [`Error::WorldSizeMismatch`].
    pub fn open(root: impl AsRef<Path>, rank: u32, world_size: u32) -> Result<RankDb> {
        let root = root.as_ref().to_owned();
        if world_size == 0 || rank >= world_size {
            return Err(Error::invalid(format!(
                "rank {rank} is out of range for world size {world_size}"
            )));
        }
        std::fs::create_dir_all(root.join(RANKS_DIR))
            .map_err(|e| Error::io("mkdir", root.join(RANKS_DIR), e))?;
        let store = Box::new(LocalStore::new(&root));
        let world_size = world_size_of(&root, store.as_ref(), Some(world_size))?;
        let db = Db::open(root.join(RANKS_DIR).join(rank.to_string()))?;
        let rank_db = RankDb {
            global: Global {
                root,
                store,
                world_size,
            },
            rank,
            db,
        };
        rank_db.finish_published()?;
        Ok(rank_db)
    }

    /// Finishes the global commits of steps this rank published but did
    /// not see committed: a rank killed between publishing the last part
    /// of a step and writing its commit record does it on restart.
    fn finish_published(&self) -> Result<()> {
        for s in self.global.step_folders()? {
            if self.global.verdict(s)?.is_none() && self.global.part(s, self.rank)?.is_some() {
                // Another step's shards may be bad; that is its writer's
                // error to report, not a reason to refuse to open.
                match self.global.try_commit(s) {
                    Ok(_) | Err(Error::ShardLayout { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The run's world size.
    pub fn world_size(&self) -> u32 {
        self.global.world_size
    }

    /// The rank's own database (read it, do not commit to it directly).
    pub fn local(&self) -> &Db {
        &self.db
    }

    /// True when this rank has published its part of `step` (a restarted
    /// rank skips such steps).
    pub fn has_published(&self, step: u64) -> Result<bool> {
        Ok(self.global.part(step, self.rank)?.is_some() || self.global.verdict(step)?.is_some())
    }

    /// Globally committed steps, ascending.
    pub fn committed_steps(&self) -> Result<Vec<u64>> {
        self.global.committed_steps()
    }

    /// Commits `step` globally when every part is there (any rank or a
    /// coordinator may call it; exactly one call creates the record).
    pub fn try_commit(&self, step: u64) -> Result<GlobalOutcome> {
        self.global.try_commit(step)
    }

    /// Starts this rank's part of global step `step`. Fails when this rank
    /// already published a part of it or of a later step.
    pub fn begin_step(&self, step: u64) -> Result<RankStepTx<'_>> {
        if step >= 1 << (64 - ATTEMPT_BITS) {
            return Err(Error::invalid(format!("global step {step} is too large")));
        }
        if self.has_published(step)? {
            return Err(Error::invalid(format!(
                "rank {} already published its part of global step {step}",
                self.rank
            )));
        }
        let attempt = match self.db.last_committed_step() {
            Some(l) if global_of(l) > step => {
                return Err(Error::invalid(format!(
                    "global step {step} is older than step {} this rank wrote",
                    global_of(l)
                )))
            }
            Some(l) if global_of(l) == step => (l & ((1 << ATTEMPT_BITS) - 1)) + 1,
            _ => 0,
        };
        if attempt >= 1 << ATTEMPT_BITS {
            return Err(Error::invalid(format!("too many attempts at step {step}")));
        }
        let tx = self.db.begin_step(local_step(step, attempt))?;
        Ok(RankStepTx {
            rank: self,
            step,
            tx,
            entries: BTreeMap::new(),
        })
    }

    /// Local steps that no global step needs: attempts that never
    /// published, and parts of abandoned steps.
    fn reclaimable(&self, current: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for l in self.db.steps() {
            let g = global_of(l);
            let keep = match self.global.verdict(g)? {
                Some(Verdict::Committed { record, .. }) => {
                    record.local_steps.get(self.rank as usize) == Some(&l)
                }
                Some(Verdict::Abandoned { .. }) => false,
                None => match self.global.part(g, self.rank)? {
                    Some(p) => p.local_step == l,
                    // No part: an attempt that died before publishing, or
                    // a step whose records were reclaimed as abandoned.
                    None => false,
                },
            };
            if !keep && l != current {
                out.push(l);
            }
        }
        Ok(out)
    }
}

/// One rank's part of one global step.
pub struct RankStepTx<'r> {
    rank: &'r RankDb,
    step: u64,
    tx: StepTx<'r>,
    entries: BTreeMap<String, PartEntry>,
}

impl std::fmt::Debug for RankStepTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankStepTx")
            .field("rank", &self.rank.rank)
            .field("step", &self.step)
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RankStepTx<'_> {
    /// The global step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Names `entry` in this rank's part. With `stored`, its bytes go into
    /// the rank's log and the crc32 the put computed is the entry's;
    /// otherwise (a replicated tensor another rank stores) only the crc32
    /// is computed, for the global commit to compare.
    fn add(&mut self, key: &str, mut entry: PartEntry, bytes: &[u8]) -> Result<()> {
        crate::key::validate_key(key)?;
        if self.entries.contains_key(key) {
            return Err(Error::ShardLayout {
                step: self.step,
                key: key.to_owned(),
                problem: ShardProblem::DuplicateShard {
                    rank: self.rank.rank,
                },
            });
        }
        entry.crc32 = if entry.stored {
            self.tx.put(EntryPut::tensor(
                key,
                entry.dtype,
                entry.shape.clone(),
                bytes,
            )?)?
        } else {
            payload_crc32(bytes)
        };
        self.entries.insert(key.to_owned(), entry);
        Ok(())
    }

    /// Puts a replicated tensor: every rank holds the same whole tensor.
    /// Rank 0 stores it; the other ranks record its crc32, and the global
    /// commit checks that all copies agree.
    pub fn put<T, S, D>(&mut self, key: &str, array: &ArrayBase<S, D>) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let shape = crate::put::shape_of(array.shape())?;
        let bytes = crate::put::row_major_bytes(array);
        let bytes = bytes.as_ref();
        let stored = self.rank.rank == 0;
        let entry = PartEntry {
            replicated: true,
            stored,
            dtype: T::DTYPE,
            global_shape: shape.clone(),
            offsets: vec![0; shape.len()],
            shape,
            crc32: 0, // set by `add`
        };
        self.add(key, entry, bytes)
    }

    /// Puts this rank's slice of the global tensor `key` of shape
    /// `global_shape`, starting at `offsets`. The global commit checks that
    /// the slices of all ranks tile the global shape exactly.
    pub fn put_shard<T, S, D>(
        &mut self,
        key: &str,
        global_shape: &[u64],
        offsets: &[u64],
        array: &ArrayBase<S, D>,
    ) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let shape = crate::put::shape_of(array.shape())?;
        check_bounds(self.step, key, global_shape, offsets, &shape)?;
        let bytes = crate::put::row_major_bytes(array);
        let bytes = bytes.as_ref();
        let entry = PartEntry {
            replicated: false,
            stored: true,
            dtype: T::DTYPE,
            global_shape: global_shape.to_vec(),
            offsets: offsets.to_vec(),
            shape,
            crc32: 0, // set by `add`
        };
        self.add(key, entry, bytes)
    }

    /// Commits this rank's part: durable in the rank's database, then
    /// published; then commits the step globally when this was the last
    /// part. A [`GlobalOutcome::Pending`] step commits when the last rank
    /// publishes (or on a later [`RankDb::try_commit`]).
    pub fn commit(mut self) -> Result<GlobalOutcome> {
        let rank = self.rank;
        let local = self.tx.step();
        for old in rank.reclaimable(local)? {
            self.tx.drop_step(old)?;
        }
        self.tx.commit()?;
        let part = PartRecord {
            version: RECORD_VERSION,
            step: self.step,
            rank: rank.rank,
            world_size: rank.global.world_size,
            local_step: local,
            entries: self.entries,
        };
        let name = part_name(self.step, rank.rank);
        if rank.global.store.put_new(&name, &encode(&part)?)? == Put::Exists {
            return Err(Error::CommitConflict {
                record: name,
                reason: "another writer published this rank's part".into(),
            });
        }
        rank.global.try_commit(self.step)
    }
}

/// A reader of a multi-rank run, at any world size.
#[derive(Debug)]
pub struct DistributedDb {
    global: Global,
    ranks: Mutex<BTreeMap<u32, std::sync::Arc<Db>>>,
}

impl DistributedDb {
    /// Opens the run at `root` for reading. Never changes a file.
    pub fn open(root: impl AsRef<Path>) -> Result<DistributedDb> {
        let root = root.as_ref().to_owned();
        let store = Box::new(LocalStore::new(&root));
        let world_size = world_size_of(&root, store.as_ref(), None)?;
        Ok(DistributedDb {
            global: Global {
                root,
                store,
                world_size,
            },
            ranks: Mutex::new(BTreeMap::new()),
        })
    }

    /// The world size the run was written with.
    pub fn world_size(&self) -> u32 {
        self.global.world_size
    }

    /// The run's root directory.
    pub fn root(&self) -> &Path {
        &self.global.root
    }

    /// Globally committed steps, ascending (read from storage on each
    /// call).
    pub fn steps(&self) -> Result<Vec<u64>> {
        self.global.committed_steps()
    }

    /// The newest globally committed step.
    pub fn latest_step(&self) -> Result<Option<u64>> {
        Ok(self.steps()?.last().copied())
    }

    /// Commits `step` when every part is there: a coordinator's call
    /// (exactly one of racing callers creates the record).
    pub fn try_commit(&self, step: u64) -> Result<GlobalOutcome> {
        self.global.try_commit(step)
    }

    fn rank_db(&self, rank: u32) -> Result<std::sync::Arc<Db>> {
        let mut ranks = self.ranks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = ranks.get(&rank) {
            return Ok(db.clone());
        }
        let db = std::sync::Arc::new(Db::open_read_only(
            self.global.root.join(RANKS_DIR).join(rank.to_string()),
        )?);
        ranks.insert(rank, db.clone());
        Ok(db)
    }

    /// The globally committed step `step`.
    pub fn snapshot(&self, step: u64) -> Result<GlobalSnapshot> {
        let record = match self.global.verdict(step)? {
            Some(Verdict::Committed { record, .. }) => record,
            _ => return Err(Error::StepNotFound { step }),
        };
        let mut needed: Vec<u32> = record
            .keys
            .values()
            .flat_map(|k| k.shards.iter().map(|s| s.rank))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let mut snaps = BTreeMap::new();
        for r in needed {
            let local = *record.local_steps.get(r as usize).ok_or_else(|| {
                Error::corruption(commit_name(step), 0, format!("no local step for rank {r}"))
            })?;
            let db = self.rank_db(r)?;
            let snap = match db.snapshot(local) {
                Err(Error::StepNotFound { .. }) => {
                    // Committed after this handle last looked.
                    db.refresh()?;
                    db.snapshot(local)?
                }
                other => other?,
            };
            snaps.insert(r, snap);
        }
        Ok(GlobalSnapshot { record, snaps })
    }
}

/// What a global snapshot knows about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalKeyInfo {
    /// The element type.
    pub dtype: DType,
    /// The global shape.
    pub global_shape: Vec<u64>,
    /// True for a replicated tensor.
    pub replicated: bool,
    /// `(rank, offsets, shape)` of each stored slice.
    pub shards: Vec<(u32, Vec<u64>, Vec<u64>)>,
}

/// One globally committed step, readable at any world size.
#[derive(Debug, Clone)]
pub struct GlobalSnapshot {
    record: CommitRecord,
    snaps: BTreeMap<u32, Snapshot>,
}

impl GlobalSnapshot {
    /// The global step.
    pub fn step(&self) -> u64 {
        self.record.step
    }

    /// Every key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.record.keys.keys().map(String::as_str)
    }

    /// Dtype, global shape and slices of `key`.
    pub fn key(&self, key: &str) -> Result<GlobalKeyInfo> {
        let g = self.global_key(key)?;
        Ok(GlobalKeyInfo {
            dtype: g.dtype,
            global_shape: g.global_shape.clone(),
            replicated: g.replicated,
            shards: g
                .shards
                .iter()
                .map(|s| (s.rank, s.offsets.clone(), s.shape.clone()))
                .collect(),
        })
    }

    fn global_key(&self, key: &str) -> Result<&record::GlobalKey> {
        self.record.keys.get(key).ok_or_else(|| Error::KeyNotFound {
            step: self.record.step,
            key: key.to_owned(),
        })
    }

    /// The whole global tensor `key`.
    pub fn read<T: Element>(&self, key: &str) -> Result<CowArray<'_, T, IxDyn>> {
        let g = self.global_key(key)?;
        let zeros = vec![0; g.global_shape.len()];
        let shape = g.global_shape.clone();
        self.read_slice(key, &zeros, &shape)
    }

    /// The slice of global tensor `key` at `offsets` of shape `shape`,
    /// assembled from the stored slices that overlap it: a view into the
    /// map when one stored slice covers it, one copy otherwise. Only the
    /// overlapping slices are read (each checked against its crc32 on
    /// first access in this process).
    pub fn read_slice<T: Element>(
        &self,
        key: &str,
        offsets: &[u64],
        shape: &[u64],
    ) -> Result<CowArray<'_, T, IxDyn>> {
        let g = self.global_key(key)?;
        if g.dtype != T::DTYPE {
            return Err(Error::DtypeMismatch {
                key: key.to_owned(),
                stored: g.dtype,
                requested: T::DTYPE,
            });
        }
        check_bounds(self.record.step, key, &g.global_shape, offsets, shape).map_err(|_| {
            Error::ShapeMismatch {
                what: format!(
                    "slice at {offsets:?} of {key:?} (global shape {:?})",
                    g.global_shape
                ),
                expected: g.global_shape.clone(),
                actual: shape.to_vec(),
            }
        })?;
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let end = |o: &[u64], s: &[u64], d: usize| o[d] + s[d];
        let nd = shape.len();
        let overlapping: Vec<&record::ShardRef> = g
            .shards
            .iter()
            .filter(|s| {
                (0..nd).all(|d| {
                    s.offsets[d] < end(offsets, shape, d)
                        && offsets[d] < end(&s.offsets, &s.shape, d)
                })
            })
            .collect();
        let view_of = |s: &record::ShardRef| -> Result<ndarray::ArrayViewD<'_, T>> {
            let snap = self.snaps.get(&s.rank).ok_or_else(|| {
                Error::corruption(commit_name(self.record.step), 0, "slice of an unread rank")
            })?;
            snap.tensor(key)?.view::<T>()
        };
        let covers = |s: &record::ShardRef| {
            (0..nd).all(|d| {
                s.offsets[d] <= offsets[d] && end(offsets, shape, d) <= end(&s.offsets, &s.shape, d)
            })
        };
        if dims.iter().product::<usize>() == 0 {
            return Ok(CowArray::from(
                ArrayD::from_shape_vec(IxDyn(&dims), Vec::new())
                    .map_err(|e| Error::invalid(format!("empty slice of {key:?}: {e}")))?,
            ));
        }
        if let Some(s) = overlapping.iter().find(|s| covers(s)) {
            let mut v = view_of(s)?;
            v.slice_each_axis_inplace(|ax| {
                let d = ax.axis.index();
                let from = (offsets[d] - s.offsets[d]) as usize;
                Slice::from(from..from + dims[d])
            });
            return Ok(CowArray::from(v));
        }
        let mut out: Option<ArrayD<T>> = None;
        for s in overlapping {
            let mut src = view_of(s)?;
            let lo: Vec<u64> = (0..nd).map(|d| offsets[d].max(s.offsets[d])).collect();
            let hi: Vec<u64> = (0..nd)
                .map(|d| end(offsets, shape, d).min(end(&s.offsets, &s.shape, d)))
                .collect();
            src.slice_each_axis_inplace(|ax| {
                let d = ax.axis.index();
                Slice::from((lo[d] - s.offsets[d]) as usize..(hi[d] - s.offsets[d]) as usize)
            });
            let Some(&first) = src.iter().next() else {
                continue; // an empty overlap contributes nothing
            };
            let dst = out.get_or_insert_with(|| ArrayD::from_elem(IxDyn(&dims), first));
            let mut part = dst.view_mut();
            part.slice_each_axis_inplace(|ax| {
                let d = ax.axis.index();
                Slice::from((lo[d] - offsets[d]) as usize..(hi[d] - offsets[d]) as usize)
            });
            part.assign(&src);
        }
        // The stored slices tile the global shape (checked at commit), so
        // a non-empty slice overlaps at least one.
        let out = out.ok_or_else(|| {
            Error::corruption(
                commit_name(self.record.step),
                0,
                "no slice covers the request",
            )
        })?;
        Ok(CowArray::from(out))
    }
}
