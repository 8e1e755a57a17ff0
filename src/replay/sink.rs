//! The seam between a replay table and the transaction that records it.
//!
//! Recording a table writes a few entries (pending pages, the partial page,
//! the priorities), moves the table's pins, and produces the state a step
//! names. The table needs no more of the transaction than [`EntrySink`]
//! offers, and it gives the state back ([`RecordedTable`]) for the
//! transaction to insert, so a table never edits a transaction's fields.

use crate::db::Db;
use crate::dtype::DType;
use crate::error::Result;
use crate::format::{Kind, Location};
use crate::log::pins::PinSet;
use crate::record::{EntryRef, ReplayTableState};

/// What recording a replay table needs from a transaction.
pub(crate) trait EntrySink {
    /// The database the transaction commits to (a table refuses to be
    /// recorded into another).
    fn db(&self) -> &Db;

    /// Where the log ended when the transaction began: bytes below it are
    /// committed or pinned, bytes above it may still be cut by a rollback.
    fn begin_position(&self) -> Location;

    /// The state of table `name` the transaction holds so far (inherited
    /// from the parent step, or recorded earlier in this transaction).
    fn recorded(&self, name: &str) -> Option<&ReplayTableState>;

    /// Writes an internal entry of the transaction (or finds a committed
    /// duplicate) without naming it in the step.
    fn write_entry(
        &mut self,
        key: &str,
        kind: Kind,
        dtype: Option<DType>,
        shape: Vec<u64>,
        payload: &[u8],
    ) -> Result<EntryRef>;

    /// The writer's pins, which the transaction holds with the writer.
    fn pins(&mut self) -> &mut PinSet;
}

/// A table's state for one step, as recording produced it.
#[derive(Debug)]
pub(crate) struct RecordedTable {
    /// The table's name.
    pub name: String,
    /// What the step names.
    pub state: ReplayTableState,
    /// Payload bytes of full pages that were appended outside any
    /// transaction and that this step is the first to name.
    pub new_bytes: u64,
}
