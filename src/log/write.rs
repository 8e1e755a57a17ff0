//! Appending entries to the log.
//!
//! The writer appends to the active segment through the storage seam. Small
//! entries are coalesced in a buffer, and a full buffer is written by the
//! log's background thread while the next one fills (`super::background`);
//! a replay table's full pages are queued for that thread too, shared, not
//! copied. A large payload is written straight from the caller's slice, so
//! a commit never holds a second copy of a big tensor. Nothing is synced
//! until [`LogWriter::sync`], which the commit calls once after the commit
//! record: `fdatasync` on every segment written since the last sync (oldest
//! first), and a directory fsync when a segment file was created.
//!
//! Any I/O error poisons the writer: after a failed write or fsync the state
//! of the file is unknown (a failed fsync may have dropped dirty pages), so
//! the only safe continuation is to reopen and recover from the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::background::{Background, Piece, PieceBytes};
use super::segment_path;
use crate::error::{Error, Result};
use crate::format::{
    EntryHeader, Kind, Location, SegmentHeader, ALIGN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use crate::storage::{Storage, StorageFile};

/// Payloads at least this large bypass the buffer.
const DIRECT_WRITE: usize = 256 << 10;
/// The buffer is flushed when it grows past this.
const BUFFER_LIMIT: usize = 1 << 20;

/// Where the log ended when a transaction began, to undo it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    segment: u64,
    pos: u64,
    next_seq: u64,
}

impl Mark {
    /// Where the log ended when the mark was taken.
    pub(crate) fn position(&self) -> Location {
        Location {
            segment: self.segment,
            offset: self.pos,
        }
    }
}

/// The one appender of a database.
#[derive(Debug)]
pub(crate) struct LogWriter {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    active_id: u64,
    active: Arc<dyn StorageFile>,
    /// Logical end of the active segment, buffered bytes included.
    pos: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    /// An empty buffer to swap in when a full one is handed to the
    /// background thread.
    spare: Vec<u8>,
    /// Older segments written since the last sync, still to be synced.
    sealed_dirty: BTreeMap<u64, Arc<dyn StorageFile>>,
    active_dirty: bool,
    dir_dirty: bool,
    next_seq: u64,
    segment_limit: u64,
    /// Newest durable root, for the header of the next segment.
    last_root: Option<Location>,
    poisoned: Option<Arc<Error>>,
    /// The background thread (`super::background`), started by its first
    /// job: a full buffer or a batch of shared payloads.
    background: Option<Background>,
    /// Pieces of entries appended with [`LogWriter::append_shared`] and not
    /// yet handed to the thread.
    queued: Vec<Piece>,
    /// The segment of the job in flight.
    in_flight: u64,
}

impl LogWriter {
    /// Opens the writer at the end of the root's segment (`end`), or creates
    /// segment `first_id` when the log holds no root.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        root: Option<(Location, u64)>,
        next_seq: u64,
        first_id: u64,
        segment_limit: u64,
    ) -> Result<LogWriter> {
        let (active_id, active, pos, dir_dirty) = match root {
            Some((at, end)) => {
                let path = segment_path(dir, at.segment);
                let f = storage
                    .open(&path)
                    .map_err(|e| Error::io("open", &path, e))?;
                (at.segment, Arc::from(f), end, false)
            }
            None => {
                let path = segment_path(dir, first_id);
                let f = storage
                    .create_new(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                (first_id, Arc::from(f), 0, true)
            }
        };
        let mut w = LogWriter {
            storage,
            dir: dir.to_owned(),
            active_id,
            active,
            pos,
            buf: Vec::with_capacity(BUFFER_LIMIT),
            buf_at: pos,
            spare: Vec::new(),
            sealed_dirty: BTreeMap::new(),
            active_dirty: false,
            dir_dirty,
            next_seq,
            segment_limit,
            last_root: root.map(|r| r.0),
            poisoned: None,
            background: None,
            queued: Vec::new(),
            in_flight: 0,
        };
        if root.is_none() {
            w.start_segment(None)?;
            w.sync()?;
        }
        Ok(w)
    }

    /// Hands the queued pieces to the background thread and waits for them
    /// (see [`super::background`]); a failed write poisons the writer. Every
    /// operation starts here, and so does whoever takes the database's
    /// writer.
    pub(crate) fn settle(&mut self) -> Result<()> {
        self.settle_background()?;
        self.check()
    }

    /// [`LogWriter::settle`] for whoever takes the database's writer: only
    /// the error of the background write itself, not an earlier poisoning
    /// (which the taker's first operation reports).
    pub(crate) fn settle_background(&mut self) -> Result<()> {
        self.dispatch()?;
        self.wait_background()
    }

    /// Hands the queued pieces to the background thread, after waiting for
    /// its previous job: the caller goes on while they are written.
    pub(crate) fn dispatch(&mut self) -> Result<()> {
        self.wait_background()?;
        if self.queued.is_empty() {
            return Ok(());
        }
        self.check()?;
        if !self.buf.is_empty() {
            // The padding after the last payload.
            self.queue(PieceBytes::Owned(self.buf.clone()));
            self.buf.clear();
        }
        if self.background.is_none() {
            match Background::start() {
                Ok(b) => self.background = Some(b),
                Err(e) => return Err(self.poison(Error::io("spawn log writer thread", "", e))),
            }
        }
        let pieces = std::mem::take(&mut self.queued);
        self.in_flight = self.active_id;
        if let Some(Err(e)) = self.background.as_mut().map(|b| b.write(pieces)) {
            let path = segment_path(&self.dir, self.active_id);
            return Err(self.poison(Error::io("write", path, e)));
        }
        Ok(())
    }

    /// Waits for the background thread's job in flight, if any.
    fn wait_background(&mut self) -> Result<()> {
        let Some((r, buf)) = self.background.as_mut().and_then(Background::wait) else {
            return Ok(());
        };
        if buf.capacity() > self.spare.capacity() {
            self.spare = buf;
        }
        if let Err(e) = r {
            let path = segment_path(&self.dir, self.in_flight);
            return Err(self.poison(Error::io("write", path, e)));
        }
        Ok(())
    }

    /// Queues `bytes` to be written at the end of what the file holds or
    /// has queued (`buf_at`).
    fn queue(&mut self, bytes: PieceBytes) {
        let len = bytes.len() as u64;
        self.queued.push(Piece {
            file: Arc::clone(&self.active),
            offset: self.buf_at,
            bytes,
        });
        self.buf_at += len;
    }

    /// Fails with [`Error::Poisoned`] once an I/O error has poisoned the writer.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    /// Records `err` as the cause of poisoning and returns it.
    pub(crate) fn poison(&mut self, err: Error) -> Error {
        if self.poisoned.is_none() {
            self.poisoned = Some(Arc::new(err.replicate()));
        }
        err
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn active_segment(&self) -> u64 {
        self.active_id
    }

    /// The active segment and the logical end of the log in it (buffered
    /// bytes included; [`LogWriter::flush`] puts them in the file).
    pub(crate) fn position(&self) -> Location {
        Location {
            segment: self.active_id,
            offset: self.pos,
        }
    }

    /// Writes buffered bytes to the file without syncing, so that a map can
    /// see them.
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.settle()?;
        self.flush_buf()
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            segment: self.active_id,
            pos: self.pos,
            next_seq: self.next_seq,
        }
    }

    /// Writes the header of a fresh active segment into the buffer.
    fn start_segment(&mut self, prev_root: Option<Location>) -> Result<()> {
        let header = SegmentHeader {
            id: self.active_id,
            prev_root,
        };
        debug_assert_eq!(self.pos, 0);
        self.buf.clear();
        self.buf_at = 0;
        self.buf.extend_from_slice(&header.encode());
        self.pos = SEGMENT_HEADER_LEN;
        self.active_dirty = true;
        Ok(())
    }

    /// Hands the full buffer to the background thread and goes on with an
    /// empty one: the buffer is written while the next one fills.
    fn flush_behind(&mut self) -> Result<()> {
        let mut full = std::mem::take(&mut self.spare);
        full.reserve(BUFFER_LIMIT);
        std::mem::swap(&mut full, &mut self.buf);
        self.queue(PieceBytes::Owned(full));
        self.dispatch()
    }

    fn flush_buf(&mut self) -> Result<()> {
        self.settle_background()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.write_at(self.buf_at, &self.buf) {
            let path = segment_path(&self.dir, self.active_id);
            return Err(self.poison(Error::io("write", path, e)));
        }
        self.buf_at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        // A background job never spans two segments.
        self.settle()?;
        self.flush_buf()?;
        let id = self.active_id + 1;
        let path = segment_path(&self.dir, id);
        let file = match self.storage.create_new(&path) {
            Ok(f) => Arc::from(f),
            Err(e) => return Err(self.poison(Error::io("create", path, e))),
        };
        let old = std::mem::replace(&mut self.active, file);
        if self.active_dirty {
            self.sealed_dirty.insert(self.active_id, old);
        }
        self.active_id = id;
        self.pos = 0;
        self.dir_dirty = true;
        self.start_segment(self.last_root)
    }

    /// Appends one entry and returns where it starts. `payload_crc` is the
    /// crc32 of `payload`, which the caller computed (it needs it for dedup).
    /// The log numbers `header` (its `seq`), so the caller can keep it.
    pub(crate) fn append(&mut self, header: &mut EntryHeader, payload: &[u8]) -> Result<Location> {
        debug_assert_eq!(header.payload_len, payload.len() as u64);
        // Only a write waits for the background job (`flush_buf`,
        // `dispatch`): a buffered entry does not, so a buffer fills while
        // the previous one is written.
        self.check()?;
        let at = self.begin_entry(header)?;
        if payload.len() >= DIRECT_WRITE {
            self.flush_buf()?;
            if let Err(e) = self.active.write_at(self.buf_at, payload) {
                let path = segment_path(&self.dir, self.active_id);
                return Err(self.poison(Error::io("write", path, e)));
            }
            self.buf_at += payload.len() as u64;
        } else {
            self.buf.extend_from_slice(payload);
        }
        self.end_entry(at, header)
    }

    /// Like [`LogWriter::append`], but the entry is only queued for the
    /// background thread (see [`super::background`]): it is written once
    /// [`LogWriter::dispatch`] hands the queue over, or by the next
    /// operation on the log, which waits for it. An error writing it
    /// poisons the writer then. The payload is shared, not copied.
    pub(crate) fn append_shared(
        &mut self,
        header: &mut EntryHeader,
        payload: &Arc<Vec<u8>>,
    ) -> Result<Location> {
        debug_assert_eq!(header.payload_len, payload.len() as u64);
        self.check()?;
        let at = self.begin_entry(header)?;
        self.queue(PieceBytes::Owned(self.buf.clone()));
        self.buf.clear();
        self.queue(PieceBytes::Shared(Arc::clone(payload)));
        self.end_entry(at, header)
    }

    /// Numbers `header`, rolls to a new segment if the entry does not fit
    /// the active one, and buffers the encoded header; returns where the
    /// entry starts.
    fn begin_entry(&mut self, header: &mut EntryHeader) -> Result<Location> {
        header.seq = self.next_seq;
        let size = header.entry_size();
        if self.pos > SEGMENT_HEADER_LEN && self.pos.saturating_add(size) > self.segment_limit {
            self.roll()?;
        }
        let at = Location {
            segment: self.active_id,
            offset: self.pos,
        };
        header.encode_into(&mut self.buf);
        Ok(at)
    }

    /// Pads the entry at `at`, whose payload has been written or buffered,
    /// to the alignment and counts it.
    fn end_entry(&mut self, at: Location, header: &EntryHeader) -> Result<Location> {
        let pad = (ALIGN - header.payload_len % ALIGN) % ALIGN;
        self.buf.resize(self.buf.len() + pad as usize, 0);
        self.pos = at.offset + header.entry_size();
        debug_assert_eq!(self.buf_at + self.buf.len() as u64, self.pos);
        self.next_seq += 1;
        self.active_dirty = true;
        if self.buf.len() >= BUFFER_LIMIT {
            self.flush_behind()?;
        }
        Ok(at)
    }

    /// Appends a commit record or manifest: an entry with an empty key whose
    /// payload is a postcard record, checked against the record size limit.
    pub(crate) fn append_record(&mut self, kind: Kind, payload: &[u8]) -> Result<Location> {
        if payload.len() as u64 > MAX_RECORD_LEN {
            return Err(Error::invalid(format!(
                "{} record of {} bytes over the size limit",
                kind.name(),
                payload.len()
            )));
        }
        let mut header = EntryHeader::new(
            kind,
            None,
            String::new(),
            Vec::new(),
            payload.len() as u64,
            crc32fast::hash(payload),
        );
        self.append(&mut header, payload)
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.settle()?;
        self.flush_buf()?;
        let sealed = std::mem::take(&mut self.sealed_dirty);
        for (id, f) in sealed {
            if let Err(e) = f.sync_data() {
                return Err(self.poison(Error::io("fdatasync", segment_path(&self.dir, id), e)));
            }
        }
        if self.active_dirty {
            if let Err(e) = self.active.sync_data() {
                let path = segment_path(&self.dir, self.active_id);
                return Err(self.poison(Error::io("fdatasync", path, e)));
            }
            self.active_dirty = false;
        }
        if self.dir_dirty {
            if let Err(e) = self.storage.sync_dir(&self.dir) {
                return Err(self.poison(Error::io("fsync", self.dir.clone(), e)));
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Records that the root at `at` is durable (the next segment's header
    /// points back to it).
    pub(crate) fn set_last_root(&mut self, at: Location) {
        self.last_root = Some(at);
    }

    /// Undoes everything appended since `mark`: segments created since are
    /// removed and the mark's segment is cut back. Only uncommitted bytes are
    /// touched.
    pub(crate) fn rollback(&mut self, mark: Mark) -> Result<()> {
        self.settle()?;
        if self.mark().pos == mark.pos && self.active_id == mark.segment {
            return Ok(());
        }
        self.buf.clear();
        self.sealed_dirty.clear();
        while self.active_id > mark.segment {
            let path = segment_path(&self.dir, self.active_id);
            if let Err(e) = self.storage.remove_file(&path) {
                return Err(self.poison(Error::io("remove", path, e)));
            }
            self.dir_dirty = true;
            self.active_id -= 1;
            let path = segment_path(&self.dir, self.active_id);
            match self.storage.open(&path) {
                Ok(f) => self.active = Arc::from(f),
                Err(e) => return Err(self.poison(Error::io("open", path, e))),
            }
        }
        if let Err(e) = self.active.set_len(mark.pos) {
            let path = segment_path(&self.dir, self.active_id);
            return Err(self.poison(Error::io("truncate", path, e)));
        }
        self.pos = mark.pos;
        self.buf_at = mark.pos;
        self.next_seq = mark.next_seq;
        Ok(())
    }

    /// Removes a whole segment file (space reclamation). The caller has made
    /// sure no live root names anything in it.
    pub(crate) fn remove_segment(&mut self, id: u64) -> Result<()> {
        self.settle()?;
        let path = segment_path(&self.dir, id);
        if let Err(e) = self.storage.remove_file(&path) {
            return Err(self.poison(Error::io("remove", path, e)));
        }
        self.dir_dirty = true;
        Ok(())
    }
}
