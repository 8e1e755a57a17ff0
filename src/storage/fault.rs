//! A fault-injecting [`Storage`] for crash and I/O-error tests.
//!
//! [`FaultStorage`] wraps a real directory: every operation goes through to
//! the real file system (the engine reads committed bytes through memory maps
//! of the real files, so they must hold what the writer wrote), and is also
//! recorded so that a *crash* can later rewrite the files to a state a real
//! power cut could have left.
//!
//! # Operations and how they are counted
//!
//! Every call that changes the disk counts as one operation, numbered from 1:
//! `create_dir_all`, `create_new`, `open`, `remove_file`, `sync_dir`, and on
//! files `write_at`, `sync_data`, `set_len`. (`len` is a read and is not
//! counted.) [`FaultStorage::ops`] says how many have happened, so a test
//! runs a workload once cleanly to learn its length and then injects a fault
//! at each operation in turn.
//!
//! # Faults
//!
//! * [`Fault::Fail`]: operation N (and, with `persistent`, every later one)
//!   returns `EIO` or `ENOSPC` without doing anything.
//! * [`Fault::Crash`]: operation N does not complete (a write at N counts as
//!   issued but not synced), the storage "loses power", and every later
//!   operation fails with `EIO`. [`FaultStorage::crash`] does the same on
//!   demand.
//! * [`Fault::Kill`]: the process dies at operation N (`kill -9`): later
//!   operations fail, the files keep what was written, and
//!   [`FaultStorage::next_process`] gives the next process a storage that
//!   still knows what was never synced, so a power loss after the restart
//!   can take it away.
//!
//! # What a crash leaves
//!
//! For each file it has touched the storage knows the **durable** contents
//! (what the last `sync_data` made durable) and the list of operations since
//! (writes and length changes). On a crash each file is rewritten to:
//!
//! 1. the durable contents, then
//! 2. the unsynced operations, where each write is independently *kept*,
//!    *torn* (only a prefix of it lands, or part of it is replaced by
//!    garbage) or *dropped*, and the writes between two length changes are
//!    applied in a random order (the disk may reorder them). A length change
//!    (`set_len`) is metadata that becomes durable at the next `sync_data`;
//!    on a crash it is applied or not, at its place in program order.
//!
//! A file created since the last `sync_dir` of its directory may vanish
//! altogether. Files the storage never opened (older, sealed segments) are
//! left as they are: an earlier process made them durable. Every choice
//! comes from a seed, so a failing case replays. The catalog `index.redb`
//! does its own I/O outside the seam; it is derived data, and crash tests
//! delete it or keep it at random.
//!
//! # Example
//!
//! ```
//! use ckptdb::storage::fault::{Fault, FaultStorage};
//! use ckptdb::{Db, DbOptions};
//!
//! # fn main() -> ckptdb::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("run.ckpt");
//! let fs = FaultStorage::new(Fault::None);
//! let db = Db::open_with(&path, DbOptions::default().storage(fs.shared()))?;
//! let mut tx = db.begin_step(1)?;
//! tx.put_blob("a", b"acknowledged")?;
//! tx.commit()?;
//! let mut tx = db.begin_step(2)?;
//! tx.put_blob("b", b"in flight")?;
//! fs.crash(7).unwrap(); // the power goes before step 2 commits
//! assert!(tx.commit().is_err());
//! drop(db);
//!
//! let db = Db::open(&path)?; // recovery, on the real file system
//! assert_eq!(db.steps(), [1]);
//! assert_eq!(db.snapshot(1)?.blob("a")?, b"acknowledged");
//! # Ok(())
//! # }
//! ```
//!
//! Simplifications, on purpose: removals (`remove_file`) are durable at once
//! (a removed file never reappears — bringing one back is possible on real
//! file systems but every file ckptdb removes holds nothing committed, so it
//! would only add noise); directories made by `create_dir_all` are durable at
//! once; writes are torn at byte granularity, which is harsher than real
//! sectors. The real file system is never asked to sync (`sync_data` and
//! `sync_dir` only move the model's durable state), since no real power is
//! lost and real fsyncs would make a sweep over thousands of crash points
//! slow.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::{FsStorage, Storage, StorageFile};

/// The error an injected failure returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoFault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the disk is full.
    Enospc,
}

impl IoFault {
    fn error(self) -> io::Error {
        match self {
            IoFault::Eio => io::Error::from_raw_os_error(5),
            IoFault::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// What to do at a given operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Never inject anything (count operations only).
    None,
    /// Fail operation `at` (1-based) with `error`; with `persistent`, fail
    /// every later operation too.
    Fail {
        /// The operation number.
        at: u64,
        /// The error to return.
        error: IoFault,
        /// Keep failing after the first failure.
        persistent: bool,
    },
    /// Crash at operation `at` (1-based); `seed` decides what survives.
    Crash {
        /// The operation number.
        at: u64,
        /// Seed of the choices made for unsynced writes.
        seed: u64,
    },
    /// The process is killed at operation `at` (1-based), which does not
    /// happen: every later operation fails, the files keep everything
    /// written (the operating system has it), and what was not synced is
    /// still not durable. [`FaultStorage::next_process`] continues from
    /// there.
    Kill {
        /// The operation number.
        at: u64,
    },
}

/// One unsynced change to a file.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Tracked {
    /// Contents as of the last `sync_data`.
    durable: Vec<u8>,
    /// Changes since, in program order.
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    ops: u64,
    crashed: bool,
    failed: bool,
    /// Every file the storage has opened or created, by path.
    files: HashMap<PathBuf, Tracked>,
    /// Files created since the last `sync_dir` of their directory.
    undurable_names: BTreeSet<PathBuf>,
}

/// A [`Storage`] that counts operations and injects failures and crashes.
/// Cloning gives another handle to the same state.
#[derive(Clone)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("FaultStorage")
            .field("fault", &s.fault)
            .field("ops", &s.ops)
            .field("crashed", &s.crashed)
            .finish_non_exhaustive()
    }
}

impl FaultStorage {
    /// A storage that injects `fault`.
    pub fn new(fault: Fault) -> FaultStorage {
        FaultStorage::with_files(fault, HashMap::new(), BTreeSet::new())
    }

    /// A storage that injects `fault`, counting from zero, and knows what
    /// of `files` is durable.
    fn with_files(
        fault: Fault,
        files: HashMap<PathBuf, Tracked>,
        undurable_names: BTreeSet<PathBuf>,
    ) -> FaultStorage {
        FaultStorage {
            state: Arc::new(Mutex::new(State {
                fault,
                ops: 0,
                crashed: false,
                failed: false,
                files,
                undurable_names,
            })),
        }
    }

    /// The same storage as a shared `Arc<dyn Storage>` for
    /// [`DbOptions::storage`](crate::DbOptions::storage).
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// True once the storage has crashed.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// True once an injected failure (not a crash) has been returned.
    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Kills the process now (see [`Fault::Kill`]): every later operation
    /// fails; the files are left as they are.
    pub fn kill(&self) {
        self.lock().crashed = true;
    }

    /// A storage for the process that runs after this one was killed: it
    /// knows which bytes are durable and which are only in the operating
    /// system's cache, so a later [`FaultStorage::crash`] (a power loss) can
    /// still lose what was never synced — also bytes the killed process
    /// wrote. Operations are counted from zero again.
    pub fn next_process(&self, fault: Fault) -> FaultStorage {
        let old = self.lock();
        FaultStorage::with_files(fault, old.files.clone(), old.undurable_names.clone())
    }

    /// Crashes now with `seed`: rewrites every touched file to a possible
    /// post-crash state and fails every later operation. Does nothing if the
    /// storage already crashed.
    pub fn crash(&self, seed: u64) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Ok(());
        }
        s.crash(seed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("storage crashed (injected)")
}

/// What an operation should do after counting.
enum Gate {
    Run,
    /// This operation is the crash point.
    Crash(u64),
}

impl State {
    /// Counts one operation and decides its fate.
    fn gate(&mut self) -> io::Result<Gate> {
        if self.crashed {
            return Err(crashed_error());
        }
        self.ops += 1;
        match self.fault {
            Fault::None => Ok(Gate::Run),
            Fault::Fail {
                at,
                error,
                persistent,
            } => {
                if self.ops == at || (persistent && self.ops > at) {
                    self.failed = true;
                    Err(error.error())
                } else {
                    Ok(Gate::Run)
                }
            }
            Fault::Crash { at, seed } => {
                if self.ops == at {
                    Ok(Gate::Crash(seed))
                } else {
                    Ok(Gate::Run)
                }
            }
            Fault::Kill { at } => {
                if self.ops == at {
                    self.crashed = true;
                    Err(crashed_error())
                } else {
                    Ok(Gate::Run)
                }
            }
        }
    }

    /// Counts an operation that does its work only if it is not the crash
    /// point: at the crash point, crashes instead and fails it.
    fn enter(&mut self) -> io::Result<()> {
        if let Gate::Crash(seed) = self.gate()? {
            self.crash(seed)?;
            return Err(crashed_error());
        }
        Ok(())
    }

    fn crash(&mut self, seed: u64) -> io::Result<()> {
        self.crashed = true;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            let Some(t) = self.files.get(&path) else {
                continue;
            };
            if self.undurable_names.contains(&path) && rng.random_bool(0.5) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let contents = survivor(t, &mut rng);
            rewrite(&path, &contents)?;
        }
        self.files.clear();
        self.undurable_names.clear();
        Ok(())
    }
}

/// The contents of a file after a crash, per `rng`.
fn survivor(t: &Tracked, rng: &mut StdRng) -> Vec<u8> {
    let mut out = t.durable.clone();
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let flush = |batch: &mut Vec<(u64, Vec<u8>)>, out: &mut Vec<u8>, rng: &mut StdRng| {
        batch.shuffle(rng);
        for (offset, bytes) in batch.drain(..) {
            let landed: Vec<u8> = match rng.random_range(0..4u32) {
                // Kept whole (the most likely outcome, twice as often).
                0 | 1 => bytes,
                // Torn: a prefix or a garbled middle.
                2 => {
                    let mut b = bytes;
                    if !b.is_empty() {
                        if rng.random_bool(0.5) {
                            let n = rng.random_range(0..b.len());
                            b.truncate(n);
                        } else {
                            let from = rng.random_range(0..b.len());
                            let to = rng.random_range(from..=b.len());
                            for x in &mut b[from..to] {
                                *x = rng.random();
                            }
                        }
                    }
                    b
                }
                // Dropped.
                _ => continue,
            };
            apply_write(out, offset, &landed);
        }
    };
    for p in &t.pending {
        match p {
            Pending::Write { offset, bytes } => batch.push((*offset, bytes.clone())),
            Pending::SetLen(len) => {
                flush(&mut batch, &mut out, rng);
                if rng.random_bool(0.5) {
                    out.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0);
                }
            }
        }
    }
    flush(&mut batch, &mut out, rng);
    out
}

fn apply_write(out: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    let end = start + bytes.len();
    if out.len() < end {
        out.resize(end, 0);
    }
    out[start..end].copy_from_slice(bytes);
}

fn apply(out: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write { offset, bytes } => apply_write(out, *offset, bytes),
        Pending::SetLen(len) => out.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

/// Rewrites the real file at `path` to `contents` without ever making it
/// shorter than `contents` first (a reader may still map its prefix).
fn rewrite(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        // Removed after it was tracked: nothing to rewrite.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    f.write_all_at(contents, 0)?;
    f.set_len(contents.len() as u64)
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.enter()?;
        FsStorage.create_dir_all(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.lock();
        s.enter()?;
        let inner = FsStorage.create_new(path)?;
        s.files.insert(path.to_owned(), Tracked::default());
        s.undurable_names.insert(path.to_owned());
        Ok(Box::new(FaultFile {
            path: path.to_owned(),
            inner,
            state: self.state.clone(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.lock();
        s.enter()?;
        let inner = FsStorage.open(path)?;
        if !s.files.contains_key(path) {
            // Untouched so far: what is on disk now is durable.
            let durable = std::fs::read(path)?;
            s.files.insert(
                path.to_owned(),
                Tracked {
                    durable,
                    pending: Vec::new(),
                },
            );
        }
        Ok(Box::new(FaultFile {
            path: path.to_owned(),
            inner,
            state: self.state.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.enter()?;
        FsStorage.remove_file(path)?;
        s.files.remove(path);
        s.undurable_names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.enter()?;
        s.undurable_names.retain(|p| p.parent() != Some(path));
        Ok(())
    }
}

/// An open file of a [`FaultStorage`].
struct FaultFile {
    path: PathBuf,
    inner: Box<dyn StorageFile>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FaultFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(s: &mut State, path: &Path, p: Pending) {
        s.files.entry(path.to_owned()).or_default().pending.push(p);
    }
}

impl StorageFile for FaultFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        let gate = s.gate()?;
        self.inner.write_at(offset, buf)?;
        FaultFile::record(
            &mut s,
            &self.path,
            Pending::Write {
                offset,
                bytes: buf.to_vec(),
            },
        );
        if let Gate::Crash(seed) = gate {
            // The write was issued when the power went: it may or may not
            // have reached the disk, like any other unsynced write.
            s.crash(seed)?;
            return Err(crashed_error());
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.enter()?;
        // Durability is modelled above; the real file system is not asked to
        // sync (no real power is lost, and it keeps crash sweeps fast).
        let t = s.files.entry(self.path.clone()).or_default();
        let pending = std::mem::take(&mut t.pending);
        for p in &pending {
            apply(&mut t.durable, p);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.enter()?;
        self.inner.set_len(len)?;
        FaultFile::record(&mut s, &self.path, Pending::SetLen(len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        if self.lock().crashed {
            return Err(crashed_error());
        }
        self.inner.len()
    }
}
