//! The byte layout of segments and entries (see `docs/FORMAT.md`).
//!
//! Everything here is pure: encode to bytes, decode from bytes. Decoding
//! validates every length against the hard limits and against the bytes
//! actually available before anything is allocated or sliced.

pub(crate) mod entry;
mod segment;

pub(crate) use entry::EntryHeader;
pub use entry::Kind;
pub(crate) use entry::{entry_size, HeaderError, ENTRY_FIXED_LEN, ENTRY_MAGIC};
pub(crate) use segment::{
    parse_segment_file_name, segment_file_name, SegmentHeader, SegmentHeaderError,
};

use serde::{Deserialize, Serialize};

/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Alignment of every entry and payload within a segment file.
pub(crate) const ALIGN: u64 = 64;
/// Length of the segment header; the first entry starts here.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 64;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Highest tensor rank.
pub const MAX_RANK: usize = 16;
/// Longest entry header (fixed part, key and shape).
pub(crate) const MAX_HEADER_LEN: usize = ENTRY_FIXED_LEN + MAX_KEY_LEN + 8 * MAX_RANK;
/// Largest payload of one entry (1 TiB).
pub const MAX_PAYLOAD_LEN: u64 = 1 << 40;
/// Largest commit or manifest record that is decoded into memory (1 GiB).
pub const MAX_RECORD_LEN: u64 = 1 << 30;

/// Rounds `n` up to the next multiple of [`ALIGN`]; `None` on overflow.
pub(crate) fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// A position in the log: a segment and a byte offset in it. Where an entry
/// starts, and also where the committed bytes or a transaction's mark end.
/// Positions order as the log does: by segment, then by offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    /// The segment's number (its file name).
    pub segment: u64,
    /// Offset of the entry's header in the segment file.
    pub offset: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {} offset {}", self.segment, self.offset)
    }
}
