//! Replay tables: reinforcement-learning transitions as ring-buffer pages in
//! the log, part of every step snapshot.
//!
//! # Model
//!
//! A table has a name, a typed [`Schema`], a capacity and a page size
//! ([`ReplayOptions`]). [`Db::replay_table`] creates it, or reopens it as
//! the newest snapshot recorded it (a different schema or geometry is an
//! error); [`Db::replay_table_at`] reopens it as an older step recorded it,
//! to continue from there. Transitions are pushed into the table; a step
//! records the table with [`StepTx::put_replay`], and restoring that step —
//! [`Snapshot::replay`] for a read-only view that can also sample, or
//! `replay_table_at` — gives back exactly the transitions present then:
//! nothing lost, nothing extra. A transaction begun with
//! [`Db::begin_step_from`] inherits the parent's recorded state, so a step
//! that does not call `put_replay` repeats the parent's table.
//!
//! # Storage
//!
//! Rows fill an in-memory page; a full page is appended to the log as one
//! entry (`Kind::ReplayPage`) straight away and read back through a map
//! from then on (see `table.rs` for why that is sound before any commit
//! names it). The ring maps each page number to its newest entry. A commit
//! writes the partial page, the ring counters and (for prioritized tables)
//! the priorities, and references the full pages: a page shared by many
//! snapshots is stored once, and an unchanged partial page or priority array
//! is shared by content (the transaction's dedup).
//!
//! Heap use is the page being filled, the full pages waiting for their write
//! batch and page buffers kept for reuse (up to three batches of
//! [`ReplayOptions::write_batch`], 2 MiB by default), a few words per page,
//! and for a prioritized table 4 bytes per slot plus a small tree
//! (`sumtree.rs`).
//!
//! # Format
//!
//! A step's manifest holds, per table, a `ReplayTableState`:
//!
//! | field     | what                                                          |
//! |-----------|---------------------------------------------------------------|
//! | `schema`  | postcard of `{version: u8 = 1, fields: [{name, dtype, shape}], capacity, page_size, alpha: Option<f64>}` |
//! | `pages`   | one reference per page number (`ceil(capacity / page_size)`), `None` until the page first fills |
//! | `partial` | the rows of the page being filled, when it holds any          |
//! | `side`    | priorities of a prioritized table                             |
//! | `ring`    | postcard of `{total: u64, max_priority: f64}`                 |
//!
//! Entries: a page is `Kind::ReplayPage`, dtype `u8`, shape
//! `[rows, row_bytes]`, key `replay:<table>/page/<k>`, payload the packed
//! rows (fields' little-endian bytes in schema order, no padding); the
//! partial page is the same with key `replay:<table>/partial`; priorities are
//! `Kind::ReplayState`, dtype `f32`, shape `[capacity]`, key
//! `replay:<table>/priorities`, payload `p^α` per slot (0 for an empty
//! slot). `total` alone fixes which slots are occupied, which page is being
//! filled and how many of its rows are in `partial`; restoring checks every
//! reference against that geometry.
//!
//! ```no_run
//! use ckptdb::replay::{Field, ReplayOptions, Schema};
//! use ckptdb::Db;
//! use rand::SeedableRng;
//!
//! # fn main() -> ckptdb::Result<()> {
//! let db = Db::open("run.ckpt")?;
//! let schema = Schema::parse("obs: f32[4], action: i64[], reward: f32[], done: bool[]")?;
//! let mut table = db.replay_table("buffer", &schema, ReplayOptions::new(1_000_000, 1024))?;
//! let (obs, action, reward, done) = ([0.0f32; 4], 1i64, 1.0f32, false);
//! table.push(&[
//!     Field::vector("obs", &obs),
//!     Field::scalar("action", &action),
//!     Field::scalar("reward", &reward),
//!     Field::scalar("done", &done),
//! ])?;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let batch = table.sample_uniform(&mut rng, 1)?;
//! assert_eq!(batch.view::<f32>("obs")?.shape(), &[1, 4]);
//!
//! let mut tx = db.begin_step(1)?;
//! tx.put_replay(&mut table)?;
//! tx.commit()?;
//! # Ok(())
//! # }
//! ```

mod fill;
mod packed;
mod ring;
mod sample;
mod schema;
pub(crate) mod sink;
mod sumtree;
mod table;

use rand::Rng;

pub use sample::{Batch, Column, SampleIndex};
pub use schema::{
    Field, FieldSpec, ReplayOptions, Schema, DEFAULT_WRITE_BATCH, MAX_CAPACITY, MAX_FIELDS,
    MAX_PAGE_BYTES, MAX_ROW_BYTES, MAX_WRITE_BATCH,
};
pub(crate) use table::ReplayCapture;
pub use table::ReplayTable;

use crate::db::Db;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::txn::StepTx;
use ring::Ring;

/// One stored transition, copied out of its page.
#[derive(Clone, Debug)]
pub struct Row<'t> {
    schema: &'t Schema,
    table: &'t str,
    bytes: &'t [u8],
    index: SampleIndex,
}

impl<'t> Row<'t> {
    /// Slot and serial of the transition.
    pub fn index(&self) -> SampleIndex {
        self.index
    }

    /// The packed row: every field's bytes in schema order.
    pub fn bytes(&self) -> &'t [u8] {
        self.bytes
    }

    fn field_bytes<T: Element>(&self, name: &str) -> Result<(&'t [u8], &'t FieldSpec)> {
        let i = self.schema.index_of(name).ok_or_else(|| Error::NotFound {
            what: format!("field {name:?} in replay table {:?}", self.table),
        })?;
        let spec = &self.schema.fields()[i];
        if spec.dtype != T::DTYPE {
            return Err(Error::DtypeMismatch {
                key: format!("{}/{name}", self.table),
                stored: spec.dtype,
                requested: T::DTYPE,
            });
        }
        let o = self.schema.offset(i);
        Ok((&self.bytes[o..o + self.schema.size(i)], spec))
    }

    /// The elements of field `name`, row-major.
    pub fn values<T: Element>(&self, name: &str) -> Result<Vec<T>> {
        let (bytes, _) = self.field_bytes::<T>(name)?;
        bytes
            .chunks_exact(std::mem::size_of::<T>())
            .map(|c| {
                bytemuck::checked::try_pod_read_unaligned::<T>(c).map_err(|_| {
                    Error::invalid(format!(
                        "field {name:?} of replay table {:?} holds an invalid value",
                        self.table
                    ))
                })
            })
            .collect()
    }

    /// The scalar field `name` (the first element of a non-scalar one).
    pub fn scalar<T: Element>(&self, name: &str) -> Result<T> {
        self.values::<T>(name)?
            .first()
            .copied()
            .ok_or_else(|| Error::invalid(format!("field {name:?} has no elements")))
    }

    /// Field `name` as an owned array of the field's shape.
    pub fn array<T: Element>(&self, name: &str) -> Result<ndarray::ArrayD<T>> {
        let (_, spec) = self.field_bytes::<T>(name)?;
        let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
        ndarray::ArrayD::from_shape_vec(shape, self.values::<T>(name)?).map_err(|_| {
            Error::ShapeMismatch {
                what: name.to_owned(),
                expected: spec.shape.clone(),
                actual: vec![],
            }
        })
    }
}

/// A read-only replay table as one snapshot recorded it. Owns its maps, so
/// it outlives the snapshot and the database handle.
#[derive(Debug)]
pub struct ReplayView {
    ring: Ring,
}

impl ReplayView {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.ring.name
    }

    /// The table's schema.
    pub fn schema(&self) -> &Schema {
        &self.ring.schema
    }

    /// Capacity, page size and priority exponent.
    pub fn options(&self) -> ReplayOptions {
        self.ring.opts
    }

    /// Transitions the ring holds at most.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Transitions the table holds now (`min(total_inserted, capacity)`).
    pub fn len(&self) -> u64 {
        self.ring.len()
    }

    /// True when no transition was ever pushed.
    pub fn is_empty(&self) -> bool {
        self.ring.len() == 0
    }

    /// Transitions ever pushed, overwritten ones included.
    pub fn total_inserted(&self) -> u64 {
        self.ring.total
    }

    /// The `i`-th transition held, oldest first (`0..len()`).
    pub fn get(&self, i: u64) -> Result<Row<'_>> {
        let slot = self.ring.slot_of(i).ok_or_else(|| {
            Error::invalid(format!(
                "row {i} of replay table {:?}, which holds {}",
                self.ring.name,
                self.ring.len()
            ))
        })?;
        self.get_slot(slot)
    }

    /// The transition in ring slot `slot` (`0..len()`).
    pub fn get_slot(&self, slot: u64) -> Result<Row<'_>> {
        let serial = self.ring.serial_at(slot).ok_or_else(|| {
            Error::invalid(format!(
                "slot {slot} of replay table {:?}, which holds {}",
                self.ring.name,
                self.ring.len()
            ))
        })?;
        Ok(Row {
            schema: &self.ring.schema,
            table: &self.ring.name,
            bytes: self.ring.row_checked(slot)?,
            index: SampleIndex { slot, serial },
        })
    }

    /// The priority weight `p^α` of `slot` (prioritized tables), as the
    /// sum-tree holds it.
    pub fn priority_weight(&self, slot: u64) -> Option<f64> {
        let t = self.ring.prio.as_ref()?;
        (slot < self.ring.len()).then(|| t.get(slot as usize) as f64)
    }

    /// `n` rows drawn uniformly with replacement.
    pub fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R, n: usize) -> Result<Batch> {
        sample::uniform(&self.ring, rng, n)
    }

    /// `n` distinct rows drawn uniformly (without replacement); more
    /// than `len()` is an error.
    pub fn sample_uniform_distinct<R: Rng + ?Sized>(&self, rng: &mut R, n: usize) -> Result<Batch> {
        sample::uniform_distinct(&self.ring, rng, n)
    }

    /// `n` rows drawn with probability `p^α / Σ p^α` (with replacement),
    /// with importance weights `(N·P(i))^-β` divided by their largest
    /// possible value (see [`Batch::weights`]).
    pub fn sample_prioritized<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        n: usize,
        beta: f64,
    ) -> Result<Batch> {
        sample::prioritized(&self.ring, rng, n, beta)
    }
}

impl Db {
    /// Opens replay table `name`: as the newest live step recorded it, or
    /// empty when that step holds no such table (or there is no step). The
    /// stored schema, capacity, page size and alpha must equal the given
    /// ones. Needs a database opened for writing.
    pub fn replay_table(
        &self,
        name: &str,
        schema: &Schema,
        options: ReplayOptions,
    ) -> Result<ReplayTable<'_>> {
        ReplayTable::open(self, name, schema, options, None)
    }

    /// Opens replay table `name` as live step `step` recorded it, to
    /// continue pushing from there (e.g. after restoring an older step).
    pub fn replay_table_at(
        &self,
        name: &str,
        schema: &Schema,
        options: ReplayOptions,
        step: u64,
    ) -> Result<ReplayTable<'_>> {
        ReplayTable::open(self, name, schema, options, Some(step))
    }
}

impl Snapshot {
    /// Names of the replay tables this step recorded, sorted.
    pub fn replay_tables(&self) -> Vec<String> {
        self.manifest().replay.keys().cloned().collect()
    }

    /// Replay table `name` as this step recorded it, read-only.
    pub fn replay(&self, name: &str) -> Result<ReplayView> {
        let state = self
            .manifest()
            .replay
            .get(name)
            .ok_or_else(|| Error::NotFound {
                what: format!("replay table {name:?} in step {}", self.step()),
            })?;
        let ring = Ring::restore(name, state, self.maps(), self.segments())?;
        Ok(ReplayView { ring })
    }
}

impl StepTx<'_> {
    /// Records replay table `table` in this step as it is now (see the
    /// [module documentation](crate::replay)). Call it again after more
    /// pushes to record the newer state.
    pub fn put_replay(&mut self, table: &mut ReplayTable<'_>) -> Result<()> {
        let recorded = table.record(self)?;
        self.insert_replay(recorded);
        Ok(())
    }

    /// Removes replay table `name` from this step (inherited from the
    /// parent). Returns whether it was there.
    pub fn remove_replay(&mut self, name: &str) -> bool {
        self.remove_replay_state(name)
    }
}
