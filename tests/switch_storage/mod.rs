//! Test support shared by the trainer tests: a storage whose writes or
//! removals fail while a switch is set, and the lock that keeps tests that
//! spawn child processes apart from the others.

#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use ckptdb::storage::{FsStorage, Storage, StorageFile};

/// What fails while the switch is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Failing {
    Nothing = 0,
    Writes = 1,
    Removals = 2,
}

/// The real file system, with failures switched on and off by the test.
#[derive(Debug, Clone, Default)]
pub struct SwitchStorage {
    mode: Arc<AtomicU8>,
}

impl SwitchStorage {
    pub fn new() -> SwitchStorage {
        SwitchStorage::default()
    }

    /// From now on, `what` fails.
    pub fn set(&self, what: Failing) {
        self.mode.store(what as u8, Ordering::SeqCst);
    }

    fn fails(&self, what: Failing) -> bool {
        self.mode.load(Ordering::SeqCst) == what as u8
    }

    fn wrap(&self, inner: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(SwitchFile {
            inner,
            switch: self.clone(),
        })
    }
}

#[derive(Debug)]
struct SwitchFile {
    inner: Box<dyn StorageFile>,
    switch: SwitchStorage,
}

fn injected() -> io::Error {
    io::Error::other("injected failure")
}

impl Storage for SwitchStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(FsStorage.create_new(path)?))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(FsStorage.open(path)?))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.fails(Failing::Removals) {
            return Err(injected());
        }
        FsStorage.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage.sync_dir(path)
    }
}

impl StorageFile for SwitchFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.switch.fails(Failing::Writes) {
            return Err(injected());
        }
        self.inner.write_at(offset, buf)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

/// Tests that spawn child processes run alone: a child forked while another
/// test holds a database open inherits its `LOCK` descriptor until it execs,
/// and a reopen in that window would find the database locked.
static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn spawning_alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    SPAWNING.write().unwrap_or_else(|e| e.into_inner())
}

pub fn not_while_spawning() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(|e| e.into_inner())
}
