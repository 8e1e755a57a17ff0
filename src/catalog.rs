//! The writer's catalog in `index.redb`: what the writer needs to answer
//! quickly, derived from the log.
//!
//! | table      | key             | value                 | used for                  |
//! |------------|-----------------|-----------------------|---------------------------|
//! | `meta`     | `"root"`        | generation, location  | catching up on open       |
//! | `steps`    | step            | manifest location     | catching up, diffing      |
//! | `refs`     | entry location  | (live steps, bytes)   | liveness of entries       |
//! | `content`  | (len, crc32)    | entry locations       | dedup candidates          |
//! | `history`  | (key, step)     | entry location        | `Db::history`             |
//! | `segments` | segment         | live payload bytes    | choosing what to compact  |
//!
//! The catalog is never the source of truth. Its commits use
//! `Durability::None` (the log's fsync is the durable one), with an
//! `Immediate` commit every few steps so redb can reclaim its pages; after a
//! crash it is simply behind, and [`Catalog::catch_up`] replays the
//! difference between its step set and the root's. Anything unexpected —
//! redb refusing to open, a catalog ahead of the log, a manifest it needs
//! that is gone — and the file is deleted and rebuilt from the live
//! manifests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition,
};

use crate::error::{catalog, CatalogError, Result};
use crate::format::Location;
use crate::record::{EntryRef, Manifest};

/// How a [`Location`] is stored in the catalog's tables: a redb key needs a
/// redb type, and the tuple orders as `Location` does. [`loc`] and
/// [`unloc`] are the only conversions.
type Loc = (u64, u64);

const META: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("meta");
const STEPS: TableDefinition<u64, Loc> = TableDefinition::new("steps");
const REFS: TableDefinition<Loc, (u64, u64)> = TableDefinition::new("refs");
const CONTENT: MultimapTableDefinition<(u64, u32), Loc> = MultimapTableDefinition::new("content");
const HISTORY: TableDefinition<(&str, u64), Loc> = TableDefinition::new("history");
const SEGMENTS: TableDefinition<u64, u64> = TableDefinition::new("segments");

/// Commits between two `Immediate` catalog commits.
const DURABLE_EVERY: u32 = 16;

fn loc(l: Location) -> Loc {
    (l.segment, l.offset)
}

fn unloc(l: Loc) -> Location {
    Location {
        segment: l.0,
        offset: l.1,
    }
}

/// The root a catalog reflects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CatalogRoot {
    pub generation: u64,
    pub at: Location,
}

/// The dedup index as of one moment: `(payload length, crc32)` to the
/// locations of live entries with that content hash.
pub(crate) struct ContentIndex(redb::ReadOnlyMultimapTable<(u64, u32), Loc>);

impl ContentIndex {
    /// Locations of live entries with this payload length and crc32.
    pub(crate) fn get(&self, len: u64, crc: u32) -> Result<Vec<Location>> {
        guarded("content", || {
            let mut out = Vec::new();
            for v in self.0.get((len, crc)).map_err(catalog)? {
                out.push(unloc(v.map_err(catalog)?.value()));
            }
            Ok(out)
        })
    }
}

/// A step added to or removed from the live set.
pub(crate) struct StepChange<'a> {
    pub step: u64,
    pub manifest_at: Location,
    pub manifest: &'a Manifest,
}

impl<'a> StepChange<'a> {
    /// `(step, manifest location, manifest)` triples, borrowed as changes.
    pub(crate) fn list<M: std::borrow::Borrow<Manifest>>(
        items: &'a [(u64, Location, M)],
    ) -> Vec<StepChange<'a>> {
        items
            .iter()
            .map(|(step, at, m)| StepChange {
                step: *step,
                manifest_at: *at,
                manifest: m.borrow(),
            })
            .collect()
    }
}

#[derive(Debug)]
pub(crate) struct Catalog {
    db: GuardedDatabase,
    path: PathBuf,
    since_durable: u32,
}

impl Catalog {
    /// Opens (or creates) the catalog file.
    fn open_unguarded(path: &Path) -> Result<Catalog> {
        let db = Database::create(path).map_err(catalog)?;
        let cat = Catalog {
            db: GuardedDatabase(Some(db)),
            path: path.to_owned(),
            since_durable: 0,
        };
        let tx = cat.db.begin_write().map_err(catalog)?;
        tx.open_table(META).map_err(catalog)?;
        tx.open_table(STEPS).map_err(catalog)?;
        tx.open_table(REFS).map_err(catalog)?;
        tx.open_multimap_table(CONTENT).map_err(catalog)?;
        tx.open_table(HISTORY).map_err(catalog)?;
        tx.open_table(SEGMENTS).map_err(catalog)?;
        tx.commit().map_err(catalog)?;
        Ok(cat)
    }

    /// Deletes the catalog file and creates an empty one.
    pub(crate) fn recreate(self) -> Result<Catalog> {
        let path = self.path.clone();
        drop(self);
        Catalog::fresh(&path)
    }

    /// Removes whatever is at `path` and creates an empty catalog.
    pub(crate) fn fresh(path: &Path) -> Result<Catalog> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::Error::io("remove", path, e)),
        }
        Catalog::open(path)
    }

    fn root_unguarded(&self) -> Result<Option<CatalogRoot>> {
        read_root(&*self.db)
    }

    /// Live steps and their manifest locations, as the catalog knows them.
    fn steps_unguarded(&self) -> Result<BTreeMap<u64, Location>> {
        read_steps(&*self.db)
    }

    /// Applies one root: steps that left the live set and steps that joined.
    ///
    /// The changes are made in one redb transaction, committed only once
    /// `gate` returns true; when it returns false the transaction is
    /// abandoned and the catalog is left as it was.
    fn apply_unguarded(
        &mut self,
        root: CatalogRoot,
        removed: &[StepChange<'_>],
        added: &[StepChange<'_>],
        gate: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().map_err(catalog)?;
        self.since_durable += 1;
        if self.since_durable >= DURABLE_EVERY {
            self.since_durable = 0;
        } else {
            tx.set_durability(Durability::None).map_err(catalog)?;
        }
        {
            let mut meta = tx.open_table(META).map_err(catalog)?;
            let mut steps = tx.open_table(STEPS).map_err(catalog)?;
            let mut refs = tx.open_table(REFS).map_err(catalog)?;
            let mut content = tx.open_multimap_table(CONTENT).map_err(catalog)?;
            let mut history = tx.open_table(HISTORY).map_err(catalog)?;
            let mut segments = tx.open_table(SEGMENTS).map_err(catalog)?;
            for c in removed {
                steps.remove(c.step).map_err(catalog)?;
                for key in c.manifest.entries.keys() {
                    history.remove((key.as_str(), c.step)).map_err(catalog)?;
                }
            }
            for c in added {
                steps.insert(c.step, loc(c.manifest_at)).map_err(catalog)?;
                for (key, e) in &c.manifest.entries {
                    history
                        .insert((key.as_str(), c.step), loc(e.at))
                        .map_err(catalog)?;
                }
            }
            // The net change of each entry's count of live steps, in
            // location order: one pass over `refs` that touches each row
            // once, and one update per segment instead of one per entry.
            let mut counts: BTreeMap<Loc, (i64, &EntryRef)> = BTreeMap::new();
            for c in removed {
                for e in c.manifest.entry_refs() {
                    counts.entry(loc(e.at)).or_insert((0, e)).0 -= 1;
                }
            }
            for c in added {
                for e in c.manifest.entry_refs() {
                    counts.entry(loc(e.at)).or_insert((0, e)).0 += 1;
                }
            }
            let mut live_delta: BTreeMap<u64, i128> = BTreeMap::new();
            let mut content_added = Vec::new();
            for (l, (d, e)) in counts {
                if d > 0 {
                    let size = e.disk_size();
                    // `insert` returns the row it replaced: one operation for
                    // a new entry (the common case), a second only for an
                    // entry that was live already.
                    let old = refs
                        .insert(l, (d as u64, size))
                        .map_err(catalog)?
                        .map(|g| g.value());
                    match old {
                        Some((n, _)) => {
                            refs.insert(l, (n + d as u64, size)).map_err(catalog)?;
                        }
                        None => {
                            content_added.push(((e.len, e.crc), l));
                            *live_delta.entry(l.0).or_default() += i128::from(size);
                        }
                    }
                } else if d < 0 {
                    let Some((n, size)) = refs.get(l).map_err(catalog)?.map(|g| g.value()) else {
                        continue;
                    };
                    if n <= d.unsigned_abs() {
                        refs.remove(l).map_err(catalog)?;
                        content.remove((e.len, e.crc), l).map_err(catalog)?;
                        *live_delta.entry(l.0).or_default() -= i128::from(size);
                    } else {
                        refs.insert(l, (n - d.unsigned_abs(), size))
                            .map_err(catalog)?;
                    }
                }
            }
            content_added.sort_unstable();
            for (k, l) in content_added {
                content.insert(k, l).map_err(catalog)?;
            }
            for (seg, d) in live_delta {
                let live = segments
                    .get(seg)
                    .map_err(catalog)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                let live = (i128::from(live) + d).clamp(0, i128::from(u64::MAX)) as u64;
                if live == 0 {
                    segments.remove(seg).map_err(catalog)?;
                } else {
                    segments.insert(seg, live).map_err(catalog)?;
                }
            }
            meta.insert("root", (root.generation, root.at.segment, root.at.offset))
                .map_err(catalog)?;
        }
        if !gate() {
            tx.abort().map_err(catalog)?;
            return Ok(false);
        }
        tx.commit().map_err(catalog)?;
        Ok(true)
    }

    /// A read view of the dedup index, to be held for a whole transaction
    /// (one redb read transaction instead of one per put).
    fn content_index_unguarded(&self) -> Result<ContentIndex> {
        let tx = self.db.begin_read().map_err(catalog)?;
        Ok(ContentIndex(
            tx.open_multimap_table(CONTENT).map_err(catalog)?,
        ))
    }

    /// `(step, entry location)` for every live step holding `key`, ascending.
    fn history_unguarded(&self, key: &str) -> Result<Vec<(u64, Location)>> {
        let tx = self.db.begin_read().map_err(catalog)?;
        let t = tx.open_table(HISTORY).map_err(catalog)?;
        let mut out = Vec::new();
        for r in t.range((key, 0)..=(key, u64::MAX)).map_err(catalog)? {
            let (k, v) = r.map_err(catalog)?;
            out.push((k.value().1, unloc(v.value())));
        }
        Ok(out)
    }

    /// Live payload bytes per segment.
    fn segment_live_bytes_unguarded(&self) -> Result<BTreeMap<u64, u64>> {
        let tx = self.db.begin_read().map_err(catalog)?;
        let t = tx.open_table(SEGMENTS).map_err(catalog)?;
        let mut out = BTreeMap::new();
        for r in t.iter().map_err(catalog)? {
            let (k, v) = r.map_err(catalog)?;
            out.insert(k.value(), v.value());
        }
        Ok(out)
    }

    /// Makes the catalog durable (on close, so the next open has nothing to
    /// catch up).
    fn persist_unguarded(&mut self) -> Result<()> {
        let tx = self.db.begin_write().map_err(catalog)?;
        tx.commit().map_err(catalog)?;
        self.since_durable = 0;
        Ok(())
    }
}

/// Runs a catalog operation, turning a panic inside redb into an error.
///
/// redb trusts the bytes of its own file: some damage (a flipped byte in a
/// stored key, found by the corruption tests) makes it panic while decoding
/// instead of returning an error. The catalog is derived data, so damage to
/// it must cost a rebuild, never the process: every entry point below goes
/// through here, and the callers already answer a catalog error by
/// rebuilding or by doing without the catalog. (The panic message still
/// reaches the panic hook.) New entry points follow the same pattern.
fn read_root(db: &impl ReadableDatabase) -> Result<Option<CatalogRoot>> {
    let tx = db.begin_read().map_err(catalog)?;
    let t = tx.open_table(META).map_err(catalog)?;
    Ok(t.get("root").map_err(catalog)?.map(|g| {
        let (generation, s, o) = g.value();
        CatalogRoot {
            generation,
            at: Location {
                segment: s,
                offset: o,
            },
        }
    }))
}

fn read_steps(db: &impl ReadableDatabase) -> Result<BTreeMap<u64, Location>> {
    let tx = db.begin_read().map_err(catalog)?;
    let t = tx.open_table(STEPS).map_err(catalog)?;
    let mut out = BTreeMap::new();
    for r in t.iter().map_err(catalog)? {
        let (k, v) = r.map_err(catalog)?;
        out.insert(k.value(), unloc(v.value()));
    }
    Ok(out)
}

/// The root and live steps a closed writer's catalog recorded, for a reader
/// that wants the writer's evidence of what was durable.
///
/// `None` whenever that cannot be read without disturbing anyone: no
/// catalog, a writer holds it (redb's lock is taken without waiting, so
/// the reader never blocks it), or it was not closed cleanly (redb would
/// need a repair, which is a write). redb opens read-only without writing,
/// so this keeps a read-only open's promise of never changing a file.
pub(crate) fn peek(path: &Path) -> Option<(CatalogRoot, BTreeMap<u64, Location>)> {
    if !path.is_file() {
        return None;
    }
    guarded("peek", || {
        let db = redb::ReadOnlyDatabase::open(path).map_err(catalog)?;
        let root = read_root(&db)?;
        root.map(|r| read_steps(&db).map(|s| (r, s))).transpose()
    })
    .ok()
    .flatten()
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(crate::Error::Catalog(CatalogError::corrupted(format!(
            "the catalog panicked during {what}; it will be rebuilt"
        )))),
    }
}

impl Catalog {
    /// Opens (or creates) the catalog file. A reader peeking at it
    /// ([`peek`]) holds it for a moment; wait for it rather than take the
    /// file for broken and rebuild it.
    pub(crate) fn open(path: &Path) -> Result<Catalog> {
        let mut tries = 0;
        loop {
            match guarded("open", || Catalog::open_unguarded(path)) {
                Err(crate::Error::Catalog(e)) if e.is_already_open() && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                r => return r,
            }
        }
    }

    pub(crate) fn root(&self) -> Result<Option<CatalogRoot>> {
        guarded("root", || self.root_unguarded())
    }

    /// Live steps and their manifest locations, as the catalog knows them.
    pub(crate) fn steps(&self) -> Result<BTreeMap<u64, Location>> {
        guarded("steps", || self.steps_unguarded())
    }

    /// Records a new root: steps removed from and added to the live set.
    pub(crate) fn apply(
        &mut self,
        root: CatalogRoot,
        removed: &[StepChange<'_>],
        added: &[StepChange<'_>],
    ) -> Result<()> {
        self.apply_gated(root, removed, added, || true).map(|_| ())
    }

    /// [`Catalog::apply`], done while the root is still being made durable:
    /// every change is prepared, then `gate` waits for the log and says
    /// whether the root is durable. Only then is the catalog transaction
    /// committed (the catalog must never get ahead of the log); otherwise it
    /// is abandoned. Returns whether it was committed.
    pub(crate) fn apply_gated(
        &mut self,
        root: CatalogRoot,
        removed: &[StepChange<'_>],
        added: &[StepChange<'_>],
        gate: impl FnOnce() -> bool,
    ) -> Result<bool> {
        guarded("apply", || self.apply_unguarded(root, removed, added, gate))
    }

    /// A read view of the dedup index, to be held for a whole transaction.
    pub(crate) fn content_index(&self) -> Result<ContentIndex> {
        guarded("content_index", || self.content_index_unguarded())
    }

    /// `(step, entry location)` for every live step holding `key`, ascending.
    pub(crate) fn history(&self, key: &str) -> Result<Vec<(u64, Location)>> {
        guarded("history", || self.history_unguarded(key))
    }

    /// Live payload bytes per segment.
    pub(crate) fn segment_live_bytes(&self) -> Result<BTreeMap<u64, u64>> {
        guarded("segment_live_bytes", || self.segment_live_bytes_unguarded())
    }

    /// Makes the catalog durable.
    pub(crate) fn persist(&mut self) -> Result<()> {
        guarded("persist", || self.persist_unguarded())
    }
}

/// A redb database whose drop cannot take the process down: redb writes on
/// close and can panic there on a damaged file, like anywhere else.
#[derive(Debug)]
struct GuardedDatabase(Option<Database>);

impl std::ops::Deref for GuardedDatabase {
    type Target = Database;

    fn deref(&self) -> &Database {
        // Always `Some` until `drop`.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("catalog used after drop"))
    }
}

impl Drop for GuardedDatabase {
    fn drop(&mut self) {
        let db = self.0.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
    }
}
