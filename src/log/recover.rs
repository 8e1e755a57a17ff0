//! Finding the newest valid root.
//!
//! Segments are scanned with positioned reads, not memory maps: the tail of
//! the newest segment may hold torn or uncommitted bytes that a writer could
//! still truncate, and mapping them would break the rule of `crate::mmap`.
//!
//! # Algorithm
//!
//! 1. Take the newest segment whose header is valid (a torn header means the
//!    segment was being created when the process died; it holds nothing
//!    committed).
//! 2. Walk its entry chain from the start (or from a known root): decode each
//!    header, check its crc and that sequence numbers increase, skip the
//!    payload by its length. The chain ends at the first header that does not
//!    decode or an entry that runs past the end of the file: that is the torn
//!    tail. Remember the last commit record whose payload checks out.
//! 3. If the segment holds no commit record, the root is the one its header
//!    names (the newest root when the segment was created).
//! 4. A commit record is only a root if the entries it wrote are intact: the
//!    writer syncs once, after the record, so a crash can persist the record
//!    and lose an entry written just before it. Entries the record's step
//!    names that lie after the previous root are read and checked (header and
//!    payload crc). If one fails, fall back to the previous root and repeat.
//!
//! The cost is the newest segment's entry headers plus the payloads of the
//! last commit: it grows with the tail, not with the database.

use std::fs::File;
use std::path::Path;

use super::{list_segments, read_at, segment_path, FoundRoot};
use crate::error::{Error, Result};
use crate::format::{
    EntryHeader, HeaderError, Kind, Location, SegmentHeader, SegmentHeaderError, FORMAT_VERSION,
    MAX_HEADER_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use crate::record::{CommitRecord, EntryRef};
use crate::storage::Storage;

/// What recovery learned about the log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub root: Option<FoundRoot>,
    /// Segments present, ascending.
    pub segments: Vec<u64>,
}

/// How much checking to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Validate {
    /// Check every entry the newest root wrote (writer open).
    Tail,
    /// Check the headers of the entries the newest root wrote, not their
    /// payloads (read-only open, which must stay cheap); payloads are
    /// checked on access.
    Headers,
}

/// Finds the newest valid root. `hint` is a root known to be valid from
/// which to start scanning (the catalog's, or a reader's previous root).
pub(crate) fn find_root(
    log_dir: &Path,
    hint: Option<Location>,
    validate: Validate,
) -> Result<Recovered> {
    let segments = list_segments(log_dir)?;
    let mut candidate: Option<FoundRoot> = None;
    // True while every segment newer than the one at hand had a torn header.
    let mut torn_tail = true;
    for &id in segments.iter().rev() {
        if let Some(h) = hint {
            if id < h.segment {
                break;
            }
        }
        let path = segment_path(log_dir, id);
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let head = read_at(&file, &path, 0, SEGMENT_HEADER_LEN as usize)?;
        let header = match SegmentHeader::decode(&head) {
            Ok(h) => h,
            Err(SegmentHeaderError::Version(v)) => {
                return Err(Error::IncompatibleVersion {
                    path,
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
            // A bad header on the newest segment: it was being created when
            // the writer stopped. The header is synced with the segment's
            // first commit, so a segment whose header is lost holds nothing
            // that was acknowledged. One transaction can roll through several
            // segments before its only sync, so this holds for every segment
            // of a run of torn headers at the end of the log.
            Err(
                SegmentHeaderError::Short
                | SegmentHeaderError::Checksum
                | SegmentHeaderError::BadMagic,
            ) if torn_tail => continue,
            Err(e) => return Err(Error::corruption(&path, 0, e.to_string())),
        };
        torn_tail = false;
        if header.id != id {
            return Err(Error::corruption(
                &path,
                0,
                format!("segment header names segment {}", header.id),
            ));
        }
        let start = match hint {
            Some(h) if h.segment == id => h.offset,
            _ => SEGMENT_HEADER_LEN,
        };
        if let Some(found) = last_root_in(&file, &path, id, start)? {
            candidate = Some(found);
            break;
        }
        if let Some(prev) = header.prev_root {
            candidate = Some(load_root(log_dir, prev)?);
            break;
        }
        if hint.is_none() {
            // The oldest segment without a root: the database is empty.
            break;
        }
    }
    if hint.is_some() && candidate.is_none() {
        // The hint did not lead to a root (a stale catalog): never conclude
        // from it that the log is empty.
        return find_root(log_dir, None, validate);
    }
    let mut root = candidate;
    {
        while let Some(r) = root.take() {
            match check_tail(log_dir, &r, validate) {
                Ok(()) => {
                    root = Some(r);
                    break;
                }
                Err(_) => match r.record.prev_root {
                    Some(prev) => root = Some(load_root(log_dir, prev)?),
                    None => root = None,
                },
            }
            if root.is_none() {
                break;
            }
        }
    }
    Ok(Recovered { root, segments })
}

/// Where the writer's log continues after [`cut_tail`].
#[derive(Debug)]
pub(crate) struct Tail {
    /// The root's location and the end of its entry, where appends go.
    pub root: Option<(Location, u64)>,
    /// Sequence number of the next entry.
    pub next_seq: u64,
    /// Number of the first segment to create when there is no root.
    pub first_id: u64,
}

/// Cuts off everything after the root `rec` found: torn entries, an
/// uncommitted transaction, segments it created. Then makes the root and
/// the segments its step wrote durable. Only a writer calls this.
pub(crate) fn cut_tail(storage: &dyn Storage, log_dir: &Path, rec: &Recovered) -> Result<Tail> {
    match &rec.root {
        Some(r) => {
            let mut changed = false;
            for &id in rec.segments.iter().filter(|&&id| id > r.at.segment) {
                let p = segment_path(log_dir, id);
                storage
                    .remove_file(&p)
                    .map_err(|e| Error::io("remove", &p, e))?;
                changed = true;
            }
            let p = segment_path(log_dir, r.at.segment);
            let f = storage.open(&p).map_err(|e| Error::io("open", &p, e))?;
            if f.len().map_err(|e| Error::io("stat", &p, e))? > r.end {
                f.set_len(r.end).map_err(|e| Error::io("truncate", &p, e))?;
            }
            // The root may so far live only in the operating system's
            // cache: the last writer was killed after writing it but
            // before its fsync returned. New commits will build on it, so
            // make it and every segment its step wrote to durable first
            // (a later fsync of the active segment would not cover an
            // older one).
            f.sync_data().map_err(|e| Error::io("fdatasync", &p, e))?;
            let first = r.record.prev_root.map_or(0, |l| l.segment);
            for &id in rec
                .segments
                .iter()
                .filter(|&&id| id >= first && id < r.at.segment)
            {
                let p = segment_path(log_dir, id);
                let f = storage.open(&p).map_err(|e| Error::io("open", &p, e))?;
                f.sync_data().map_err(|e| Error::io("fdatasync", &p, e))?;
                changed = true;
            }
            if changed {
                storage
                    .sync_dir(log_dir)
                    .map_err(|e| Error::io("fsync", log_dir, e))?;
            }
            Ok(Tail {
                root: Some((r.at, r.end)),
                next_seq: r.record.next_seq,
                first_id: 0,
            })
        }
        None => {
            // No commit ever became durable: whatever segments exist hold
            // an unacknowledged first transaction.
            for &id in &rec.segments {
                let p = segment_path(log_dir, id);
                storage
                    .remove_file(&p)
                    .map_err(|e| Error::io("remove", &p, e))?;
            }
            Ok(Tail {
                root: None,
                next_seq: 1,
                first_id: rec.segments.last().map_or(0, |&l| l + 1),
            })
        }
    }
}

/// [`find_root`] for a read-only handle, which can race with the writer's
/// reclamation: a segment listed a moment ago (or named by a segment header
/// as the previous root's home) can be deleted before it is opened. The
/// writer deletes a segment only after a newer durable root stopped naming
/// it, so listing the directory again finds that newer root.
pub(crate) fn find_root_racing(log_dir: &Path, hint: Option<Location>) -> Result<Recovered> {
    let mut hint = hint;
    let mut tries = 0;
    // The segments present after the previous miss.
    let mut seen: Option<Vec<u64>> = None;
    loop {
        match find_root(log_dir, hint, Validate::Headers) {
            Err(Error::Io { path, source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && path.parent() == Some(log_dir)
                    && tries < 5 =>
            {
                // A writer reclaiming space deletes segments and creates
                // newer ones, so two misses with the same segments present
                // in between mean nothing moved: the log names (in a
                // segment header or a commit record) a segment that is
                // gone, which is damage, not a race.
                let now = list_segments(log_dir)?;
                if seen.as_ref() == Some(&now) {
                    return Err(Error::corruption(
                        path,
                        0,
                        "the segment is missing, but a newer segment or commit names a root in it",
                    ));
                }
                seen = Some(now);
                tries += 1;
                hint = None;
            }
            r => return r,
        }
    }
}

/// Walks the entry chain of one segment from `start` and returns the last
/// commit record whose header and payload check out.
///
/// A header that does not decode ends the chain only if nothing valid
/// follows it: the walk resynchronises at the next 64-byte boundary that
/// holds a valid header with a higher sequence number. Without that, one
/// flipped bit in an old entry header would hide every later commit of the
/// segment, and a writer would then cut them off as a "torn tail".
fn last_root_in(file: &File, path: &Path, id: u64, start: u64) -> Result<Option<FoundRoot>> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut window = Window::default();
    let mut off = start;
    let mut last_seq: Option<u64> = None;
    let mut found = None;
    while off + 64 <= len {
        let want = MAX_HEADER_LEN.min((len - off) as usize);
        let bytes = window.get(file, path, off, want)?;
        let header = match EntryHeader::decode(bytes) {
            Ok(h) if last_seq.is_none_or(|s| h.seq > s) => h,
            Err(HeaderError::Version(v)) => {
                return Err(Error::IncompatibleVersion {
                    path: path.to_owned(),
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
            Ok(_) | Err(_) => match next_magic(file, path, off + 64, len)? {
                Some(next) => {
                    off = next;
                    continue;
                }
                None => break,
            },
        };
        let Some(end) = off.checked_add(header.entry_size()).filter(|&e| e <= len) else {
            // Runs past the end: a torn payload, or a damaged length.
            match next_magic(file, path, off + 64, len)? {
                Some(next) => {
                    off = next;
                    continue;
                }
                None => break,
            }
        };
        last_seq = Some(header.seq);
        // The next header is at `end`: read ahead from there only after a
        // small entry (runs of small entries share one read); after a
        // large one, a read-ahead would mostly read payload bytes of
        // whatever follows.
        window.read_ahead = if header.entry_size() < Window::default().read_ahead as u64 {
            Window::default().read_ahead
        } else {
            0
        };
        if header.kind == Kind::Commit {
            let at = Location {
                segment: id,
                offset: off,
            };
            if let Ok(record) = read_record(file, path, off, &header) {
                found = Some(FoundRoot { at, end, record });
            }
        }
        off = end;
    }
    Ok(found)
}

/// A read-ahead buffer for walking entry headers: small entries are read a
/// megabyte at a time instead of one system call each.
struct Window {
    at: u64,
    /// Reused across refills: zeroing a fresh megabyte on every refill cost
    /// more than reading it (`buf` is initialised once, when it grows).
    buf: Vec<u8>,
    /// Bytes of `buf` the last refill read.
    valid: usize,
    /// Bytes read per refill (at least what the caller asks for).
    read_ahead: usize,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            at: 0,
            buf: Vec::new(),
            valid: 0,
            read_ahead: 1 << 20,
        }
    }
}

impl Window {
    /// A window that reads exactly what is asked, for a single header.
    fn exact() -> Window {
        Window {
            read_ahead: 0,
            ..Window::default()
        }
    }

    fn get(&mut self, file: &File, path: &Path, off: u64, len: usize) -> Result<&[u8]> {
        let inside = off >= self.at && off + len as u64 <= self.at + self.valid as u64;
        if !inside {
            let want = self.read_ahead.max(len);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            self.valid = read_into(file, path, off, &mut self.buf[..want])?;
            self.at = off;
        }
        let s = (off - self.at) as usize;
        Ok(&self.buf[s..(s + len).min(self.valid)])
    }
}

/// Fills `buf` from `offset`, or less if the file ends first; returns the
/// bytes read.
fn read_into(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(done)
}

/// The first 64-byte aligned offset in `[from, len)` that starts with the
/// entry magic. Reads in large windows so that skipping a torn multi-GiB
/// payload costs one sequential pass over it.
fn next_magic(file: &File, path: &Path, from: u64, len: u64) -> Result<Option<u64>> {
    const WINDOW: u64 = 8 << 20;
    let mut pos = from;
    while pos + 64 <= len {
        let n = WINDOW.min(len - pos) as usize;
        let buf = read_at(file, path, pos, n)?;
        if let Some(i) = buf
            .chunks(64)
            .position(|c| c.len() >= 4 && c[..4] == crate::format::ENTRY_MAGIC)
        {
            return Ok(Some(pos + 64 * i as u64));
        }
        if buf.len() < n {
            break;
        }
        pos += n as u64;
    }
    Ok(None)
}

/// Reads and checks the payload of a commit record whose header is decoded.
fn read_record(file: &File, path: &Path, off: u64, header: &EntryHeader) -> Result<CommitRecord> {
    if header.payload_len > MAX_RECORD_LEN {
        return Err(Error::corruption(
            path,
            off,
            "commit record over the size limit",
        ));
    }
    let payload = read_at(
        file,
        path,
        off + header.payload_offset(),
        header.payload_len as usize,
    )?;
    if payload.len() as u64 != header.payload_len {
        return Err(Error::corruption(path, off, "commit record cut short"));
    }
    let actual = crc32fast::hash(&payload);
    if actual != header.payload_crc {
        return Err(Error::ChecksumMismatch {
            path: path.to_owned(),
            offset: off,
            key: "commit record".into(),
            expected: header.payload_crc,
            actual,
        });
    }
    CommitRecord::decode(&payload)
        .map_err(|e| Error::corruption(path, off, format!("commit record does not decode: {e}")))
}

/// Loads the commit record at `at`.
pub(crate) fn load_root(log_dir: &Path, at: Location) -> Result<FoundRoot> {
    let path = segment_path(log_dir, at.segment);
    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let (header, end) = read_header(&file, &path, at.offset)?;
    if header.kind != Kind::Commit {
        return Err(Error::corruption(
            &path,
            at.offset,
            "expected a commit record",
        ));
    }
    let record = read_record(&file, &path, at.offset, &header)?;
    Ok(FoundRoot { at, end, record })
}

/// Reads and decodes the entry header at `off`; returns it and the entry end.
pub(crate) fn read_header(file: &File, path: &Path, off: u64) -> Result<(EntryHeader, u64)> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    read_header_in(file, len, path, off)
}

/// [`read_header`] for a file whose length is known.
fn read_header_in(file: &File, len: u64, path: &Path, off: u64) -> Result<(EntryHeader, u64)> {
    read_header_via(&mut Window::exact(), file, len, path, off)
}

/// [`read_header_in`] through a read-ahead window, for walking many entries
/// in ascending order.
fn read_header_via(
    window: &mut Window,
    file: &File,
    len: u64,
    path: &Path,
    off: u64,
) -> Result<(EntryHeader, u64)> {
    if !off.is_multiple_of(64) || off < SEGMENT_HEADER_LEN || off >= len {
        return Err(Error::corruption(
            path,
            off,
            "entry location outside the segment",
        ));
    }
    let bytes = window.get(file, path, off, MAX_HEADER_LEN.min((len - off) as usize))?;
    let header = EntryHeader::decode(bytes).map_err(|e| match e {
        HeaderError::Version(v) => Error::IncompatibleVersion {
            path: path.to_owned(),
            found: v,
            supported: FORMAT_VERSION,
        },
        e => Error::corruption(path, off, e.to_string()),
    })?;
    let end = off
        .checked_add(header.entry_size())
        .filter(|&e| e <= len)
        .ok_or_else(|| Error::corruption(path, off, "entry runs past the end of the segment"))?;
    Ok((header, end))
}

/// Checks every entry the root's step wrote after the previous root: headers
/// and payloads for the writer, headers only for a reader.
fn check_tail(log_dir: &Path, root: &FoundRoot, validate: Validate) -> Result<()> {
    let Some(manifest) = &root.record.step else {
        return Ok(());
    };
    let after = root.record.prev_root.unwrap_or(Location {
        segment: 0,
        offset: 0,
    });
    // A commit can hold thousands of entries: walk them in log order, one
    // open file and one read-ahead window per segment.
    let mut tail: Vec<&EntryRef> = manifest
        .entry_refs()
        .filter(|e| e.at > after && e.at < root.at)
        .collect();
    tail.sort_by_key(|e| e.at);
    let mut open: Option<(u64, std::path::PathBuf, File, u64, Window)> = None;
    for (i, &e) in tail.iter().enumerate() {
        if open.as_ref().is_none_or(|o| o.0 != e.at.segment) {
            let path = segment_path(log_dir, e.at.segment);
            let file = File::open(&path).map_err(|err| Error::io("open", &path, err))?;
            let len = file
                .metadata()
                .map_err(|err| Error::io("stat", &path, err))?
                .len();
            // The previous segment's buffer is reused (it is already
            // initialised), not what it holds.
            let window = Window {
                buf: open.take().map(|o| o.4.buf).unwrap_or_default(),
                ..Window::default()
            };
            open = Some((e.at.segment, path, file, len, window));
        }
        if let Some((_, path, file, len, window)) = open.as_mut() {
            // Read ahead only when the next header lies within the window:
            // past a large payload, a read-ahead reads payload bytes that a
            // header check never looks at (16 MiB per open for 16 tensors
            // of 64 MiB).
            let next_near = tail.get(i + 1).is_some_and(|n| {
                n.at.segment == e.at.segment
                    && n.at.offset - e.at.offset < Window::default().read_ahead as u64
            });
            window.read_ahead = if next_near {
                Window::default().read_ahead
            } else {
                0
            };
            check_entry(window, file, *len, path, e, validate == Validate::Tail)?;
        }
    }
    Ok(())
}

/// Reads one entry with positioned reads and checks its header against the
/// reference, and with `payload` its payload crc too.
fn check_entry(
    window: &mut Window,
    file: &File,
    len: u64,
    path: &Path,
    e: &EntryRef,
    payload: bool,
) -> Result<()> {
    let (header, _) = read_header_via(window, file, len, path, e.at.offset)?;
    if header.key != e.stored_key || header.payload_len != e.len || header.payload_crc != e.crc {
        return Err(Error::corruption(
            path,
            e.at.offset,
            "entry does not match its manifest",
        ));
    }
    if !payload {
        return Ok(());
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut off = e.at.offset + header.payload_offset();
    let end = off + header.payload_len;
    const CHUNK: u64 = 8 << 20;
    while off < end {
        let n = CHUNK.min(end - off) as usize;
        let buf = read_at(file, path, off, n)?;
        if buf.len() != n {
            return Err(Error::corruption(path, e.at.offset, "payload cut short"));
        }
        hasher.update(&buf);
        off += n as u64;
    }
    let actual = hasher.finalize();
    if actual != e.crc {
        return Err(Error::ChecksumMismatch {
            path: path.to_owned(),
            offset: e.at.offset,
            key: e.stored_key.clone(),
            expected: e.crc,
            actual,
        });
    }
    Ok(())
}
