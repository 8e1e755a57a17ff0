//! Space reclamation: deleting segments nothing live points into, and
//! copying the live entries of sparse segments forward so those can go too.
//!
//! # What is live
//!
//! Exactly what the current root can reach: every entry some live step's
//! manifest references (replay pages included), every live step's manifest
//! (inline in a commit record, or a `Kind::Manifest` entry an earlier
//! compaction wrote), and the root itself. Liveness is computed from the live
//! manifests, not from the catalog, so a stale catalog cannot make a live
//! segment look dead.
//!
//! # Order of operations (crash safety)
//!
//! 1. Copies of the live entries of every sparse sealed segment are appended
//!    to the log (same kind, dtype, shape, key and payload; new locations),
//!    followed by a `Kind::Manifest` entry for every live step whose entries
//!    or manifest moved.
//! 2. The log is synced: the copies are durable before anything names them.
//! 3. A **maintenance root** (a commit record adding no step) is published
//!    whose live set points at the relocated manifests; `Writer::commit` syncs it.
//! 4. Only now are the dead and the copied segments unlinked, and the
//!    directory synced.
//!
//! A crash before 3 leaves the old root, which names only old segments
//! (still present; the copies are an uncommitted tail that recovery cuts
//! off). A crash after 3 leaves the new root, whose copies are durable; the
//! old segments are garbage that the next reclamation deletes. Dropped steps
//! never come back: a segment is deleted only after a durable root stopped
//! naming it.
//!
//! # Readers
//!
//! Unlinking a file does not invalidate existing maps of it, so a
//! [`Snapshot`](crate::Snapshot) keeps reading the old bytes. A read-only
//! [`Db`](crate::Db) whose root names a deleted segment moves to the newer root and
//! retries (see [`Db::snapshot`](crate::Db::snapshot)). Never deleted: the active segment, the
//! segment holding the current root, the one holding the root before it
//! (recovery may fall back to that one), and any segment holding a page an
//! open replay table references (a table records its pages by location, so
//! they must not move under it, named by a root yet or not).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{Kind, Location, SEGMENT_HEADER_LEN};
use crate::log::{list_segments, segment_path};
use crate::record::{EntryRef, Manifest};
use crate::view::Store;
use crate::writer::{Relocated, RootChange, Writer};

/// A sealed segment whose live payload is under this fraction of its size is
/// copied forward by [`Db::compact`](crate::Db::compact).
pub const DEFAULT_LIVE_THRESHOLD: f64 = 0.5;

/// What one reclamation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Bytes of segment files before.
    pub bytes_before: u64,
    /// Bytes of segment files after.
    pub bytes_after: u64,
    /// Segment files deleted.
    pub segments_deleted: usize,
    /// Entries copied forward (manifests not counted).
    pub entries_copied: usize,
    /// Payload bytes copied forward.
    pub bytes_copied: u64,
}

/// Where a database's bytes go: what the live steps hold, what the files
/// take, and what [`Db::compact`](crate::Db::compact) would give back.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageUsage {
    /// Live steps.
    pub steps: usize,
    /// Payload bytes of the distinct entries the live steps reference,
    /// replay pages and state included; an entry shared by several steps
    /// or keys counts once.
    pub live_bytes: u64,
    /// The sum of every live step's size, as if nothing were shared.
    pub logical_bytes: u64,
    /// Bytes of the segment files.
    pub segment_bytes: u64,
    /// Bytes on disk: the segment files and the catalog.
    pub disk_bytes: u64,
    /// Segment bytes [`Db::compact`](crate::Db::compact) with the default threshold would free:
    /// segments holding nothing live, and sealed segments under the
    /// threshold minus their live entries (which it copies forward). An
    /// upper bound while a writer keeps segments for open replay tables,
    /// and short by the few relocated manifests compaction also writes.
    pub reclaimable_bytes: u64,
}

impl StorageUsage {
    /// `logical_bytes / live_bytes`: how many times over sharing stores the
    /// live steps (1 when nothing is shared; 0 for an empty database).
    pub fn dedup_ratio(&self) -> f64 {
        if self.live_bytes == 0 {
            0.0
        } else {
            self.logical_bytes as f64 / self.live_bytes as f64
        }
    }
}

/// The live steps' manifests and what they reach, per segment.
struct Liveness {
    /// Every live step: where its manifest is, and the manifest.
    steps: Vec<(u64, Location, Arc<Manifest>)>,
    /// Every live entry, once, by location.
    entries: BTreeMap<Location, EntryRef>,
    /// Live payload bytes (whole entries) per segment.
    live_bytes: BTreeMap<u64, u64>,
    /// Segments holding something live: entries or manifests.
    referenced: BTreeSet<u64>,
}

/// Checks a live threshold.
pub(crate) fn check_threshold(live_threshold: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&live_threshold) {
        return Err(Error::invalid(format!(
            "live threshold {live_threshold} is not within 0..=1"
        )));
    }
    Ok(())
}

/// Reclaims space (see the module documentation) with the writer `w` of
/// the database `store` reads. With `use_catalog` the catalog's per-segment
/// live bytes are consulted first and the live manifests walked only when
/// some segment may be a candidate.
pub(crate) fn reclaim(
    w: &mut Writer,
    store: Store<'_>,
    live_threshold: f64,
    use_catalog: bool,
) -> Result<CompactStats> {
    check_threshold(live_threshold)?;
    w.log.check()?;
    let sizes = segment_sizes(store)?;
    let bytes_before: u64 = sizes.values().sum();
    let mut stats = CompactStats {
        bytes_before,
        bytes_after: bytes_before,
        ..CompactStats::default()
    };
    let (root_segment, prev_segment) = {
        let view = store.read_view();
        let Some(root) = &view.root else {
            return Ok(stats);
        };
        (root.at.segment, root.record.prev_root.map(|p| p.segment))
    };
    // Also never touched: segments holding pages an open replay table
    // references (it records them by location; see `Writer::pins`).
    let protected: BTreeSet<u64> = [Some(w.log.active_segment()), Some(root_segment)]
        .into_iter()
        .chain([prev_segment])
        .flatten()
        .chain(w.pins.segments())
        .collect();
    if use_catalog {
        if let Some(Ok(counted)) = w.catalog.get().map(|c| c.segment_live_bytes()) {
            // The catalog counts live entries, not manifests, so what it
            // counts never exceeds what is live: a segment at or above
            // the threshold by its count is not a candidate.
            let any = sizes.iter().any(|(id, &len)| {
                let used = counted.get(id).copied().unwrap_or(0);
                !protected.contains(id)
                    && (used == 0 || (used as f64) < live_threshold * capacity(len))
            });
            if !any {
                return Ok(stats);
            }
        }
    }
    let live = liveness(store)?;

    let mut dead = BTreeSet::new();
    let mut sparse = BTreeSet::new();
    for (&id, &len) in &sizes {
        if protected.contains(&id) {
            continue;
        }
        if !live.referenced.contains(&id) {
            dead.insert(id);
            continue;
        }
        let used = live.live_bytes.get(&id).copied().unwrap_or(0) as f64;
        if used < live_threshold * capacity(len) {
            sparse.insert(id);
        }
    }
    if dead.is_empty() && sparse.is_empty() {
        return Ok(stats);
    }
    if !sparse.is_empty() {
        let (copied, bytes) = copy_forward(w, store, &live, &sparse)?;
        stats.entries_copied = copied;
        stats.bytes_copied = bytes;
    }
    let doomed: BTreeSet<u64> = dead.union(&sparse).copied().collect();
    for &id in &doomed {
        w.log.remove_segment(id)?;
    }
    // Makes the unlinks durable (the directory is dirty now).
    w.log.sync()?;
    store.segments.retain(|id| !doomed.contains(&id));
    stats.segments_deleted = doomed.len();
    stats.bytes_after = segment_sizes(store)?.values().sum();
    Ok(stats)
}

/// Live bytes, disk use and what compaction would reclaim, computed
/// from the live manifests and the segment files (read-only; works on
/// a read-only handle while a writer commits).
pub(crate) fn storage_usage(store: Store<'_>, disk_bytes: u64) -> Result<StorageUsage> {
    let sizes = segment_sizes(store)?;
    let segment_bytes: u64 = sizes.values().sum();
    let protected: BTreeSet<u64> = {
        let view = store.read_view();
        let Some(root) = &view.root else {
            return Ok(StorageUsage {
                segment_bytes,
                disk_bytes,
                ..StorageUsage::default()
            });
        };
        // The writer appends to the newest segment; which one that is
        // does not need the writer's state.
        [
            Some(root.at.segment),
            root.record.prev_root.map(|p| p.segment),
            sizes.keys().next_back().copied(),
        ]
        .into_iter()
        .flatten()
        .collect()
    };
    let live = liveness(store)?;
    let mut reclaimable = 0;
    for (&id, &len) in &sizes {
        if protected.contains(&id) {
            continue;
        }
        if !live.referenced.contains(&id) {
            reclaimable += len;
            continue;
        }
        let used = live.live_bytes.get(&id).copied().unwrap_or(0);
        if (used as f64) < DEFAULT_LIVE_THRESHOLD * capacity(len) {
            reclaimable += len.saturating_sub(used);
        }
    }
    Ok(StorageUsage {
        steps: live.steps.len(),
        live_bytes: live.entries.values().map(|e| e.len).sum(),
        logical_bytes: live.steps.iter().map(|(_, _, m)| m.logical_bytes()).sum(),
        segment_bytes,
        disk_bytes,
        reclaimable_bytes: reclaimable,
    })
}

/// Sizes of the segment files present.
fn segment_sizes(store: Store<'_>) -> Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for id in list_segments(store.segments.log_dir())? {
        let p = segment_path(store.segments.log_dir(), id);
        match std::fs::metadata(&p) {
            Ok(m) => {
                out.insert(id, m.len());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", p, e)),
        }
    }
    Ok(out)
}

/// Walks the live manifests.
fn liveness(store: Store<'_>) -> Result<Liveness> {
    let mut live = Liveness {
        steps: Vec::new(),
        entries: BTreeMap::new(),
        live_bytes: BTreeMap::new(),
        referenced: BTreeSet::new(),
    };
    for step in store.steps() {
        let (at, m) = store.manifest(step)?;
        live.referenced.insert(at.segment);
        for e in m.entry_refs() {
            if live.entries.insert(e.at, e.clone()).is_none() {
                *live.live_bytes.entry(e.at.segment).or_default() += e.disk_size();
                live.referenced.insert(e.at.segment);
            }
        }
        live.steps.push((step, at, m));
    }
    Ok(live)
}

/// Steps 1–3 of the module documentation for the segments in `sparse`.
/// Returns the number of entries and payload bytes copied.
fn copy_forward(
    w: &mut Writer,
    store: Store<'_>,
    live: &Liveness,
    sparse: &BTreeSet<u64>,
) -> Result<(usize, u64)> {
    let mark = w.log.mark();
    match append_copies(w, store, live, sparse) {
        Ok((moved, relocated)) => {
            let copied = moved.len();
            let bytes = moved.values().map(|e| e.len).sum();
            publish_relocation(w, store, live, relocated)?;
            Ok((copied, bytes))
        }
        Err(e) => {
            // Nothing names the copies yet; cut them off (a poisoned
            // writer refuses, and the next open cuts them instead).
            let _ = w.log.rollback(mark);
            Err(e)
        }
    }
}

/// Appends the copies and the relocated manifests, then syncs. Returns
/// the moved entries (old location → new reference) and, per relocated
/// step, the new manifest and its location.
#[allow(clippy::type_complexity)]
fn append_copies(
    w: &mut Writer,
    store: Store<'_>,
    live: &Liveness,
    sparse: &BTreeSet<u64>,
) -> Result<(
    BTreeMap<Location, EntryRef>,
    BTreeMap<u64, (Location, Manifest)>,
)> {
    let committed = store
        .read_view()
        .committed()
        .ok_or_else(|| Error::invalid("nothing committed"))?;
    let to_copy: Vec<&EntryRef> = live
        .entries
        .values()
        .filter(|e| sparse.contains(&e.at.segment))
        .collect();
    let maps = store.segments.map_all(to_copy.iter().copied(), committed)?;
    let mut moved = BTreeMap::new();
    for e in to_copy {
        // Checked: a damaged entry is not copied into a fresh segment
        // where it would look sound.
        let payload = store.segments.payload(&maps, e, true)?;
        let mut header = e.header();
        let at = w.log.append(&mut header, payload)?;
        moved.insert(e.at, EntryRef::from_header(at, header));
    }
    let mut relocated = BTreeMap::new();
    for (step, at, m) in &live.steps {
        let mut m2 = (**m).clone();
        let changed = remap(&mut m2, &moved);
        if !changed && !sparse.contains(&at.segment) {
            continue;
        }
        let new_at = w.log.append_record(Kind::Manifest, &m2.encode()?)?;
        relocated.insert(*step, (new_at, m2));
    }
    w.log.sync()?;
    Ok((moved, relocated))
}
/// Publishes the maintenance root naming the relocated manifests (the
/// writer's commit also brings the catalog and the manifest cache in line).
fn publish_relocation(
    w: &mut Writer,
    store: Store<'_>,
    live: &Liveness,
    relocated: BTreeMap<u64, (Location, Manifest)>,
) -> Result<()> {
    let mut moved = BTreeMap::new();
    for (step, (new_at, new)) in relocated {
        let (old_at, old) = live
            .steps
            .iter()
            .find(|(s, _, _)| *s == step)
            .map(|(_, at, m)| (*at, m.clone()))
            .ok_or(Error::StepNotFound { step })?;
        moved.insert(
            step,
            Relocated {
                old_at,
                old,
                new_at,
                new,
            },
        );
    }
    w.commit(store, RootChange::Relocate { moved })?;
    Ok(())
}

/// Bytes a segment of `len` bytes has for entries.
fn capacity(len: u64) -> f64 {
    len.saturating_sub(SEGMENT_HEADER_LEN).max(1) as f64
}

/// Points every reference of `m` that moved to its copy. Returns whether
/// anything changed.
fn remap(m: &mut Manifest, moved: &BTreeMap<Location, EntryRef>) -> bool {
    let mut changed = false;
    for e in m.refs_mut() {
        if let Some(n) = moved.get(&e.at) {
            e.at = n.at;
            changed = true;
        }
    }
    changed
}
