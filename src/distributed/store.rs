//! Where part records and global commit records live.
//!
//! The global layer needs only four operations of its storage, and the
//! one that coordinates ranks is a create-only put: whoever creates a name
//! first wins, and everyone else learns that it exists. A local or shared
//! directory gives that with `link(2)`, which never replaces a target; an
//! object store gives it with a conditional put (`If-None-Match: *`).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What a create-only put found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// This call created the record.
    Created,
    /// A record of that name existed already; nothing was written.
    Exists,
}

/// Storage of small named records with create-only puts. Names are
/// `/`-separated relative paths (`global/00000000000000000012/part-3`).
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Writes `bytes` under `name` unless `name` exists. When this returns
    /// [`Put::Created`] the record is durable and complete: no reader ever
    /// sees part of it.
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<Put>;
    /// The record under `name`, or `None` when there is none.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// The names directly under the folder `prefix` (without the prefix),
    /// sorted; empty when the folder does not exist.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Deletes the record `name` (nothing when it does not exist).
    fn delete(&self, name: &str) -> Result<()>;
}

/// A [`RecordStore`] in a directory of a local or shared file system.
///
/// A put writes a temporary file, syncs it, links it to its name (which
/// fails when the name exists: the create-only step) and syncs the
/// directory, so a record is either absent or whole and durable.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Records under `root`.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::invalid(format!("record name {name:?}")));
        }
        Ok(self.root.join(name))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

impl RecordStore for LocalStore {
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<Put> {
        let path = self.path(name)?;
        let dir = path
            .parent()
            .ok_or_else(|| Error::invalid(format!("record name {name:?} names no folder")))?
            .to_owned();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", &dir, e))?;
            if let Some(up) = dir.parent() {
                sync_dir(up)?;
            }
        }
        if path.exists() {
            return Ok(Put::Exists);
        }
        // Unique per process and call: racing writers never share a
        // temporary file, and a crashed writer's leftover is never reused.
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut f = File::create_new(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp, e));
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&dir)?;
                Ok(Put::Created)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Put::Exists),
            Err(e) => Err(Error::io("link", &path, e)),
        }
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.path(prefix)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("readdir", &dir, e)),
        };
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::io("readdir", &dir, e))?;
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with(".tmp-") {
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("unlink", &path, e)),
        }
        // An emptied step folder goes too (fails harmlessly when another
        // record is still in it).
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}
