//! What a database handle sees: the current root and the manifests it
//! names, and the read side ([`Store`]) that the commit path and space
//! reclamation share with [`Db`](crate::Db) without holding the whole handle.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::format::{EntryHeader, Kind, Location};
use crate::log::read::Segments;
use crate::log::{segment_path, FoundRoot};
use crate::record::{CommitRecord, EntryRef, Manifest};

/// What a database handle currently sees.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub root: Option<FoundRoot>,
    /// Decoded manifests of live steps, by location.
    pub manifests: HashMap<Location, Arc<Manifest>>,
}

impl View {
    /// A view whose current root is `root`.
    pub(crate) fn of(root: Option<FoundRoot>) -> View {
        let mut view = View::default();
        view.set_root(root);
        view
    }

    /// Makes `root` current and drops cached manifests of steps no longer
    /// live. The manifest of the step the root added moves into the
    /// manifest cache: the current root never holds one, so reading that
    /// step does not decode the record a second time, and copying the root
    /// (every commit does) does not copy thousands of entries.
    pub(crate) fn set_root(&mut self, root: Option<FoundRoot>) {
        self.root = root.map(|mut r| {
            if let Some(m) = r.record.step.take() {
                self.manifests.insert(r.at, Arc::new(m));
            }
            r
        });
        prune_manifests(self);
    }

    pub(crate) fn record(&self) -> Option<&CommitRecord> {
        self.root.as_ref().map(|r| &r.record)
    }

    pub(crate) fn committed(&self) -> Option<Location> {
        self.root.as_ref().map(FoundRoot::committed_end)
    }

    /// Where the manifest of live step `step` is.
    pub(crate) fn manifest_location(&self, step: u64) -> Option<Location> {
        let root = self.root.as_ref()?;
        let live = root.record.live_step(step)?;
        Some(live.manifest.unwrap_or(root.at))
    }
}

/// Drops cached manifests of steps that are no longer live.
pub(crate) fn prune_manifests(view: &mut View) {
    let Some(root) = &view.root else {
        view.manifests.clear();
        return;
    };
    let keep: std::collections::HashSet<Location> = root
        .record
        .live
        .iter()
        .map(|l| l.manifest.unwrap_or(root.at))
        .collect();
    view.manifests.retain(|at, _| keep.contains(at));
}

/// The read side of a database: its segments and its view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Store<'a> {
    pub segments: &'a Arc<Segments>,
    pub view: &'a RwLock<View>,
}

impl Store<'_> {
    pub(crate) fn read_view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_view(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live steps, ascending.
    pub(crate) fn steps(&self) -> Vec<u64> {
        self.read_view()
            .record()
            .map(|r| r.live.iter().map(|l| l.step).collect())
            .unwrap_or_default()
    }

    /// Reads the manifest stored at `at` (inline in a commit record, or a
    /// manifest entry written by compaction).
    pub(crate) fn load_manifest(&self, at: Location, committed: Location) -> Result<Manifest> {
        let path = segment_path(self.segments.log_dir(), at.segment);
        // Map far enough to hold the header, then the whole entry.
        let probe = self.segments.map(at.segment, at.offset + 64, committed)?;
        let start = at.offset as usize;
        let header = EntryHeader::decode(&probe.bytes()[start..])
            .map_err(|e| Error::corruption(&path, at.offset, e.to_string()))?;
        if header.payload_len > crate::format::MAX_RECORD_LEN {
            return Err(Error::corruption(
                &path,
                at.offset,
                "manifest over the size limit",
            ));
        }
        let kind = header.kind;
        let e = EntryRef::from_header(at, header);
        let maps = self.segments.map_all(std::iter::once(&e), committed)?;
        let bytes = self.segments.payload(&maps, &e, true)?;
        let bad = |err: postcard::Error| {
            Error::corruption(&path, at.offset, format!("manifest does not decode: {err}"))
        };
        match kind {
            Kind::Commit => CommitRecord::decode(bytes)
                .map_err(bad)?
                .step
                .ok_or_else(|| Error::corruption(&path, at.offset, "commit record names no step")),
            Kind::Manifest => Manifest::decode(bytes).map_err(bad),
            _ => Err(Error::corruption(&path, at.offset, "expected a manifest")),
        }
    }

    /// The manifest of live step `step`.
    pub(crate) fn manifest(&self, step: u64) -> Result<(Location, Arc<Manifest>)> {
        let view = self.read_view();
        let at = view
            .manifest_location(step)
            .ok_or(Error::StepNotFound { step })?;
        if let Some(m) = view.manifests.get(&at) {
            return Ok((at, m.clone()));
        }
        let committed = view.committed().ok_or(Error::StepNotFound { step })?;
        drop(view);
        let m = Arc::new(self.load_manifest(at, committed)?);
        self.write_view().manifests.insert(at, m.clone());
        Ok((at, m))
    }
}
