//! The writable replay table: pushing, moving full pages into the log, and
//! recording the table in a step.
//!
//! # Where a full page goes
//!
//! A full page is kept in memory as [`Page::Pending`] until a batch of them
//! ([`ReplayOptions::write_batch`] bytes) has filled; then the batch is
//! appended to the log as *detached* entries: no step transaction is open
//! (the table takes the writer with `try_lock`, and an open `StepTx` holds
//! it), so the entries are *pinned* — this process never truncates them
//! (`crate::mmap`, rule 5) — and the table reads them back through maps
//! from then on. A page becomes committed when a commit's manifest names
//! it (`StepTx::put_replay`); if the process dies first, recovery cuts it
//! off with the rest of the uncommitted tail, which is right: no snapshot
//! refers to it.
//!
//! The log's background thread writes the batch (`crate::log::background`)
//! while the table fills the next one: copying pages into the page cache
//! costs more than filling them, and this way it runs on another core.
//! The next batch first waits for it, so at most one batch is in flight.
//!
//! When the writer is busy (a transaction is open, e.g. a commit running on
//! another thread), the pages stay pending and go with the next batch that
//! finds the writer free. If a commit records the table first, the
//! transaction writes the pending pages as its own entries; once a later
//! call sees such an entry below a point that can no longer be rolled back,
//! and its bytes equal the page's, the table adopts it instead of writing
//! the page again.
//!
//! **Space reclamation respects pinned pages.** A detached page is in no
//! manifest until a commit names it, so nothing counts it as live; a
//! compaction that deleted its segment in between would leave the next
//! snapshot naming a page that is gone. So every detached page is recorded
//! in the writer's pin set when appended, a published root naming it
//! removes it, and reclamation keeps every segment holding a pinned page.
//! A table dropped before recording its pages releases their pins.
//!
//! Once a root names a page it is unpinned, and a later compaction may
//! delete its segment although the open table still holds it (the steps
//! naming it were dropped, or the page was copied forward). The table then
//! reads it through its map of the unlinked file, and its next record
//! writes the page again instead of naming bytes that are gone
//! (`take_back_reclaimed_pages`).
//!
//! # Maps of pinned pages
//!
//! A page just appended stays readable from its own buffer
//! ([`Page::Held`]) until the next batch, which waits for the background
//! write and then maps the held pages together, newest first, so that one
//! remap of a window covers all of them; their buffers are reused for the
//! pages that follow. Remapping a window per page costs five system calls
//! (open, stat, mmap, munmap, close) per page — a sizeable part of a push
//! when pages are a few hundred KiB — while holding a batch costs no extra
//! copy: the buffer moves from the fill slot to the page.
//!
//! Pinned pages are read through maps of *windows* of the file: the window
//! of [`WINDOW`] bytes a page starts in is (re)mapped from its start to the
//! end of the newest page starting in it. Remapping replaces the window's
//! map in place, so the number of maps stays proportional to the bytes the
//! table spans, not to the number of pages.

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::format::{EntryHeader, Kind, Location};
use crate::log::pins::PinSet;
use crate::log::segment_path;
use crate::mmap::Mapping;
use crate::record::{EntryRef, ReplayPart, ReplayTableState};
use crate::writer::Writer;
use crate::DType;

use super::packed::{copy, BoolBytes, RowPlan};
use super::ring::{payload_offset, Page, Refused, Ring};
use super::schema::{match_fields, Field, ReplayOptions, Schema, StoredMeta};
use super::sink::{EntrySink, RecordedTable};
use super::{ReplayView, SampleIndex};

/// Bytes of file one window map starts from.
const WINDOW: u64 = 16 << 20;

/// Batches of page buffers kept for reuse: enough for the pages pending,
/// the batch in flight and the next fill buffer, so that pushing does not
/// fault in fresh memory (a page fault per 4 KiB) in steady state.
const SPARE_BATCHES: usize = 3;

/// A replay table of a database opened for writing: a ring of transitions
/// stored as pages in the log. See the [module documentation](crate::replay).
pub struct ReplayTable<'db> {
    db: &'db Db,
    /// The ring and its read methods, which the table offers as its own
    /// (see the `Deref` below).
    view: ReplayView,
    /// Map index of each pinned window, by (segment, window number).
    windows: HashMap<(u64, u64), u32>,
    /// Pending bytes that make a batch ([`ReplayOptions::write_batch`]).
    write_batch: usize,
    /// Bytes of the `Page::Pending` pages.
    pending_bytes: usize,
    /// The locations this table holds in the writer's pin set.
    pins: std::collections::BTreeSet<Location>,
    /// Pages appended as `Page::Held`, oldest first, with where they were
    /// appended (a page overwritten since may be listed twice, or be held
    /// no more, or be held at another location).
    held: Vec<(usize, Location)>,
    /// Buffers of pages mapped since, reused as fill buffers.
    spare: Vec<Vec<u8>>,
    /// The bool bytes of a packed row (checked by
    /// [`ReplayTable::push_bytes`]).
    bool_bytes: BoolBytes,
    /// How [`ReplayTable::push`] checks and writes a row of named fields.
    plan: RowPlan,
}

/// Writes the values of `column` (`size` bytes each) at `offset` of the
/// consecutive rows of `rs` bytes in `region`.
fn scatter(region: &mut [u8], rs: usize, offset: usize, size: usize, column: &[u8]) {
    fn fixed<const S: usize>(region: &mut [u8], rs: usize, offset: usize, column: &[u8]) {
        for (row, value) in region.chunks_exact_mut(rs).zip(column.chunks_exact(S)) {
            if let (Some(to), Ok(value)) =
                (row.get_mut(offset..offset + S), <[u8; S]>::try_from(value))
            {
                to.copy_from_slice(&value);
            }
        }
    }
    match size {
        0 => {}
        1 => fixed::<1>(region, rs, offset, column),
        2 => fixed::<2>(region, rs, offset, column),
        4 => fixed::<4>(region, rs, offset, column),
        8 => fixed::<8>(region, rs, offset, column),
        16 => fixed::<16>(region, rs, offset, column),
        _ => {
            for (row, value) in region.chunks_exact_mut(rs).zip(column.chunks_exact(size)) {
                if let Some(to) = row.get_mut(offset..offset + size) {
                    to.copy_from_slice(value);
                }
            }
        }
    }
}

#[cold]
fn not_a_bool() -> Error {
    Error::invalid("a bool field holds a byte other than 0 or 1")
}

impl std::fmt::Debug for ReplayTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTable")
            .field("ring", &self.view.ring)
            .field(
                "pending_pages",
                &self
                    .view
                    .ring
                    .pages
                    .iter()
                    .filter(|p| matches!(p, Some(Page::Pending { .. })))
                    .count(),
            )
            .finish_non_exhaustive()
    }
}

fn page_key(table: &str, page: usize) -> String {
    ReplayPart::Page(page).key(table)
}

impl<'db> ReplayTable<'db> {
    pub(crate) fn open(
        db: &'db Db,
        name: &str,
        schema: &Schema,
        opts: ReplayOptions,
        at: Option<u64>,
    ) -> Result<ReplayTable<'db>> {
        crate::key::validate_name("replay table", name)?;
        if db.is_read_only() {
            return Err(Error::ReadOnly);
        }
        opts.validate(schema)?;
        let step = match at {
            Some(s) => Some(s),
            None => db.latest_step(),
        };
        let snap = match step {
            Some(s) => Some(db.snapshot(s)?),
            None => None,
        };
        let ring = match snap
            .as_ref()
            .and_then(|s| s.manifest().replay.get(name).map(|st| (s, st)))
        {
            Some((snap, state)) => {
                let want = StoredMeta::of(schema, &opts).encode();
                if state.schema != want {
                    let have = StoredMeta::decode(&state.schema)
                        .map(|m| {
                            let s = Schema::new(m.fields)
                                .map(|s| s.to_string())
                                .unwrap_or_default();
                            format!("{s} ({})", layout_text(m.capacity, m.page_size, m.alpha))
                        })
                        .unwrap_or_else(|e| e);
                    return Err(Error::invalid(format!(
                        "replay table {name:?} is stored as {have}, not {schema} ({})",
                        layout_text(opts.capacity, opts.page_size, opts.alpha)
                    )));
                }
                Ring::restore(name, state, snap.maps(), snap.segments())?
            }
            None if at.is_some() => {
                return Err(Error::NotFound {
                    what: format!("replay table {name:?} in step {}", at.unwrap_or(0)),
                })
            }
            None => Ring::empty(name, schema.clone(), opts),
        };
        let bool_bytes = BoolBytes::of(&ring.schema);
        let plan = RowPlan::of(&ring.schema);
        let mut table = ReplayTable {
            db,
            view: ReplayView { ring },
            windows: HashMap::new(),
            write_batch: opts.write_batch_bytes(),
            pending_bytes: 0,
            pins: Default::default(),
            held: Vec::new(),
            spare: Vec::new(),
            bool_bytes,
            plan,
        };
        // Pin the recorded pages now, so no reclamation moves them before
        // this table records them again. A transaction holding the writer
        // (on this thread or another) defers that to the next push or
        // record; a page whose segment a compaction deletes in between is
        // written again by the next record (`take_back_reclaimed_pages`).
        if let Some(mut w) = db.try_lock_writer()? {
            table.sync_pins(&mut w.pins);
        }
        Ok(table)
    }

    /// Appends one transition. `row` gives every field of the schema once,
    /// in any order; a missing, unknown or repeated field, a wrong dtype or a
    /// wrong shape is an error and leaves the table unchanged.
    pub fn push(&mut self, row: &[Field<'_>]) -> Result<()> {
        let plan = &self.plan;
        let full = match self.view.ring.push_rows(1, |slot| plan.write(row, slot)) {
            Err(Refused::Rejected) => {
                let (parts, _) =
                    match_fields(&self.view.ring.name, &self.view.ring.schema, row, false)?;
                self.view.ring.push_rows(1, |slot| {
                    let mut at = 0;
                    for p in &parts {
                        if let Some(to) = slot.get_mut(at..at + p.len()) {
                            to.copy_from_slice(p);
                        }
                        at += p.len();
                    }
                    true
                })
            }
            other => other,
        };
        let full = full.map_err(|r| self.refused(r))?;
        match full {
            Some(k) => self.page_full(k),
            None => Ok(()),
        }
    }

    /// Appends a batch of transitions: every field of the schema once, each
    /// with a leading dimension of the batch size (see [`Field::rows`] and
    /// [`Field::vector`] for a column of scalars). Checked in full before
    /// anything is pushed.
    pub fn push_batch(&mut self, columns: &[Field<'_>]) -> Result<()> {
        let (parts, rows) =
            match_fields(&self.view.ring.name, &self.view.ring.schema, columns, true)?;
        let schema = &self.view.ring.schema;
        let rs = schema.row_size();
        let layout: Vec<(usize, usize)> = (0..parts.len())
            .map(|i| (schema.offset(i), schema.size(i)))
            .collect();
        // The rows that fit the page being filled are written column by
        // column into the fill buffer: one tight loop per field, instead of
        // a dispatch on the field's size for every field of every row.
        let mut done = 0;
        while done < rows {
            let n = self.view.ring.rows_left_in_page().min(rows - done);
            let full = self.view.ring.push_rows(n, |region| {
                for (part, &(offset, size)) in parts.iter().zip(&layout) {
                    let column = part.get(done * size..(done + n) * size).unwrap_or_default();
                    scatter(region, rs, offset, size, column);
                }
                true
            });
            let full = full.map_err(|r| self.refused(r))?;
            done += n;
            if let Some(k) = full {
                self.page_full(k)?;
            }
        }
        Ok(())
    }

    /// Appends one row given as packed bytes in schema order (what
    /// [`Row::bytes`](crate::replay::Row::bytes) returns). A row of the
    /// wrong length, or with a bool byte other than 0 or 1, is an error
    /// and leaves the table unchanged.
    #[inline]
    pub fn push_bytes(&mut self, row: &[u8]) -> Result<()> {
        if row.len() != self.view.ring.row_size() {
            return Err(self.wrong_row_size(row.len()));
        }
        if !self.bool_bytes.valid(row) {
            return Err(not_a_bool());
        }
        let full = self.view.ring.push_rows(1, |slot| {
            copy(slot, row);
            true
        });
        match full.map_err(|r| self.refused(r))? {
            Some(k) => self.page_full(k),
            None => Ok(()),
        }
    }

    /// The error of rows [`Ring::push_rows`] refused although they were
    /// checked: the fill buffer had no room, which cannot happen while every
    /// completed page is moved out at once ([`ReplayTable::page_full`]).
    #[cold]
    fn refused(&self, why: Refused) -> Error {
        Error::invalid(format!(
            "replay table {:?}: the page being filled refused checked rows ({why:?})",
            self.view.ring.name
        ))
    }

    #[cold]
    fn wrong_row_size(&self, len: usize) -> Error {
        Error::ShapeMismatch {
            what: format!("packed row of replay table {:?}", self.view.ring.name),
            expected: vec![self.view.ring.row_size() as u64],
            actual: vec![len as u64],
        }
    }

    /// Page `k` is full (its bytes are in the fill buffer): keep it pending,
    /// and hand the pending pages to the log once they reach
    /// [`ReplayOptions::write_batch`] bytes.
    #[inline(never)]
    fn page_full(&mut self, k: usize) -> Result<()> {
        let spare = self.spare.pop().unwrap_or_default();
        let bytes = self.view.ring.take_full_page(spare);
        // Checksummed now, while the page is in this core's cache, rather
        // than when its batch is handed over, which the background thread
        // waits for.
        self.set_pending(k, bytes);
        if self.pending_bytes >= self.write_batch {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Makes page `k` the pending page `bytes`, checksummed.
    fn set_pending(&mut self, k: usize, bytes: Vec<u8>) {
        let crc = crc32fast::hash(&bytes);
        self.set_page(
            k,
            Page::Pending {
                bytes: Arc::new(bytes),
                crc,
                written: None,
            },
        );
    }

    fn set_page(&mut self, k: usize, page: Page) {
        if let Page::Pending { bytes, .. } = &page {
            self.pending_bytes += bytes.len();
        }
        if let Some(Page::Pending { bytes, .. }) = self.view.ring.pages[k].replace(page) {
            self.pending_bytes -= bytes.len();
        }
    }

    /// Appends the pending pages as detached entries (or adopts what a
    /// transaction wrote for them) if the writer is free; does nothing
    /// otherwise.
    ///
    /// The pages are written by the log's background thread while the
    /// table fills the next ones: they stay readable from their buffers
    /// ([`Page::Held`]) until the next call, which waits for the thread
    /// (taking the writer does), hands over the next batch, and only then
    /// maps them, so that the thread is not kept waiting by the maps.
    fn flush_pending(&mut self) -> Result<()> {
        let db = self.db;
        let Some(mut w) = db.try_lock_writer()? else {
            return Ok(());
        };
        // Taking the writer waited for the previous batch: its pages are
        // written, whatever happens to this one.
        let written = std::mem::take(&mut self.held);
        let appended = self.append_pending(&mut w);
        self.map_held(written);
        appended
    }

    /// Queues every pending page as a detached entry (or adopts what a
    /// transaction wrote for it) and hands them to the background thread.
    fn append_pending(&mut self, w: &mut Writer) -> Result<()> {
        // No transaction is open: everything below the end of the log is
        // pinned.
        w.log.flush()?;
        let pinned = w.log.position();
        for k in 0..self.view.ring.pages.len() {
            let Some(Page::Pending {
                bytes,
                crc,
                written,
            }) = &self.view.ring.pages[k]
            else {
                continue;
            };
            let (bytes, crc) = (Arc::clone(bytes), *crc);
            if let Some(e) = written.clone() {
                if let Some(p) = self.adopt(&e, &bytes, pinned) {
                    self.set_page(k, p);
                    continue;
                }
            }
            let entry = self.append_entry(w, k, &bytes, crc)?;
            self.held.push((k, entry.at));
            self.set_page(k, Page::Held { entry, bytes });
        }
        w.log.dispatch()
    }

    /// Maps the pages of `written` (appended by an earlier batch, whose
    /// write is done) that are still held where they were appended, newest
    /// first (one remap of a window then covers every older page in it),
    /// and keeps their buffers for reuse. A page that fails to map stays
    /// held, readable from its buffer; it is mapped with the next batch.
    fn map_held(&mut self, written: Vec<(usize, Location)>) {
        for &(k, at) in written.iter().rev() {
            let entry = match &self.view.ring.pages[k] {
                Some(Page::Held { entry, .. }) if entry.at == at => entry.clone(),
                _ => continue,
            };
            let Ok((map, start)) = self.map_pinned(&entry) else {
                self.held.insert(0, (k, at));
                continue;
            };
            let mapped = Page::Mapped { entry, map, start };
            if let Some(Page::Held { bytes, .. }) = self.view.ring.pages[k].replace(mapped) {
                let kept: usize = self.spare.iter().map(Vec::capacity).sum();
                let limit = SPARE_BATCHES * self.write_batch.max(bytes.len());
                if let Ok(bytes) = Arc::try_unwrap(bytes) {
                    if kept + bytes.capacity() <= limit {
                        self.spare.push(bytes);
                    }
                }
            }
        }
    }

    /// Queues page `k` as a detached entry and pins it. The caller holds
    /// the writer outside any transaction. The payload is written in the
    /// background (see [`crate::log::background`]).
    fn append_entry(
        &mut self,
        w: &mut Writer,
        k: usize,
        bytes: &Arc<Vec<u8>>,
        crc: u32,
    ) -> Result<EntryRef> {
        let rows = self.view.ring.rows_in_page(k);
        let rs = self.view.ring.row_size() as u64;
        let key = page_key(&self.view.ring.name, k);
        let mut header = EntryHeader::new(
            Kind::ReplayPage,
            Some(DType::U8),
            key,
            vec![rows, rs],
            bytes.len() as u64,
            crc,
        );
        let at = w.log.append_shared(&mut header, bytes)?;
        if self.pins.insert(at) {
            w.pins.pin(at);
        }
        Ok(EntryRef::from_header(at, header))
    }

    /// Maps the window holding `e`, which lies in pinned or committed bytes.
    fn map_pinned(&mut self, e: &EntryRef) -> Result<(u32, usize)> {
        let win = e.at.offset / WINDOW;
        let win_start = win * WINDOW;
        let end = e.at.offset + payload_offset(e) + e.len;
        let need = end - win_start;
        if let Some(&i) = self.windows.get(&(e.at.segment, win)) {
            if self.view.ring.maps[i as usize].len() >= need {
                return Ok((i, (e.at.offset + payload_offset(e) - win_start) as usize));
            }
        }
        let path = segment_path(self.db.segments.log_dir(), e.at.segment);
        let m = Arc::new(
            Mapping::map_range(&path, win_start, need)
                .map_err(|err| Error::io("mmap", &path, err))?,
        );
        let i = match self.windows.get(&(e.at.segment, win)) {
            Some(&i) => {
                self.view.ring.maps[i as usize] = m;
                i
            }
            None => {
                self.view.ring.maps.push(m);
                let i = (self.view.ring.maps.len() - 1) as u32;
                self.windows.insert((e.at.segment, win), i);
                i
            }
        };
        Ok((i, (e.at.offset + payload_offset(e) - win_start) as usize))
    }

    /// The entry a transaction wrote for a pending page, if it now lies below
    /// `pinned` (no rollback can cut it any more) and holds exactly `bytes`.
    fn adopt(&mut self, e: &EntryRef, bytes: &[u8], pinned: Location) -> Option<Page> {
        let end = Location {
            segment: e.at.segment,
            offset: e.at.offset + payload_offset(e) + e.len,
        };
        if end > pinned {
            return None;
        }
        let (map, start) = self.map_pinned(e).ok()?;
        let m = &self.view.ring.maps[map as usize];
        let header_at = start.checked_sub(payload_offset(e) as usize)?;
        let header = EntryHeader::decode(m.bytes().get(header_at..)?).ok()?;
        let same = header.kind == e.kind
            && header.key == e.stored_key
            && header.payload_len == e.len
            && header.payload_crc == e.crc
            && m.bytes().get(start..start + bytes.len()) == Some(bytes);
        same.then(|| Page::Mapped {
            entry: e.clone(),
            map,
            start,
        })
    }

    /// Makes this table's pins exactly the pages it references now: pins
    /// the new ones, releases those it no longer holds.
    fn sync_pins(&mut self, pins: &mut PinSet) {
        let now: std::collections::BTreeSet<Location> = self
            .view
            .ring
            .pages
            .iter()
            .filter_map(|p| match p {
                Some(Page::Mapped { entry, .. }) | Some(Page::Held { entry, .. }) => Some(entry.at),
                Some(Page::Pending { written, .. }) => written.as_ref().map(|e| e.at),
                None => None,
            })
            .collect();
        pins.pin_all(now.difference(&self.pins).copied());
        pins.release_all(self.pins.difference(&now).copied());
        self.pins = now;
    }

    /// Turns every mapped page whose segment space reclamation deleted back
    /// into a pending page, which the next record writes again.
    ///
    /// Once a root names a page it is no longer pinned, so a compaction may
    /// delete its segment while this table still holds the page: when no
    /// live step names it any more (the steps recording it were dropped), or
    /// when it was copied forward (to a location this handle does not know).
    /// Naming the old location in the next step would name bytes that are
    /// gone (compaction unlinks every segment it copies from, so a page
    /// whose segment still exists has not moved). The bytes are still
    /// readable through the table's map of the
    /// unlinked file; written again, the transaction's dedup finds a copy by
    /// content when there is one. Runs with the writer held (by the
    /// transaction), so no compaction runs in between.
    fn take_back_reclaimed_pages(&mut self) -> Result<()> {
        let mut gone: HashMap<u64, bool> = HashMap::new();
        for k in 0..self.view.ring.pages.len() {
            let Some(Page::Mapped { entry, map, start }) = &self.view.ring.pages[k] else {
                continue;
            };
            let seg = entry.at.segment;
            let deleted = match gone.get(&seg) {
                Some(&d) => d,
                None => {
                    let path = segment_path(self.db.segments.log_dir(), seg);
                    let d = match std::fs::symlink_metadata(&path) {
                        Ok(_) => false,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                        Err(e) => return Err(Error::io("stat", &path, e)),
                    };
                    gone.insert(seg, d);
                    d
                }
            };
            if !deleted {
                continue;
            }
            let bytes: Vec<u8> = self.view.ring.maps[*map as usize]
                .bytes()
                .get(*start..*start + entry.len as usize)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "replay table {:?}: page {k} lies outside its map",
                        self.view.ring.name
                    ))
                })?
                .into();
            self.set_pending(k, bytes);
        }
        Ok(())
    }

    /// Records this table's state in `tx`: what a restore of that step gives
    /// back. Writes the partial page and the priorities (a committed
    /// identical copy is shared instead) and any page still pending; full
    /// pages already in the log are only referenced.
    pub(crate) fn record(&mut self, tx: &mut impl EntrySink) -> Result<RecordedTable> {
        if !std::ptr::eq(tx.db(), self.db) {
            return Err(Error::invalid(format!(
                "replay table {:?} belongs to another database",
                self.view.ring.name
            )));
        }
        self.take_back_reclaimed_pages()?;
        let pinned = tx.begin_position();
        let name = self.view.ring.name.clone();
        let rs = self.view.ring.row_size() as u64;
        for k in 0..self.view.ring.pages.len() {
            let Some(Page::Pending { bytes, written, .. }) = &self.view.ring.pages[k] else {
                continue;
            };
            let bytes = bytes.clone();
            if let Some(e) = written.clone() {
                if let Some(p) = self.adopt(&e, &bytes, pinned) {
                    self.set_page(k, p);
                    continue;
                }
            }
            let rows = self.view.ring.rows_in_page(k);
            let e = tx.write_entry(
                &page_key(&name, k),
                Kind::ReplayPage,
                Some(DType::U8),
                vec![rows, rs],
                &bytes,
            )?;
            if let Some(Page::Pending { written, .. }) = &mut self.view.ring.pages[k] {
                *written = Some(e);
            }
        }
        let pages: Vec<Option<EntryRef>> = self
            .view
            .ring
            .pages
            .iter()
            .map(|p| match p {
                Some(Page::Mapped { entry, .. } | Page::Held { entry, .. }) => Some(entry.clone()),
                Some(Page::Pending { written, .. }) => written.clone(),
                None => None,
            })
            .collect();
        self.sync_pins(tx.pins());
        self.small_state().record(tx, pages)
    }

    /// What a record writes besides the full pages, copied.
    fn small_state(&self) -> SmallState {
        SmallState {
            name: self.view.ring.name.clone(),
            row_size: self.view.ring.row_size() as u64,
            schema: self.view.ring.meta_bytes(),
            ring: self.view.ring.ring_bytes(),
            partial: (self.view.ring.fill_rows() > 0).then(|| {
                (
                    self.view.ring.fill_rows(),
                    self.view.ring.fill.filled().to_vec(),
                )
            }),
            side: self.view.ring.prio.as_ref().map(|t| {
                let bytes: Vec<u8> = t.leaves().iter().flat_map(|v| v.to_le_bytes()).collect();
                (self.view.ring.capacity(), bytes)
            }),
        }
    }

    /// Everything [`ReplayTable::record`] puts in a step, owned, for a step
    /// committed later on another thread (`PendingStep::put_replay`).
    ///
    /// Takes the writer (waiting for a commit in flight) outside any
    /// transaction, and appends the pages still pending as detached entries
    /// there and then, so that the capture only names pages that are in
    /// the log; the partial page and the priorities, which are small, are
    /// copied. The named pages get pins of the capture's own: the table may
    /// overwrite them and drop its pins before the step commits, and a
    /// reclamation in between must not delete them. The commit releases
    /// those pins while it holds the writer, which no reclamation can take
    /// before the published root names the pages.
    pub(crate) fn capture(&mut self) -> Result<ReplayCapture> {
        let db = self.db;
        let mut w = db.lock_writer()?;
        self.take_back_reclaimed_pages()?;
        let written = std::mem::take(&mut self.held);
        let appended = self.append_pending(&mut w);
        self.map_held(written);
        appended?;
        self.sync_pins(&mut w.pins);
        let mut pages = Vec::with_capacity(self.view.ring.pages.len());
        for (k, p) in self.view.ring.pages.iter().enumerate() {
            pages.push(match p {
                Some(Page::Mapped { entry, .. } | Page::Held { entry, .. }) => Some(entry.clone()),
                Some(Page::Pending { .. }) => {
                    return Err(Error::invalid(format!(
                        "replay table {:?}: page {k} could not be written before the step",
                        self.view.ring.name
                    )))
                }
                None => None,
            });
        }
        let pins: Vec<Location> = pages.iter().flatten().map(|e| e.at).collect();
        w.pins.pin_all(pins.iter().copied());
        Ok(ReplayCapture {
            db: db as *const Db as usize,
            small: self.small_state(),
            pages,
            pins,
        })
    }
}

/// The part of a table's recorded state that is not full pages: the
/// partial page (rows, bytes), the priorities (capacity, f32 bytes) and
/// the encoded schema and ring counters.
struct SmallState {
    name: String,
    row_size: u64,
    schema: Vec<u8>,
    ring: Vec<u8>,
    partial: Option<(u64, Vec<u8>)>,
    side: Option<(u64, Vec<u8>)>,
}

impl SmallState {
    /// Writes the partial page and the priorities (a committed identical
    /// copy is shared instead) and records the table, whose full pages are
    /// `pages`, in `tx`.
    fn record(
        self,
        tx: &mut impl EntrySink,
        pages: Vec<Option<EntryRef>>,
    ) -> Result<RecordedTable> {
        let name = self.name;
        // Pages appended outside any transaction that no commit has named
        // yet are this step's new bytes (unless this transaction recorded
        // them already).
        let committed = tx.db().read_view().committed();
        let beyond = |e: &EntryRef| match committed {
            Some(c) => e.at >= c,
            None => true,
        };
        let already: std::collections::HashSet<Location> = tx
            .recorded(&name)
            .map(|st| st.pages.iter().flatten().map(|e| e.at).collect())
            .unwrap_or_default();
        let pinned = tx.begin_position();
        let fresh: u64 = pages
            .iter()
            .flatten()
            .filter(|e| beyond(e) && !already.contains(&e.at) && e.at < pinned)
            .map(|e| e.len)
            .sum();
        let partial = match &self.partial {
            Some((rows, bytes)) => Some(tx.write_entry(
                &ReplayPart::Partial.key(&name),
                Kind::ReplayPage,
                Some(DType::U8),
                vec![*rows, self.row_size],
                bytes,
            )?),
            None => None,
        };
        let side = match &self.side {
            Some((capacity, bytes)) => Some(tx.write_entry(
                &ReplayPart::Priorities.key(&name),
                Kind::ReplayState,
                Some(DType::F32),
                vec![*capacity],
                bytes,
            )?),
            None => None,
        };
        let state = ReplayTableState {
            schema: self.schema,
            pages,
            partial,
            side,
            ring: self.ring,
        };
        Ok(RecordedTable {
            name,
            state,
            new_bytes: fresh,
        })
    }
}

/// A replay table's state as [`ReplayTable::capture`] took it, to be
/// recorded by a later transaction.
pub(crate) struct ReplayCapture {
    /// The address of the database the pages belong to (compared, never
    /// dereferenced).
    db: usize,
    small: SmallState,
    pages: Vec<Option<EntryRef>>,
    /// Pins this capture holds in the writer's pin set.
    pins: Vec<Location>,
}

impl std::fmt::Debug for ReplayCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCapture")
            .field("table", &self.small.name)
            .field("pages", &self.pages.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

impl ReplayCapture {
    /// Records the captured table in `tx` and releases the capture's pins
    /// (the transaction holds the writer until its root names the pages).
    pub(crate) fn record(self, tx: &mut impl EntrySink) -> Result<RecordedTable> {
        if tx.db() as *const Db as usize != self.db {
            return Err(Error::invalid(format!(
                "replay table {:?} belongs to another database",
                self.small.name
            )));
        }
        tx.pins().release_all(self.pins);
        self.small.record(tx, self.pages)
    }
}

impl ReplayTable<'_> {
    /// Sets the priorities of sampled transitions. An index whose slot has
    /// been overwritten since it was sampled is ignored; returns how many
    /// priorities were set. A priority must be finite and > 0; new
    /// transitions get the largest priority set so far (1 at first).
    pub fn update_priorities(
        &mut self,
        indices: &[SampleIndex],
        priorities: &[f64],
    ) -> Result<usize> {
        let items: Vec<(u64, u64)> = indices.iter().map(|i| (i.slot, i.serial)).collect();
        self.view.ring.update_priorities(&items, priorities)
    }
}

/// A writable table reads like the view of what it holds now: every read
/// and sampling method of [`ReplayView`] is one of the table's, without a
/// second copy of each.
impl std::ops::Deref for ReplayTable<'_> {
    type Target = ReplayView;

    fn deref(&self) -> &ReplayView {
        &self.view
    }
}

impl Drop for ReplayTable<'_> {
    /// Releases this table's pins. When the writer is busy (a transaction
    /// is open) they stay until the database is closed, which only delays
    /// reclaiming their segments.
    fn drop(&mut self) {
        if let Ok(Some(mut w)) = self.db.try_lock_writer() {
            w.pins.release_all(std::mem::take(&mut self.pins));
        }
    }
}

/// A table's options as a user wrote them: "capacity 1000, page size 64,
/// prioritized (alpha 0.6)" or "…, uniform".
fn layout_text(capacity: u64, page_size: u64, alpha: Option<f64>) -> String {
    let sampling = match alpha {
        Some(a) => format!("prioritized (alpha {a})"),
        None => "uniform".to_owned(),
    };
    format!("capacity {capacity}, page size {page_size}, {sampling}")
}
