//! Step transactions: everything one step commits, atomically.
//!
//! A [`StepTx`] appends each entry to the log as it is put (so a large model
//! is never held twice in memory) and commits by appending one commit record
//! and syncing once. Until that record is durable nothing of the step is
//! visible; a transaction dropped without `commit` cuts the log back to where
//! it began.
//!
//! **Dedup.** Before an entry is written its crc32 is computed; the catalog
//! lists the live entries with the same payload length and crc, and an entry
//! of the same kind, dtype and shape whose bytes compare equal is referenced
//! instead of written. Equality is decided by comparing bytes, never by the
//! hash alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;

use ndarray::{ArrayBase, Data, Dimension};
use serde::Serialize;

use crate::catalog::ContentIndex;
use crate::db::Db;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::format::{EntryHeader, Kind, Location, MAX_PAYLOAD_LEN};
use crate::key::validate_metric;
use crate::log::pins::PinSet;
use crate::log::write::Mark;
use crate::put::{array_put, check_rank, to_json, Put};
use crate::record::{now_ms, EntryRef, Manifest, ReplayTableState};
use crate::replay::sink::{EntrySink, RecordedTable};
use crate::snapshot::StepInfo;
use crate::trainer::PendingStep;
use crate::writer::{RootChange, Writer};

/// The transaction that commits one step. Created by [`Db::begin_step`] and
/// friends; borrows the database and holds its writer until it ends.
pub struct StepTx<'db> {
    db: &'db Db,
    w: MutexGuard<'db, Writer>,
    step: u64,
    entries: BTreeMap<String, EntryRef>,
    metrics: BTreeMap<String, f64>,
    replay: BTreeMap<String, ReplayTableState>,
    dropped: BTreeSet<u64>,
    new_bytes: u64,
    mark: Mark,
    finished: bool,
    /// The dedup index, opened at the first put and held until commit.
    content: Option<ContentIndex>,
}

impl std::fmt::Debug for StepTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepTx")
            .field("step", &self.step)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<'db> StepTx<'db> {
    pub(crate) fn begin(db: &'db Db, step: u64, parent: Option<u64>) -> Result<StepTx<'db>> {
        let w = db.lock_writer()?;
        w.log.check()?;
        if let Some(last) = db.last_committed_step() {
            if step <= last {
                return Err(Error::invalid(format!(
                    "step {step} is not greater than the last committed step {last}"
                )));
            }
        }
        let (entries, replay) = match parent {
            Some(p) => {
                let (_, m) = db.manifest(p)?;
                (m.entries.clone(), m.replay.clone())
            }
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        let mark = w.log.mark();
        Ok(StepTx {
            db,
            w,
            step,
            entries,
            metrics: BTreeMap::new(),
            replay,
            dropped: BTreeSet::new(),
            new_bytes: 0,
            mark,
            finished: false,
            content: None,
        })
    }

    /// The database this transaction commits to.
    #[cfg(feature = "s3")]
    pub(crate) fn db(&self) -> &'db Db {
        self.db
    }

    /// The step this transaction commits.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Puts raw bytes under `key`.
    pub fn put_blob(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put(Put::blob(key, bytes)?).map(drop)
    }

    /// Puts a tensor of any dimension. A view that is not in standard
    /// (row-major, contiguous) layout is copied into row-major order first.
    pub fn put_tensor<T, S, D>(&mut self, key: &str, array: &ArrayBase<S, D>) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        self.put(array_put(key, array)?).map(drop)
    }

    /// Puts a tensor given as little-endian row-major bytes.
    pub fn put_tensor_raw(
        &mut self,
        key: &str,
        dtype: DType,
        shape: &[u64],
        bytes: &[u8],
    ) -> Result<()> {
        self.put(Put::tensor(key, dtype, shape.to_vec(), bytes)?)
            .map(drop)
    }

    /// Puts a serde value, stored as JSON.
    pub fn put_value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.put(Put::json(key, to_json(key, value)?)?).map(drop)
    }

    /// Puts everything `batch` holds, as if each of its puts had been made
    /// on this transaction in order (later puts of a key win), and records
    /// its replay tables as they were captured.
    pub fn apply(&mut self, batch: PendingStep) -> Result<()> {
        batch.apply(self)
    }

    /// Writes a checked entry and names it in the step: the one way a user
    /// entry gets into a transaction. Returns the payload's crc32, for a
    /// caller that records it elsewhere too (a rank's part record).
    pub(crate) fn put<B: AsRef<[u8]>>(&mut self, put: Put<B>) -> Result<u32> {
        let (key, kind, dtype, shape, payload) = put.into_parts();
        let e = self.write_entry(&key, kind, dtype, shape, payload.as_ref())?;
        let crc = e.crc;
        self.entries.insert(key, e);
        Ok(crc)
    }

    /// The metrics recorded so far.
    pub fn metrics(&self) -> &BTreeMap<String, f64> {
        &self.metrics
    }

    /// Records a metric of this step.
    pub fn put_metric(&mut self, name: &str, value: f64) -> Result<()> {
        validate_metric(name, value)?;
        self.metrics.insert(name.to_owned(), value);
        Ok(())
    }

    /// Removes `key` from this step (it was inherited from the parent or put
    /// earlier). Returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// True when this step holds `key` so far.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys this step holds so far, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Drops live step `step` from the database, atomically with this
    /// commit: once the commit is durable the step is gone for good (also
    /// after a crash or a catalog rebuild). Tags naming it are removed.
    pub fn drop_step(&mut self, step: u64) -> Result<()> {
        if !self.db.steps().contains(&step) {
            return Err(Error::StepNotFound { step });
        }
        self.dropped.insert(step);
        Ok(())
    }

    /// Names a recorded replay table in the step (replacing an earlier
    /// state of it) and counts the page bytes it is the first to name.
    pub(crate) fn insert_replay(&mut self, t: RecordedTable) {
        self.new_bytes += t.new_bytes;
        self.replay.insert(t.name, t.state);
    }

    /// Removes replay table `name` from the step; whether it was there.
    pub(crate) fn remove_replay_state(&mut self, name: &str) -> bool {
        self.replay.remove(name).is_some()
    }

    /// Writes an entry of this transaction (or finds a committed duplicate)
    /// and returns its reference, without naming it in the step. The key is
    /// not checked as a user key: internal entries (replay pages and state)
    /// use their own.
    fn write_entry(
        &mut self,
        key: &str,
        kind: Kind,
        dtype: Option<DType>,
        shape: Vec<u64>,
        payload: &[u8],
    ) -> Result<EntryRef> {
        check_rank(shape.len())?;
        if payload.len() as u64 > MAX_PAYLOAD_LEN {
            return Err(Error::invalid(format!(
                "{key:?}: payload over the 1 TiB limit"
            )));
        }
        // The same chunked crc the read side checks with: a large put hashes
        // on every core instead of one, and the combined crc is bit-for-bit
        // the single-pass one, so the format does not change.
        let crc = crate::log::crc::payload_crc32(payload);
        if let Some(e) = self.find_duplicate(kind, dtype, &shape, payload, crc)? {
            return Ok(e);
        }
        let mut header = EntryHeader::new(
            kind,
            dtype,
            key.to_owned(),
            shape,
            payload.len() as u64,
            crc,
        );
        let at = self.w.log.append(&mut header, payload)?;
        self.new_bytes += payload.len() as u64;
        Ok(EntryRef::from_header(at, header))
    }

    /// A committed live entry with exactly this content, if there is one.
    fn find_duplicate(
        &mut self,
        kind: Kind,
        dtype: Option<DType>,
        shape: &[u64],
        payload: &[u8],
        crc: u32,
    ) -> Result<Option<EntryRef>> {
        if self.content.is_none() {
            let Some(catalog) = self.w.catalog.get() else {
                return Ok(None);
            };
            // The catalog only saves space; a failure must not fail the put.
            match catalog.content_index() {
                Ok(index) => self.content = Some(index),
                Err(_) => return Ok(None),
            }
        }
        let Some(index) = &self.content else {
            return Ok(None);
        };
        let Ok(candidates) = index.get(payload.len() as u64, crc) else {
            return Ok(None);
        };
        if candidates.is_empty() {
            return Ok(None);
        }
        let Some(committed) = self.db.read_view().committed() else {
            return Ok(None);
        };
        for at in candidates {
            if let Some(e) = self.candidate(at, committed, kind, dtype, shape, payload, crc) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn candidate(
        &self,
        at: Location,
        committed: Location,
        kind: Kind,
        dtype: Option<DType>,
        shape: &[u64],
        payload: &[u8],
        crc: u32,
    ) -> Option<EntryRef> {
        let segs = &self.db.segments;
        let probe = segs.map(at.segment, at.offset + 64, committed).ok()?;
        let header = EntryHeader::decode(probe.bytes().get(at.offset as usize..)?).ok()?;
        if header.kind != kind
            || header.dtype != dtype
            || header.shape != shape
            || header.payload_crc != crc
        {
            return None;
        }
        if header.payload_len != payload.len() as u64 {
            return None;
        }
        let e = EntryRef::from_header(at, header);
        let maps = segs.map_all(std::iter::once(&e), committed).ok()?;
        let stored = segs.payload(&maps, &e, false).ok()?;
        (stored == payload).then_some(e)
    }

    /// Commits the step: appends the commit record, syncs, and returns once
    /// the step is durable.
    pub fn commit(mut self) -> Result<StepInfo> {
        self.finished = true;
        self.content = None;
        let manifest = Manifest {
            step: self.step,
            time_ms: now_ms(),
            entries: std::mem::take(&mut self.entries),
            metrics: std::mem::take(&mut self.metrics),
            replay: std::mem::take(&mut self.replay),
            new_bytes: self.new_bytes,
        };
        let step = self.step;
        let dropped = std::mem::take(&mut self.dropped);
        let store = self.db.store();
        let root = self
            .w
            .commit(store, RootChange::AddStep { manifest, dropped })?;
        let live = root
            .record
            .live
            .iter()
            .find(|l| l.step == step)
            .ok_or(Error::StepNotFound { step })?;
        Ok(StepInfo::from_live(live, &root.record.tags))
    }

    /// Abandons the transaction (what dropping it does), reporting an error
    /// if the log could not be cut back.
    pub fn abort(mut self) -> Result<()> {
        self.finished = true;
        let mark = self.mark;
        self.w.log.rollback(mark)
    }
}

impl Drop for StepTx<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // On failure the writer is poisoned, and the next open cuts the
            // uncommitted bytes off instead.
            let _ = self.w.log.rollback(self.mark);
        }
    }
}

impl EntrySink for StepTx<'_> {
    fn db(&self) -> &Db {
        self.db
    }

    fn begin_position(&self) -> Location {
        self.mark.position()
    }

    fn recorded(&self, name: &str) -> Option<&ReplayTableState> {
        self.replay.get(name)
    }

    fn write_entry(
        &mut self,
        key: &str,
        kind: Kind,
        dtype: Option<DType>,
        shape: Vec<u64>,
        payload: &[u8],
    ) -> Result<EntryRef> {
        StepTx::write_entry(self, key, kind, dtype, shape, payload)
    }

    fn pins(&mut self) -> &mut PinSet {
        &mut self.w.pins
    }
}
