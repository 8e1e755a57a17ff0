//! The database handle: opening, recovery, the current root, and reads.
//!
//! A [`Db`] is either the one writer of a database (it holds the `LOCK`
//! file, the log appender and the catalog) or a read-only view that can live
//! in any number of other processes. Both keep the **current root** — the
//! newest commit record they know — and answer every question from it: the
//! live steps, their manifests, the tags. A reader moves its root forward with
//! [`Db::refresh`]; the writer moves it with every commit.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::catalog::{Catalog, CatalogRoot, StepChange};
use crate::error::{Error, LostCommits, Result};
use crate::format::Location;
use crate::log::read::Segments;
use crate::log::recover::{cut_tail, find_root, find_root_racing, Validate};
use crate::log::write::LogWriter;
use crate::log::{list_segments, segment_path, FoundRoot};
use crate::record::Manifest;
use crate::snapshot::{Snapshot, StepInfo};
use crate::storage::{FsStorage, Storage};
use crate::txn::StepTx;
use crate::view::{Store, View};
use crate::writer::{lock, Writer, LOCK_FILE};

const CATALOG_FILE: &str = "index.redb";
const LOG_DIR: &str = "log";
/// The smallest segment size [`DbOptions::segment_size`] accepts: a
/// segment smaller than a page would be all header.
const MIN_SEGMENT_SIZE: u64 = 4096;

/// Options for opening a database for writing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DbOptions {
    segment_size: u64,
    storage: Arc<dyn Storage>,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            segment_size: 1 << 30,
            storage: FsStorage::shared(),
        }
    }
}

impl DbOptions {
    /// Sets the segment size: a segment is closed and a new one started
    /// when an entry would grow it past this size (one entry larger than
    /// this still goes in one segment). Default 1 GiB, at least 4 KiB.
    ///
    /// ```
    /// use ckptdb::DbOptions;
    /// assert_eq!(DbOptions::default().segment_size_bytes(), 1 << 30);
    /// assert_eq!(DbOptions::default().segment_size(100).segment_size_bytes(), 4096);
    /// ```
    pub fn segment_size(mut self, bytes: u64) -> DbOptions {
        self.segment_size = bytes.max(MIN_SEGMENT_SIZE);
        self
    }

    /// Sets the file operations the writer uses (the default is the real
    /// file system).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> DbOptions {
        self.storage = storage;
        self
    }

    /// The segment size, in bytes.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size
    }
}

/// An open ckptdb database: one directory, one training run.
///
/// `Db` is `Send + Sync`; share it with an `Arc` to commit from a
/// background thread. Only one [`StepTx`] is open at a time (a second
/// `begin_step` waits for the first to end).
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    pub(crate) segments: Arc<Segments>,
    pub(crate) view: RwLock<View>,
    writer: Option<Mutex<Writer>>,
    /// See [`Db::lost_commits`].
    lost: Option<LostCommits>,
}

/// Compares the root the log ends at with the one the writer's catalog
/// recorded after it was durable: fewer generations in the log means
/// durable commits are missing. The lost steps are those the catalog holds
/// live that the log does not.
fn lost_commits(
    found: Option<&FoundRoot>,
    durable: CatalogRoot,
    durable_steps: &BTreeMap<u64, Location>,
) -> Option<LostCommits> {
    let found_gen = found.map_or(0, |r| r.record.generation);
    if found_gen >= durable.generation {
        return None;
    }
    let kept: Vec<u64> =
        found.map_or_else(Vec::new, |r| r.record.live.iter().map(|l| l.step).collect());
    Some(LostCommits {
        commits: durable.generation - found_gen,
        lost_steps: durable_steps
            .keys()
            .copied()
            .filter(|s| kept.binary_search(s).is_err())
            .collect(),
        kept_step: kept.last().copied(),
    })
}

fn not_a_db(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotADatabase {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks that `path` holds only what a database holds.
fn check_layout(path: &Path) -> Result<()> {
    let rd = std::fs::read_dir(path).map_err(|e| Error::io("read_dir", path, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read_dir", path, e))?;
        let name = ent.file_name();
        let ok = match name.to_str() {
            Some(LOG_DIR) => ent.path().is_dir(),
            Some(LOCK_FILE) | Some(CATALOG_FILE) => ent.path().is_file(),
            _ => false,
        };
        if !ok {
            return Err(not_a_db(
                path,
                format!(
                    "it holds {:?}, which is not part of a ckptdb database",
                    name
                ),
            ));
        }
    }
    Ok(())
}

impl Db {
    /// Opens the database at `path` for writing, creating it when the path
    /// does not exist. Recovers from a crash: the newest valid commit is
    /// found, torn bytes after it are cut off, and the catalog is caught up.
    ///
    /// The writer holds an advisory lock (`flock`) on `LOCK` until it is
    /// dropped; a second writer gets [`Error::Locked`]. The lock belongs to
    /// the open file, which a child process started with `fork` shares: a
    /// child that does not `exec` at once (a forked worker pool) keeps the
    /// database locked after this handle is dropped, until the child exits.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, DbOptions::default())
    }

    /// [`Db::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, options: DbOptions) -> Result<Db> {
        let path = path.as_ref().to_owned();
        let storage = options.storage.clone();
        let log_dir = path.join(LOG_DIR);
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_dir() => return Err(not_a_db(&path, "it is not a directory")),
            Ok(_) => check_layout(&path)?,
            // A new database inside another one would be a foreign
            // directory there, and that database would refuse to open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => refuse_inside_database(&path)?,
            Err(e) => return Err(Error::io("stat", &path, e)),
        }
        if !log_dir.exists() {
            storage
                .create_dir_all(&log_dir)
                .map_err(|e| Error::io("mkdir", &log_dir, e))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage
                    .sync_dir(parent)
                    .map_err(|e| Error::io("fsync", parent, e))?;
            }
            storage
                .sync_dir(&path)
                .map_err(|e| Error::io("fsync", &path, e))?;
        }
        let lock = lock(&path)?;

        let cat_path = path.join(CATALOG_FILE);
        let mut catalog = Catalog::open(&cat_path).or_else(|_| Catalog::fresh(&cat_path))?;
        let hint = catalog.root().unwrap_or(None);
        let rec = find_root(&log_dir, hint.map(|h| h.at), Validate::Tail)?;
        if let Some(h) = hint {
            let steps = catalog.steps().unwrap_or_default();
            if let Some(lost) = lost_commits(rec.root.as_ref(), h, &steps) {
                return Err(Error::LostCommits { path, lost });
            }
        }

        let tail = cut_tail(storage.as_ref(), &log_dir, &rec)?;
        let log = LogWriter::open(
            storage,
            &log_dir,
            tail.root,
            tail.next_seq,
            tail.first_id,
            options.segment_size,
        )?;

        let segments = Arc::new(Segments::new(log_dir));
        let mut db = Db {
            path,
            segments,
            view: RwLock::new(View::of(rec.root)),
            writer: None,
            lost: None,
        };
        let catalog = match db.catch_up(&mut catalog) {
            Ok(()) => catalog,
            Err(_) => {
                let mut fresh = catalog.recreate()?;
                db.catch_up(&mut fresh)?;
                fresh
            }
        };
        db.writer = Some(Mutex::new(Writer::new(log, catalog, lock)));
        Ok(db)
    }

    /// Deletes the database at `path`: every segment, the catalog, the lock
    /// file and the directory itself. A path that does not exist is already
    /// gone (`Ok`).
    ///
    /// It takes the writer lock first, so it fails with [`Error::Locked`]
    /// while a writer — in another process or in this one — holds the
    /// database, and a writer cannot start on it while it runs. It refuses
    /// ([`Error::NotADatabase`]) a path that is not a directory or holds
    /// anything a database does not consist of, and removes nothing else.
    ///
    /// The log goes first and that is made durable before the catalog goes:
    /// a crash part-way leaves either a catalog that names commits the log
    /// no longer has (a writer refuses to open it) or no log at all (an
    /// empty database), never an older state that looks complete. Calling
    /// `destroy` again finishes the job.
    pub fn destroy(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", path, e)),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(not_a_db(
                    path,
                    "it is a symbolic link; destroy the directory it points to",
                ))
            }
            Ok(m) if !m.is_dir() => return Err(not_a_db(path, "it is not a directory")),
            Ok(_) => check_layout(path)?,
        }
        let log_dir = path.join(LOG_DIR);
        // Check all of log/ before the first unlink, so a foreign file there
        // leaves the database whole.
        let segments = if log_dir.is_dir() {
            list_segments(&log_dir).map_err(|e| not_a_db(path, e.to_string()))?
        } else {
            Vec::new()
        };
        let lock = lock(path)?;
        let remove = |p: &Path| match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", p, e)),
            _ => Ok(()),
        };
        let sync_dir = |p: &Path| {
            File::open(p)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync", p, e))
        };
        if log_dir.is_dir() {
            for &id in segments.iter().rev() {
                remove(&segment_path(&log_dir, id))?;
            }
            std::fs::remove_dir(&log_dir).map_err(|e| Error::io("rmdir", &log_dir, e))?;
            sync_dir(path)?;
        }
        remove(&path.join(CATALOG_FILE))?;
        // Unlinking the lock file while holding it keeps the lock until the
        // directory is gone; a writer that opens the path after that creates
        // a new database.
        remove(&path.join(LOCK_FILE))?;
        std::fs::remove_dir(path).map_err(|e| Error::io("rmdir", path, e))?;
        drop(lock);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Opens the database at `path` read-only. Never changes a file, works
    /// while a writer process holds the database, and sees every step
    /// committed before it opened; call [`Db::refresh`] to see newer ones.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref().to_owned();
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_dir() => return Err(not_a_db(&path, "it is not a directory")),
            Ok(_) => check_layout(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_db(&path, "it does not exist"))
            }
            Err(e) => return Err(Error::io("stat", &path, e)),
        }
        let log_dir = path.join(LOG_DIR);
        if !log_dir.is_dir() {
            return Err(not_a_db(&path, "it has no log/ directory"));
        }
        let mut rec = find_root_racing(&log_dir, None)?;
        // The writer's evidence of what was durable, when a closed writer
        // left it readable: a lost commit is reported, and steps that a lost
        // commit dropped stay dropped (their data may be reclaimed already).
        let lost = crate::catalog::peek(&path.join(CATALOG_FILE)).and_then(|(durable, steps)| {
            let lost = lost_commits(rec.root.as_ref(), durable, &steps)?;
            if let Some(root) = rec.root.as_mut() {
                let newest = steps.keys().next_back().copied();
                let dropped = |s: u64| !steps.contains_key(&s) && newest.is_some_and(|n| s < n);
                root.record.live.retain(|l| !dropped(l.step));
                root.record.tags.retain(|_, s| !dropped(*s));
            }
            Some(lost)
        });
        Ok(Db {
            path,
            segments: Arc::new(Segments::new(log_dir)),
            view: RwLock::new(View::of(rec.root)),
            writer: None,
            lost,
        })
    }

    /// Durable commits that a read-only open found missing from the log,
    /// by the evidence a closed writer left in its catalog (`None` when
    /// nothing is missing, or when no writer closed cleanly since; see
    /// [`Error::LostCommits`]). Steps that such a commit dropped are not
    /// listed. The writer refuses to open instead.
    pub fn lost_commits(&self) -> Option<&LostCommits> {
        self.lost.as_ref()
    }

    /// Moves a read-only handle to the newest commit. Returns true when it
    /// changed. On the writer this does nothing (it is always current).
    pub fn refresh(&self) -> Result<bool> {
        if self.writer.is_some() {
            return Ok(false);
        }
        let hint = self.read_view().root.as_ref().map(|r| r.at);
        let rec = find_root_racing(self.segments.log_dir(), hint)?;
        let mut view = self.write_view();
        let old = view.root.as_ref().map(|r| r.record.generation);
        let new = rec.root.as_ref().map(|r| r.record.generation);
        if new <= old {
            return Ok(false);
        }
        view.set_root(rec.root);
        drop(view);
        // Stop holding maps of segments the writer reclaimed, so their
        // space comes back (snapshots keep their own maps).
        self.segments
            .retain(|id| rec.segments.binary_search(&id).is_ok());
        Ok(true)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a handle from [`Db::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    pub(crate) fn read_view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_view(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer. Whoever takes it first waits for the log's background
    /// write in flight, if any (`crate::log::background`); a failure of that
    /// write poisons the log and is returned here, so the next call reports
    /// it (later ones report the poisoning).
    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut g = w.lock().unwrap_or_else(PoisonError::into_inner);
        g.log.settle_background()?;
        Ok(g)
    }

    /// The writer, unless someone holds it (an open step transaction): `None`
    /// instead of waiting. Replay tables use it to append full pages without
    /// deadlocking against a transaction of the same thread.
    pub(crate) fn try_lock_writer(&self) -> Result<Option<MutexGuard<'_, Writer>>> {
        let w = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut g = match w.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        g.log.settle_background()?;
        Ok(Some(g))
    }

    /// Live steps, ascending.
    pub fn steps(&self) -> Vec<u64> {
        self.read_view()
            .record()
            .map(|r| r.live.iter().map(|l| l.step).collect())
            .unwrap_or_default()
    }

    /// The newest live step.
    pub fn latest_step(&self) -> Option<u64> {
        self.read_view()
            .record()
            .and_then(|r| r.live.last().map(|l| l.step))
    }

    /// The newest step ever committed (also when retention dropped it); the
    /// next step must be greater.
    pub fn last_committed_step(&self) -> Option<u64> {
        self.read_view().record().and_then(|r| r.last_step)
    }

    /// A snapshot of the newest live step, or `None` for an empty database.
    pub fn latest(&self) -> Result<Option<Snapshot>> {
        loop {
            let Some(step) = self.latest_step() else {
                return Ok(None);
            };
            match self.snapshot(step) {
                // Another thread's commit dropped the step between the two
                // reads (retention); the new newest step is the answer.
                Err(Error::StepNotFound { .. }) if self.latest_step() != Some(step) => continue,
                r => return r.map(Some),
            }
        }
    }

    /// Summaries of every live step, ascending: time, sizes, metrics, tags.
    /// Reads only the root.
    pub fn step_infos(&self) -> Vec<StepInfo> {
        let view = self.read_view();
        let Some(rec) = view.record() else {
            return Vec::new();
        };
        rec.live
            .iter()
            .map(|l| StepInfo::from_live(l, &rec.tags))
            .collect()
    }

    /// Tags and the steps they name.
    pub fn tags(&self) -> BTreeMap<String, u64> {
        self.read_view()
            .record()
            .map(|r| r.tags.clone())
            .unwrap_or_default()
    }

    /// A snapshot of live step `step`. The snapshot holds its own maps of the
    /// segments it reads, so it stays valid while the database moves on,
    /// drops the step, or reclaims the segments.
    pub fn snapshot(&self, step: u64) -> Result<Snapshot> {
        self.read_current(|| self.try_snapshot(step))
    }

    /// The generation of the root this handle reads.
    pub(crate) fn generation(&self) -> u64 {
        self.read_view()
            .root
            .as_ref()
            .map_or(0, |r| r.record.generation)
    }

    /// Runs `read` against the newest root, again and again while segments
    /// vanish under it.
    ///
    /// Any handle can race with space reclamation (a read-only one with the
    /// writer process, the writer's own handle with a compaction on another
    /// thread): the root it read names a segment that has since been
    /// deleted. Reclamation deletes a segment only after a durable root
    /// stopped naming it, so a newer root exists: move to it and read again.
    /// A segment that is missing although the root did not move is named by
    /// the live root — damage (or a file deleted by hand), reported as
    /// corruption, not as an I/O error. A writer that keeps reclaiming
    /// faster than `read` runs ends in the I/O error after a few rounds.
    pub(crate) fn read_current<T>(&self, mut read: impl FnMut() -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            let before = self.generation();
            match read() {
                Err(e) if self.segments.is_vanished(&e) => {
                    self.refresh()?;
                    if self.generation() == before {
                        return Err(self.segments.missing_named(e));
                    }
                    tries += 1;
                    if tries > 20 {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
    }

    fn try_snapshot(&self, step: u64) -> Result<Snapshot> {
        let (_, manifest) = self.manifest(step)?;
        let (committed, tags) = {
            let view = self.read_view();
            let committed = view.committed().ok_or(Error::StepNotFound { step })?;
            let tags: Vec<String> = view
                .record()
                .map(|r| {
                    r.tags
                        .iter()
                        .filter(|(_, &s)| s == step)
                        .map(|(t, _)| t.clone())
                        .collect()
                })
                .unwrap_or_default();
            (committed, tags)
        };
        let maps = self.segments.map_all(manifest.entry_refs(), committed)?;
        Ok(Snapshot::new(manifest, maps, self.segments.clone(), tags))
    }

    /// Reads the manifest stored at `at` (see [`Store::load_manifest`]).
    pub(crate) fn load_manifest(&self, at: Location, committed: Location) -> Result<Manifest> {
        self.store().load_manifest(at, committed)
    }

    /// The manifest of live step `step`.
    pub(crate) fn manifest(&self, step: u64) -> Result<(Location, Arc<Manifest>)> {
        self.store().manifest(step)
    }

    /// The segments and the view, without the writer: what the commit path
    /// and space reclamation read.
    pub(crate) fn store(&self) -> Store<'_> {
        Store {
            segments: &self.segments,
            view: &self.view,
        }
    }

    /// The live steps at which `key`'s content changed (the first step that
    /// holds it, and every later one where it differs from the step before).
    /// [`Error::NotFound`] when no live step holds `key`, as reading it from
    /// any one step would be.
    pub fn history(&self, key: &str) -> Result<Vec<u64>> {
        crate::key::validate_key(key)?;
        self.read_current(|| self.history_once(key))
    }

    fn history_once(&self, key: &str) -> Result<Vec<u64>> {
        // The writer answers from the catalog; a reader (or a writer whose
        // catalog failed) reads the live manifests.
        let from_catalog: Option<HashMap<u64, Location>> = match &self.writer {
            Some(w) => {
                let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
                match w.catalog.get() {
                    Some(c) => Some(c.history(key)?.into_iter().collect()),
                    None => None,
                }
            }
            None => None,
        };
        let mut locations: Vec<(u64, Option<Location>)> = Vec::new();
        for s in self.steps() {
            let at = match &from_catalog {
                Some(held) => held.get(&s).copied(),
                None => self.manifest(s)?.1.entries.get(key).map(|e| e.at),
            };
            locations.push((s, at));
        }
        let mut prev = None;
        let mut changes = Vec::new();
        for (step, at) in locations {
            if at.is_some() && at != prev {
                changes.push(step);
            }
            prev = at;
        }
        if changes.is_empty() {
            return Err(Error::NotFound {
                what: format!("a live step holding key {key:?}"),
            });
        }
        Ok(changes)
    }

    /// Starts the transaction that commits step `step`, with no entries.
    /// `step` must be greater than every step committed before.
    pub fn begin_step(&self, step: u64) -> Result<StepTx<'_>> {
        StepTx::begin(self, step, None)
    }

    /// Starts the transaction for `step` holding every entry of live step
    /// `parent` (metrics excepted): put what changed, remove what is gone.
    pub fn begin_step_from(&self, step: u64, parent: u64) -> Result<StepTx<'_>> {
        StepTx::begin(self, step, Some(parent))
    }

    /// [`Db::begin_step_from`] the newest live step (or empty when there is
    /// none).
    pub fn begin_step_from_latest(&self, step: u64) -> Result<StepTx<'_>> {
        let parent = self.latest_step();
        StepTx::begin(self, step, parent)
    }

    /// Brings `catalog` to the current root by diffing its step set with the
    /// root's live set.
    fn catch_up(&self, catalog: &mut Catalog) -> Result<()> {
        let view = self.read_view();
        let Some(root) = &view.root else {
            if catalog.root()?.is_some() {
                return Err(Error::invalid("catalog ahead of an empty log"));
            }
            return Ok(());
        };
        let target = CatalogRoot {
            generation: root.record.generation,
            at: root.at,
        };
        if catalog.root()? == Some(target) {
            return Ok(());
        }
        let known = catalog.steps()?;
        let live: BTreeMap<u64, Location> = root
            .record
            .live
            .iter()
            .map(|l| (l.step, l.manifest.unwrap_or(root.at)))
            .collect();
        let committed = root.committed_end();
        drop(view);
        let mut removed = Vec::new();
        for (&step, &at) in &known {
            if live.get(&step) != Some(&at) {
                removed.push((step, at, self.load_manifest(at, committed)?));
            }
        }
        let mut added = Vec::new();
        for (&step, &at) in &live {
            if known.get(&step) != Some(&at) {
                added.push((step, at, self.load_manifest(at, committed)?));
            }
        }
        let removed = StepChange::list(&removed);
        let added = StepChange::list(&added);
        catalog.apply(target, &removed, &added)?;
        catalog.persist()
    }

    /// Segment files present, ascending (for statistics and reclamation).
    pub(crate) fn segment_ids(&self) -> Result<Vec<u64>> {
        list_segments(self.segments.log_dir())
    }

    /// Bytes the database takes on disk (segments and catalog).
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        for id in self.segment_ids()? {
            let p = segment_path(self.segments.log_dir(), id);
            match std::fs::metadata(&p) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", p, e)),
            }
        }
        if let Ok(m) = std::fs::metadata(self.path.join(CATALOG_FILE)) {
            total += m.len();
        }
        Ok(total)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(w) = &self.writer {
            let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
            if !w.log.is_poisoned() {
                if let Some(c) = w.catalog.get() {
                    // Best effort: a catalog that is behind is caught up on
                    // the next open.
                    let _ = c.persist();
                }
            }
        }
    }
}

/// Refuses an output path (an export, a new database) inside a database
/// directory: a foreign file there makes the database refuse to open, and a
/// file replaced there would be a segment or the catalog replaced under its
/// writer. Checks the nearest existing ancestor of `out` and every
/// directory above it.
pub(crate) fn refuse_inside_database(out: &Path) -> Result<()> {
    let mut existing = out;
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => return Ok(()),
        }
    }
    let Ok(real) = std::fs::canonicalize(existing) else {
        return Ok(());
    };
    for dir in real.ancestors() {
        if dir.join(LOG_DIR).is_dir() && dir.join(LOCK_FILE).is_file() {
            return Err(Error::invalid(format!(
                "{} is inside the ckptdb database {}; write it elsewhere",
                out.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}
