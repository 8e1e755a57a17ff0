//! The ring: which transition lives in which slot, and where a slot's bytes
//! are.
//!
//! Slot `s` (of `capacity`) is row `s % page_size` of page `s / page_size`;
//! the last page is shorter when the capacity is not a multiple of the page
//! size. The `total` transitions ever pushed fully determine the rest: the
//! next slot is `total % capacity`, the page being filled is the one holding
//! it, and its first `total % capacity % page_size` rows are in memory (the
//! **fill** buffer). Every other occupied row is in a full page — a log entry
//! read through a map — including the not-yet-overwritten rows of the page
//! being filled, which still sit in that page's entry from the previous lap.
//!
//! Transition number `t` (its *serial*) went to slot `t % capacity`, so the
//! serial a slot holds now is computed, not stored.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{align_up, Kind, ENTRY_FIXED_LEN};
use crate::log::read::{SegmentMaps, Segments};
use crate::mmap::Mapping;
use crate::record::{EntryRef, ReplayTableState};
use crate::DType;

use super::fill::FillPage;
use super::schema::{ReplayOptions, Schema, StoredMeta};
use super::sumtree::SumTree;

/// Where a full page's bytes are.
#[derive(Debug)]
pub(crate) enum Page {
    /// A log entry, read through `maps[map]` starting at byte `start`.
    Mapped {
        entry: EntryRef,
        map: u32,
        start: usize,
    },
    /// Appended to the log (and pinned) but not mapped yet: the bytes are
    /// still the page's own buffer, shared with the log's background
    /// writer until it has written them. The writable table maps these a
    /// batch at a time (see `table.rs`).
    Held {
        entry: EntryRef,
        bytes: Arc<Vec<u8>>,
    },
    /// Not appended yet: waiting for the batch it goes to the log with, or
    /// for the writer (a step transaction was open). `written` is the entry
    /// a transaction wrote it as, which is adopted once it is known to be
    /// permanent.
    Pending {
        bytes: Arc<Vec<u8>>,
        /// crc32 of `bytes`.
        crc: u32,
        written: Option<EntryRef>,
    },
}

/// Why [`Ring::push_rows`] pushed nothing.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// The writer refused the rows.
    Rejected,
    /// The fill buffer has no room for them: a full page was not moved out.
    NoRoom,
}

/// The ring counters stored in a snapshot, encoded with postcard.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredRing {
    pub total: u64,
    pub max_priority: f64,
}

/// Offset of an entry's payload from the start of the entry.
pub(crate) fn payload_offset(e: &EntryRef) -> u64 {
    align_up((ENTRY_FIXED_LEN + e.stored_key.len() + 8 * e.shape.len()) as u64).unwrap_or(u64::MAX)
}

/// The state of one table, shared by the writable table and read-only views.
pub(crate) struct Ring {
    pub name: String,
    pub schema: Schema,
    pub opts: ReplayOptions,
    pub total: u64,
    /// Maps the mapped pages point into.
    pub maps: Vec<Arc<Mapping>>,
    pub pages: Vec<Option<Page>>,
    pub fill: FillPage,
    /// The page being filled (`cur_page()`, kept to spare divisions).
    cur: usize,
    pub prio: Option<SumTree>,
    /// Largest priority given so far; new transitions get it.
    pub max_priority: f64,
    /// The leaf value of `max_priority` (kept, not recomputed with a
    /// `powf` on every push).
    max_leaf: f32,
}

impl std::fmt::Debug for Ring {
    // Not derived: the fill buffer and the priorities are megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.name)
            .field("schema", &self.schema.to_string())
            .field("options", &self.opts)
            .field("total", &self.total)
            .field("maps", &self.maps.len())
            .field("fill_bytes", &self.fill.len())
            .finish_non_exhaustive()
    }
}

impl Ring {
    pub(crate) fn empty(name: &str, schema: Schema, opts: ReplayOptions) -> Ring {
        let pages = opts.capacity.div_ceil(opts.page_size) as usize;
        let prio = opts.alpha.map(|_| SumTree::new(opts.capacity as usize));
        let first_page = opts.page_size.min(opts.capacity) as usize * schema.row_size();
        Ring {
            cur: 0,
            name: name.to_owned(),
            fill: FillPage::with_buffer(Vec::new(), first_page),
            schema,
            opts,
            total: 0,
            maps: Vec::new(),
            pages: (0..pages).map(|_| None).collect(),
            prio,
            max_priority: 1.0,
            max_leaf: opts.alpha.map_or(0.0, |a| leaf_value(1.0, a)),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.opts.capacity
    }

    pub(crate) fn len(&self) -> u64 {
        self.total.min(self.opts.capacity)
    }

    pub(crate) fn row_size(&self) -> usize {
        self.schema.row_size()
    }

    pub(crate) fn next_slot(&self) -> u64 {
        self.total % self.opts.capacity
    }

    pub(crate) fn cur_page(&self) -> usize {
        (self.next_slot() / self.opts.page_size) as usize
    }

    pub(crate) fn fill_rows(&self) -> u64 {
        self.next_slot() % self.opts.page_size
    }

    pub(crate) fn rows_in_page(&self, k: usize) -> u64 {
        let start = k as u64 * self.opts.page_size;
        self.opts.page_size.min(self.opts.capacity - start)
    }

    /// The serial of the transition slot `slot` holds now.
    pub(crate) fn serial_at(&self, slot: u64) -> Option<u64> {
        if slot >= self.len() {
            return None;
        }
        let c = self.opts.capacity;
        Some(slot + c * ((self.total - 1 - slot) / c))
    }

    /// The slot of the `i`-th transition, oldest first.
    pub(crate) fn slot_of(&self, i: u64) -> Option<u64> {
        (i < self.len()).then(|| (self.total - self.len() + i) % self.opts.capacity)
    }

    /// The stored bytes of the row in `slot`.
    #[inline]
    pub(crate) fn row(&self, slot: u64) -> Option<&[u8]> {
        let rs = self.row_size();
        let k = (slot / self.opts.page_size) as usize;
        let r = (slot % self.opts.page_size) as usize;
        if k == self.cur && (r + 1) * rs <= self.fill.len() {
            return self.fill.filled().get(r * rs..(r + 1) * rs);
        }
        match self.pages.get(k)?.as_ref()? {
            Page::Mapped { map, start, .. } => {
                let at = start + r * rs;
                self.maps.get(*map as usize)?.bytes().get(at..at + rs)
            }
            Page::Pending { bytes, .. } => bytes.get(r * rs..(r + 1) * rs),
            Page::Held { bytes, .. } => bytes.get(r * rs..(r + 1) * rs),
        }
    }

    /// Like [`Ring::row`], with an error naming the table for a row that
    /// should be there and is not.
    pub(crate) fn row_checked(&self, slot: u64) -> Result<&[u8]> {
        self.row(slot).ok_or_else(|| {
            Error::invalid(format!(
                "replay table {:?} has no row in slot {slot}",
                self.name
            ))
        })
    }

    /// Appends `n` rows, at most [`Ring::rows_left_in_page`], which `write`
    /// writes into their bytes in the fill buffer (every byte of them) and
    /// accepts by returning true; a refusal leaves the ring unchanged.
    /// Returns the number of the page the rows completed, if they did: the
    /// ring has then moved on to the next page, and the caller must replace
    /// the fill buffer ([`Ring::take_full_page`]) before anything reads the
    /// ring or pushes again.
    #[inline]
    pub(crate) fn push_rows(
        &mut self,
        n: usize,
        write: impl FnOnce(&mut [u8]) -> bool,
    ) -> std::result::Result<Option<usize>, Refused> {
        let bytes = n * self.row_size();
        let region = self.fill.next_mut(bytes).ok_or(Refused::NoRoom)?;
        if !write(region) {
            return Err(Refused::Rejected);
        }
        self.fill.commit(bytes);
        Ok(self.count_pushed(n as u64))
    }

    /// Rows the page being filled still takes (at least one).
    pub(crate) fn rows_left_in_page(&self) -> usize {
        (self.fill.capacity() - self.fill.len()) / self.row_size()
    }

    /// The rows of the page just completed, leaving an empty fill buffer
    /// for the page being filled now, made of `spare`'s allocation.
    pub(crate) fn take_full_page(&mut self, spare: Vec<u8>) -> Vec<u8> {
        let bytes = self.rows_in_page(self.cur) as usize * self.row_size();
        self.fill.replace(FillPage::with_buffer(spare, bytes))
    }

    /// Counts `n` rows just written to the fill buffer: they get the
    /// maximum priority, and if they completed the page the ring moves on
    /// to the next one, whose number is returned.
    #[inline]
    fn count_pushed(&mut self, n: u64) -> Option<usize> {
        if let Some(t) = self.prio.as_mut() {
            // The rows lie in one page, so their slots are consecutive.
            let first = (self.total % self.opts.capacity) as usize;
            t.set_run(first, n as usize, self.max_leaf);
        }
        self.total += n;
        if self.fill.len() < self.fill.capacity() {
            return None;
        }
        let done = self.cur;
        self.cur = self.cur_page();
        Some(done)
    }

    /// Sets the priorities of `(slot, serial)` pairs whose slot still holds
    /// that serial; returns how many were set. `priorities` are checked.
    pub(crate) fn update_priorities(
        &mut self,
        items: &[(u64, u64)],
        priorities: &[f64],
    ) -> Result<usize> {
        let Some(alpha) = self.opts.alpha else {
            return Err(Error::invalid(format!(
                "replay table {:?} keeps no priorities",
                self.name
            )));
        };
        if items.len() != priorities.len() {
            return Err(Error::invalid(format!(
                "{} indices but {} priorities",
                items.len(),
                priorities.len()
            )));
        }
        if let Some(p) = priorities.iter().find(|p| !(p.is_finite() && **p > 0.0)) {
            return Err(Error::invalid(format!(
                "a priority must be finite and > 0, got {p}"
            )));
        }
        let mut applied = 0;
        for (&(slot, serial), &p) in items.iter().zip(priorities) {
            if self.serial_at(slot) != Some(serial) {
                continue;
            }
            if let Some(t) = self.prio.as_mut() {
                t.set(slot as usize, leaf_value(p, alpha));
            }
            if p > self.max_priority {
                self.max_priority = p;
                self.max_leaf = leaf_value(p, alpha);
            }
            applied += 1;
        }
        Ok(applied)
    }

    /// The encoded schema/options and ring counters of a snapshot.
    pub(crate) fn meta_bytes(&self) -> Vec<u8> {
        StoredMeta::of(&self.schema, &self.opts).encode()
    }

    pub(crate) fn ring_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&StoredRing {
            total: self.total,
            max_priority: self.max_priority,
        })
        .unwrap_or_default()
    }

    /// Rebuilds a ring from its state in a snapshot. Every page is checked
    /// (header against the manifest, payload crc32 once per process) and
    /// every count against the table's geometry, so a damaged state is a
    /// typed error, never a wrong row.
    pub(crate) fn restore(
        name: &str,
        state: &ReplayTableState,
        maps: &SegmentMaps,
        segments: &Segments,
    ) -> Result<Ring> {
        let bad = |why: String| {
            Error::corruption(
                segments.log_dir(),
                0,
                format!("replay table {name:?}: {why}"),
            )
        };
        let meta = StoredMeta::decode(&state.schema).map_err(&bad)?;
        let schema = Schema::new(meta.fields.clone()).map_err(|e| bad(e.to_string()))?;
        let mut opts = ReplayOptions::new(meta.capacity, meta.page_size);
        opts.alpha = meta.alpha;
        opts.validate(&schema).map_err(|e| bad(e.to_string()))?;
        let counters: StoredRing =
            postcard::from_bytes(&state.ring).map_err(|e| bad(format!("ring state: {e}")))?;
        if counters.total >= 1 << 62 {
            return Err(bad("transition count out of range".into()));
        }
        if !(counters.max_priority.is_finite() && counters.max_priority > 0.0) {
            return Err(bad("max priority out of range".into()));
        }
        // Check the sizes that decide allocations against what the
        // manifest and the file hold before allocating anything: a damaged
        // capacity must not become a huge allocation.
        let n_pages = opts.capacity.div_ceil(opts.page_size);
        if state.pages.len() as u64 != n_pages {
            return Err(bad(format!(
                "{} pages, the geometry needs {n_pages}",
                state.pages.len()
            )));
        }
        let side = match (&state.side, opts.alpha) {
            (Some(e), Some(_)) => {
                if e.kind != Kind::ReplayState
                    || e.dtype != Some(DType::F32)
                    || e.shape != [opts.capacity]
                    || e.len != opts.capacity * 4
                {
                    return Err(bad("priorities do not fit the table".into()));
                }
                Some(segments.payload(maps, e, true)?)
            }
            (None, None) => None,
            _ => return Err(bad("priorities present without alpha, or missing".into())),
        };
        let mut ring = Ring {
            name: name.to_owned(),
            schema,
            opts,
            total: counters.total,
            maps: Vec::new(),
            pages: (0..n_pages).map(|_| None).collect(),
            fill: FillPage::default(),
            cur: 0,
            prio: None,
            max_priority: counters.max_priority,
            max_leaf: opts
                .alpha
                .map_or(0.0, |a| leaf_value(counters.max_priority, a)),
        };
        let cur = ring.cur_page();
        ring.cur = cur;
        ring.fill = FillPage::with_buffer(
            Vec::new(),
            ring.rows_in_page(cur) as usize * ring.row_size(),
        );
        let full = ring.total >= ring.capacity();
        let rs = ring.row_size() as u64;
        let mut seg_map: std::collections::HashMap<u64, u32> = Default::default();
        for (k, p) in state.pages.iter().enumerate() {
            let needed = full || k < cur;
            let Some(e) = p else {
                if needed {
                    return Err(bad(format!("page {k} is missing")));
                }
                continue;
            };
            if !needed {
                return Err(bad(format!("page {k} is present but cannot hold rows yet")));
            }
            check_entry(e, Kind::ReplayPage, ring.rows_in_page(k), rs).map_err(&bad)?;
            segments.payload(maps, e, true)?;
            let idx = match seg_map.get(&e.at.segment) {
                Some(&i) => i,
                None => {
                    let m = maps
                        .get(&e.at.segment)
                        .ok_or_else(|| bad(format!("page {k} is not mapped")))?;
                    ring.maps.push(m.clone());
                    let i = (ring.maps.len() - 1) as u32;
                    seg_map.insert(e.at.segment, i);
                    i
                }
            };
            let start = e.at.offset + payload_offset(e);
            ring.pages[k] = Some(Page::Mapped {
                entry: e.clone(),
                map: idx,
                start: start as usize,
            });
        }
        match &state.partial {
            Some(e) => {
                check_entry(e, Kind::ReplayPage, ring.fill_rows(), rs).map_err(&bad)?;
                let bytes = segments.payload(maps, e, true)?;
                if !ring.fill.extend(bytes) {
                    return Err(bad("the partial page is larger than a page".into()));
                }
            }
            None if ring.fill_rows() > 0 => return Err(bad("the partial page is missing".into())),
            None => {}
        }
        if let Some(bytes) = side {
            let leaves: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let len = ring.len() as usize;
            for (i, &v) in leaves.iter().enumerate() {
                let ok = v.is_finite() && if i < len { v > 0.0 } else { v == 0.0 };
                if !ok {
                    return Err(bad(format!("priority of slot {i} is {v}")));
                }
            }
            ring.prio = Some(SumTree::from_leaves(leaves));
        }
        Ok(ring)
    }
}

/// The leaf value of priority `p`: `p^α`, kept above zero so that a tiny
/// priority still means "occupied".
pub(crate) fn leaf_value(p: f64, alpha: f64) -> f32 {
    (p.powf(alpha) as f32).clamp(f32::MIN_POSITIVE, f32::MAX)
}

fn check_entry(
    e: &EntryRef,
    kind: Kind,
    rows: u64,
    row_size: u64,
) -> std::result::Result<(), String> {
    if e.kind != kind
        || e.dtype != Some(DType::U8)
        || e.shape != [rows, row_size]
        || e.len != rows * row_size
    {
        return Err(format!(
            "entry {:?} does not hold {rows} rows of {row_size} bytes",
            e.stored_key
        ));
    }
    Ok(())
}
