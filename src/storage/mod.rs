//! The storage seam: every file operation through which the writer changes
//! the disk.
//!
//! The engine never calls `std::fs` to write, truncate, sync or remove; it
//! goes through a [`Storage`]. [`FsStorage`] is the real one. Tests put a
//! fault-injecting implementation here to fail or "crash" at any operation
//! and check what survives. Reads are not part of the seam: committed bytes
//! are read through memory maps of the files themselves, and a crash test
//! reopens the database with a fresh storage after rewriting the files to
//! what a real crash could have left.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "fault-injection")]
pub mod fault;

/// File operations the writer performs.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates a directory and its parents (like `mkdir -p`).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of a directory (created or removed files) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// An open file of a [`Storage`].
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Writes `bufs` one after the other from `offset`. The default writes
    /// them one by one; a file system backend gathers them into one call,
    /// which copies a large batch into the page cache faster than many
    /// calls of a few hundred KiB.
    fn write_all_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let mut at = offset;
        for b in bufs {
            self.write_at(at, b)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl FsStorage {
    /// The real file system as a shared [`Storage`].
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(FsStorage)
    }
}

#[derive(Debug)]
struct FsFile(File);

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FsFile(f)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FsFile(f)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

impl StorageFile for FsFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    /// `writev` at the file position, which nothing else uses: every other
    /// write is positional (`pwrite`).
    fn write_all_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        use std::io::{IoSlice, Seek, SeekFrom, Write};
        let mut f = &self.0;
        f.seek(SeekFrom::Start(offset))?;
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match f.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_write_lands_where_the_pieces_say() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = FsStorage.create_new(&path).unwrap();
        f.write_at(0, b"0123456789").unwrap();
        // Over the tail and past the end, from three pieces.
        f.write_all_vectored_at(6, &[b"ab", b"", b"cdefg"]).unwrap();
        f.write_at(0, b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x12345abcdefg");
        // The file position is not where positional writes go.
        f.write_all_vectored_at(2, &[b"Y"]).unwrap();
        f.write_at(13, b"!").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x1Y345abcdefg!");
    }
}
