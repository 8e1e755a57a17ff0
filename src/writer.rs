//! The writer: the one owner of a database's mutable state (the log
//! appender, the catalog, the pins of open replay tables and the writer
//! lock), and the one commit path, [`Writer::commit`], through which every
//! new root goes: a step, a tag change, a compaction's relocation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::catalog::{Catalog, CatalogRoot, StepChange};
use crate::error::{Error, Result};
use crate::format::{entry_size, Kind, Location};
use crate::log::pins::PinSet;
use crate::log::write::LogWriter;
use crate::log::FoundRoot;
use crate::record::{now_ms, CommitRecord, LiveStep, Manifest};
use crate::view::Store;

/// The lock file of a database directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// What a new root changes against the current one.
#[derive(Debug)]
pub(crate) enum RootChange {
    /// Adds the step of `manifest` and drops the live steps `dropped` (and
    /// the tags naming them).
    AddStep {
        manifest: Manifest,
        dropped: BTreeSet<u64>,
    },
    /// Names live step `step` `name` (moving the tag if it named another).
    SetTag { name: String, step: u64 },
    /// Removes tag `name`.
    RemoveTag { name: String },
    /// Points live steps at manifests compaction rewrote: per step, where
    /// its manifest was and the old manifest, and where the new one is and
    /// the new manifest.
    Relocate { moved: BTreeMap<u64, Relocated> },
}

/// One step's manifest moved by compaction.
#[derive(Debug)]
pub(crate) struct Relocated {
    pub old_at: Location,
    pub old: Arc<Manifest>,
    pub new_at: Location,
    pub new: Manifest,
}

/// The writer's catalog, which a commit brings up to date behind the
/// caller's back.
///
/// A commit's catalog work (a few redb rows per entry of the step) takes
/// longer than its fsync for a step of many small entries, and nothing but
/// the next use of the catalog needs it done. So [`Writer::commit`] hands
/// the catalog and the change to a thread of its own and returns once the
/// log is durable; the thread commits the catalog transaction only after
/// the fsync succeeded (the catalog is never ahead of the log), and the
/// next use of the catalog ([`CatalogSlot::get`]: a dedup lookup, a
/// history query, compaction, the next commit, closing) waits for it. A
/// catalog that failed there is switched off, as one that fails inline
/// was: the commit stands, dedup stops, the next open rebuilds the file.
#[derive(Debug)]
pub(crate) struct CatalogSlot(Slot);

#[derive(Debug, Default)]
enum Slot {
    /// No catalog (it failed); the next open rebuilds it.
    #[default]
    Off,
    /// Up to date with the newest root.
    Ready(Catalog),
    /// Applying the newest root's change on its own thread; the thread
    /// gives the catalog back, or nothing if it failed.
    Behind(std::thread::JoinHandle<Option<Catalog>>),
}

impl CatalogSlot {
    /// The catalog, up to date with the newest root (waiting for a
    /// commit's apply still running), or `None` when it is off.
    pub(crate) fn get(&mut self) -> Option<&mut Catalog> {
        self.settle();
        match &mut self.0 {
            Slot::Ready(c) => Some(c),
            _ => None,
        }
    }

    /// Waits for an apply in progress and keeps what it gave back.
    fn settle(&mut self) {
        self.0 = match std::mem::take(&mut self.0) {
            Slot::Behind(h) => match h.join() {
                Ok(Some(c)) => Slot::Ready(c),
                // A failed or panicked apply: the catalog is off.
                _ => Slot::Off,
            },
            settled => settled,
        };
    }

    /// Takes the settled catalog out, leaving the slot off.
    fn take(&mut self) -> Option<Catalog> {
        self.settle();
        match std::mem::take(&mut self.0) {
            Slot::Ready(c) => Some(c),
            _ => None,
        }
    }
}

impl Drop for CatalogSlot {
    /// Waits for an apply in progress, so that the catalog's file is closed
    /// before the writer lock is released (a next writer could not open it
    /// otherwise).
    fn drop(&mut self) {
        self.settle();
    }
}

/// The writer's private state, behind the writer mutex. `catalog` is
/// declared before `_lock`, so it is dropped (and its apply joined) first.
#[derive(Debug)]
pub(crate) struct Writer {
    pub log: LogWriter,
    pub catalog: CatalogSlot,
    /// Entries an open replay table references (its full pages). Space
    /// reclamation neither deletes nor moves a segment holding one: a table
    /// records its pages by location at its next commit, so they must stay
    /// where the table knows them to be, whether or not a root names them
    /// yet. Tables and their captures add and release their pins
    /// (`crate::replay`).
    pub pins: PinSet,
    _lock: WriterLock,
}

/// Writer locks this process holds, by canonical database path. The lock
/// itself is an `flock`, which a second open of `LOCK` in the same process
/// cannot take either; the set only lets the refusal say that the holder is
/// this very process (a `Db::open` next to a `CheckpointManager::open` of the
/// same path), which wants a different fix than waiting for another process.
static HELD_LOCKS: Mutex<std::collections::BTreeSet<PathBuf>> =
    Mutex::new(std::collections::BTreeSet::new());

fn held_locks() -> MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    HELD_LOCKS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer lock of one database: the locked `LOCK` file, registered in
/// [`HELD_LOCKS`] while it is held.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
    held_as: PathBuf,
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        held_locks().remove(&self.held_as);
    }
}

/// Takes the writer lock of the database at `path`.
pub(crate) fn lock(path: &Path) -> Result<WriterLock> {
    let p = path.join(LOCK_FILE);
    let held_as = std::fs::canonicalize(path).map_err(|e| Error::io("canonicalize", path, e))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::io("open", &p, e))?;
    match f.try_lock() {
        Ok(()) => {
            held_locks().insert(held_as.clone());
            Ok(WriterLock { _file: f, held_as })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_owned(),
            this_process: held_locks().contains(&held_as),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &p, e)),
    }
}

impl Writer {
    pub(crate) fn new(log: LogWriter, catalog: Catalog, lock: WriterLock) -> Writer {
        Writer {
            log,
            catalog: CatalogSlot(Slot::Ready(catalog)),
            pins: PinSet::default(),
            _lock: lock,
        }
    }

    /// Appends a new root carrying `change` and makes it current: the
    /// commit point of every change to the database. The root is built from
    /// the current root of `store`'s view; once the log is synced the view
    /// moves to it. The catalog applies the same change on its own thread,
    /// alongside the fsync and after this returns (see [`CatalogSlot`]),
    /// and commits it only once the fsync succeeded.
    pub(crate) fn commit(&mut self, store: Store<'_>, change: RootChange) -> Result<FoundRoot> {
        let prev = store.read_view().root.clone();
        let (generation, last_step, prev_root, mut live, mut tags) = match &prev {
            Some(r) => (
                r.record.generation,
                r.record.last_step,
                Some(r.at),
                r.record.live.clone(),
                r.record.tags.clone(),
            ),
            None => (0, None, None, Vec::new(), BTreeMap::new()),
        };
        // Manifests inline in the previous root are referenced by its location.
        for l in &mut live {
            if l.manifest.is_none() {
                l.manifest = prev_root;
            }
        }
        let mut removed = Vec::new();
        let mut step = None;
        let mut relocated = BTreeMap::new();
        match change {
            RootChange::AddStep { manifest, dropped } => {
                for &s in &dropped {
                    let (at, m) = store.manifest(s)?;
                    removed.push((s, at, m));
                }
                live.retain(|l| !dropped.contains(&l.step));
                tags.retain(|_, s| !dropped.contains(s));
                live.push(LiveStep {
                    step: manifest.step,
                    manifest: None,
                    time_ms: manifest.time_ms,
                    logical_bytes: manifest.logical_bytes(),
                    new_bytes: manifest.new_bytes,
                    metrics: manifest.metrics.clone(),
                });
                step = Some(manifest);
            }
            RootChange::SetTag { name, step } => {
                tags.insert(name, step);
            }
            RootChange::RemoveTag { name } => {
                tags.remove(&name);
            }
            RootChange::Relocate { moved } => {
                for l in &mut live {
                    if let Some(r) = moved.get(&l.step) {
                        l.manifest = Some(r.new_at);
                    }
                }
                for (s, r) in moved {
                    removed.push((s, r.old_at, r.old));
                    relocated.insert(s, (r.new_at, r.new));
                }
            }
        }
        let record = CommitRecord {
            generation: generation + 1,
            next_seq: self.log.next_seq() + 1,
            last_step: step.as_ref().map(|m| m.step).or(last_step),
            prev_root,
            time_ms: now_ms(),
            step,
            live,
            tags,
        };
        let payload = record.encode()?;
        let at = self.log.append_record(Kind::Commit, &payload)?;
        let end = at.offset
            + entry_size(0, 0, payload.len() as u64)
                .ok_or_else(|| Error::invalid("commit record over the size limit"))?;
        let mut root = FoundRoot { at, end, record };
        // The new step's manifest goes to the view's manifest cache (see
        // `View::set_root`), not along with every copy of the root.
        let manifest = root.record.step.take().map(Arc::new);
        let target = CatalogRoot {
            generation: root.record.generation,
            at,
        };
        // What the catalog applies, owned, for the thread that applies it.
        let relocated: Vec<(u64, Location, Arc<Manifest>)> = relocated
            .into_iter()
            .map(|(step, (at, m))| (step, at, Arc::new(m)))
            .collect();
        let added: Vec<(u64, Location, Arc<Manifest>)> = manifest
            .iter()
            .map(|m| (m.step, at, Arc::clone(m)))
            .chain(relocated.iter().cloned())
            .collect();
        let (gate, gated) = std::sync::mpsc::sync_channel::<bool>(1);
        let applying = self.catalog.take().and_then(|mut c| {
            let apply = move || {
                let removed = StepChange::list(&removed);
                let added = StepChange::list(&added);
                // A closed channel (the commit thread unwound) counts as a
                // failed fsync: the transaction is dropped, not committed.
                let open = || gated.recv().unwrap_or(false);
                c.apply_gated(target, &removed, &added, open)
                    .ok()
                    .map(|_| c)
            };
            // A thread that cannot start leaves the catalog off (the next
            // open rebuilds it) rather than failing a commit over it.
            std::thread::Builder::new()
                .name("ckptdb-catalog".into())
                .spawn(apply)
                .ok()
        });
        if let Some(h) = applying {
            // Held by the writer from here, so that however this call ends
            // the thread is joined before the catalog is used or closed.
            self.catalog = CatalogSlot(Slot::Behind(h));
        }
        let synced = self.log.sync();
        // The catalog commits its transaction only once this says the log
        // is durable; a send fails only if the apply already failed.
        let _ = gate.send(synced.is_ok());
        if let Err(e) = synced {
            return Err(self.log.poison(e));
        }
        self.log.set_last_root(at);
        {
            let mut view = store.write_view();
            if let Some(m) = manifest {
                view.manifests.insert(at, m);
            }
            for (_, at, m) in relocated {
                view.manifests.insert(at, m);
            }
            view.set_root(Some(root.clone()));
        }
        Ok(root)
    }
}
