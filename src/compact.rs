//! Space reclamation as the database offers it; the work is done in
//! `crate::gc`, on the writer and the database's read side.

use crate::db::Db;
use crate::error::Result;
use crate::gc::{self, CompactStats, StorageUsage, DEFAULT_LIVE_THRESHOLD};

impl Db {
    /// Reclaims space with the default threshold
    /// ([`DEFAULT_LIVE_THRESHOLD`]): deletes segments with no live entry and
    /// copies forward the live entries of sealed segments less than half
    /// live. Crash-safe at every step; snapshots taken before keep reading
    /// valid bytes.
    pub fn compact(&self) -> Result<CompactStats> {
        self.compact_with(DEFAULT_LIVE_THRESHOLD)
    }

    /// [`Db::compact`] with the live fraction (`0.0..=1.0`) under which a
    /// sealed segment is copied forward. `0.0` only deletes dead segments.
    pub fn compact_with(&self, live_threshold: f64) -> Result<CompactStats> {
        self.reclaim_with(live_threshold, false)
    }

    /// What a training loop runs after each save: [`Db::compact_with`],
    /// except that the catalog's per-segment live bytes are consulted first
    /// and the live manifests are walked only when some segment may be a
    /// candidate.
    pub(crate) fn reclaim(&self, live_threshold: f64) -> Result<CompactStats> {
        self.reclaim_with(live_threshold, true)
    }

    fn reclaim_with(&self, live_threshold: f64, use_catalog: bool) -> Result<CompactStats> {
        gc::check_threshold(live_threshold)?;
        let mut w = self.lock_writer()?;
        gc::reclaim(&mut w, self.store(), live_threshold, use_catalog)
    }

    /// Live bytes, disk use and what compaction would reclaim, computed
    /// from the live manifests and the segment files (read-only; works on
    /// a read-only handle while a writer commits).
    pub fn storage_usage(&self) -> Result<StorageUsage> {
        let disk_bytes = self.disk_usage()?;
        // A writer may reclaim a segment of a step between listing the
        // steps and reading its manifest: read the newer root then.
        self.read_current(|| gc::storage_usage(self.store(), disk_bytes))
    }
}
