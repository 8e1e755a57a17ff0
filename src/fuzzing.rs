//! Entry points into internal decoders for the fuzz targets in `fuzz/` and
//! the tests that replay their corpus. Not part of the stable API.
//!
//! Every function here takes arbitrary bytes and must return (an error or a
//! value), never panic, never allocate more than the input justifies.

pub use crate::format::entry::EntryHeader;
use crate::format::{Location, SegmentHeader};
use crate::record::{CommitRecord, Manifest};

/// Decodes an entry header from the start of `bytes`.
pub fn decode_entry_header(bytes: &[u8]) -> Result<EntryHeader, String> {
    EntryHeader::decode(bytes).map_err(|e| e.to_string())
}

/// Encodes `header` (with its padding up to the payload), for round trips.
pub fn encode_entry_header(header: &EntryHeader) -> Vec<u8> {
    let mut out = Vec::new();
    header.encode_into(&mut out);
    out
}

/// Decodes a segment header: the segment number and the previous root.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(u64, Option<Location>), String> {
    SegmentHeader::decode(bytes)
        .map(|h| (h.id, h.prev_root))
        .map_err(|e| e.to_string())
}

/// Decodes a commit record payload; on success returns the record encoded
/// again (a decoded record must re-encode to bytes that decode to the same bytes).
pub fn decode_commit_record(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let r = CommitRecord::decode(bytes).map_err(|e| e.to_string())?;
    let again = r.encode().map_err(|e| e.to_string())?;
    // Compared as bytes: metrics may hold NaN, which is not equal to itself.
    match CommitRecord::decode(&again) {
        Ok(r2) if r2.encode().ok().as_ref() == Some(&again) => Ok(again),
        _ => Err("commit record does not round-trip".into()),
    }
}

/// Decodes a manifest payload (as compaction writes them).
pub fn decode_manifest(bytes: &[u8]) -> Result<(), String> {
    Manifest::decode(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The file name of segment `id` under `log/`.
pub fn segment_file_name(id: u64) -> String {
    crate::format::segment_file_name(id)
}
