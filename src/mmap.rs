//! Read-only memory maps of segment files. This is the only module of the
//! crate that contains `unsafe` code.
//!
//! # Why mapping a segment is sound
//!
//! `memmap2::Mmap::map` is `unsafe` because Rust assumes that the bytes behind
//! a `&[u8]` do not change, while a file can be rewritten or truncated by
//! anyone while it is mapped (a truncation turns later accesses into SIGBUS).
//! ckptdb maps only byte ranges that can no longer change:
//!
//! 1. **Committed bytes are never rewritten.** Segments are append-only; an
//!    entry, once a durable commit record names it, is never written again.
//! 2. **Files are only truncated above the newest root.** The writer cuts a
//!    segment only to drop a torn tail (on recovery) or the entries of an
//!    aborted transaction, both of which lie after the newest commit record.
//! 3. **A mapping never extends past committed data.** A segment older than
//!    the one holding the root is committed in full (the writer rolls to a new
//!    segment only by appending, and recovery deletes every segment after the
//!    root's). In the root's own segment only the prefix ending with the root
//!    record is mapped. Both lengths are known before the map is made.
//! 4. **Space comes back by unlinking whole files.** An unlinked file stays
//!    readable through existing maps until they are dropped, so a reader
//!    holding a snapshot keeps valid bytes while compaction deletes segments.
//!    Compaction appends its copies to the active segment (so rule 3 still
//!    holds: everything before the newest root is committed) and unlinks a
//!    segment only after a durable root stopped naming it; it never unlinks
//!    the active segment or the segments holding the newest root and the root
//!    before it. A reader whose older root names an unlinked segment gets
//!    `NotFound` when it maps it, moves to the newer root and retries.
//!
//! 5. **Pinned bytes are never truncated either.** Replay tables append a
//!    full page as an entry while no step transaction is open, and read it
//!    back through a map before any commit names it. Such bytes lie above
//!    the newest root, yet this process never cuts them: the writer truncates
//!    only (a) on transaction rollback, back to the mark taken when that
//!    transaction began — and a transaction that begins later takes its mark
//!    at or after the current end of the log — and (b) during recovery in a
//!    `Db::open`, which cannot run while this process holds the write lock
//!    (a replay table borrows its `Db`, so its maps are gone before the lock
//!    is released). So every byte below the writer's position at a moment
//!    when no transaction is open is *pinned* for the life of this process;
//!    [`Mapping::map_range`] maps only such ranges (or committed ones). If
//!    the process dies first, recovery drops the uncommitted pages together
//!    with every map of them.
//!
//! Bytes outside that discipline — another program truncating or editing a
//! segment by hand — cannot be defended against by any mmap-based reader; the
//! file length is checked against the requested range before mapping, so a
//! file that is already short gives a typed error rather than a SIGBUS.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

/// A read-only map of the first `len` bytes of a segment file.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: Option<memmap2::Mmap>,
}

impl Mapping {
    /// Maps `[0, len)` of the file at `path`. `len` must lie within committed
    /// data (see the module documentation); a file shorter than `len` is an
    /// `UnexpectedEof` error.
    pub(crate) fn map(path: &Path, len: u64) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping { map: None });
        }
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        if file_len < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file is {file_len} bytes, committed data ends at {len}"),
            ));
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large to map"))?;
        // SAFETY: the range [0, len) is committed data, which the writer never
        // rewrites or truncates (module documentation, rules 1-3), and the
        // file was checked to be at least that long.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
        Ok(Mapping { map: Some(map) })
    }

    /// Maps `[offset, offset + len)` of the file at `path`. The range must be
    /// committed or pinned (module documentation, rules 1-3 and 5); a file
    /// that ends before the range is an `UnexpectedEof` error.
    pub(crate) fn map_range(path: &Path, offset: u64, len: u64) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping { map: None });
        }
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
        if file_len < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file is {file_len} bytes, the range ends at {end}"),
            ));
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large to map"))?;
        // SAFETY: the range is committed or pinned data, which this process
        // never rewrites or truncates (module documentation, rules 1-3 and
        // 5), and the file was checked to hold all of it.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(&file)?
        };
        Ok(Mapping { map: Some(map) })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Number of mapped bytes.
    pub(crate) fn len(&self) -> u64 {
        self.bytes().len() as u64
    }
}
