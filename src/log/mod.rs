//! The segment log: append (`write`), find the newest root (`recover`), and
//! read committed entries through memory maps (`read`).

pub(crate) mod background;
pub(crate) mod crc;
pub(crate) mod pins;
pub(crate) mod read;
pub(crate) mod recover;
pub(crate) mod write;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{parse_segment_file_name, segment_file_name, Location};

/// Path of segment `id` under the log directory.
pub(crate) fn segment_path(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(segment_file_name(id))
}

/// The segment numbers present under `log_dir`, ascending. Any other file
/// is an error: the directory is ours alone.
pub(crate) fn list_segments(log_dir: &Path) -> Result<Vec<u64>> {
    let rd = std::fs::read_dir(log_dir).map_err(|e| Error::io("read_dir", log_dir, e))?;
    let mut ids = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read_dir", log_dir, e))?;
        let name = ent.file_name();
        let id = name
            .to_str()
            .and_then(parse_segment_file_name)
            .ok_or_else(|| {
                Error::corruption(
                    ent.path(),
                    0,
                    "unexpected file under log/ (not a ckptdb segment)",
                )
            })?;
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Reads exactly `len` bytes at `offset`, or fewer if the file ends first.
pub(crate) fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// A root as recovery found it.
#[derive(Clone, Debug)]
pub(crate) struct FoundRoot {
    pub at: Location,
    /// End of the commit record's entry (where the next entry goes).
    pub end: u64,
    pub record: crate::record::CommitRecord,
}

impl FoundRoot {
    /// How far committed data reaches as of this root: the end of its
    /// record. Every byte before it in the log is committed; nothing after.
    pub(crate) fn committed_end(&self) -> Location {
        Location {
            segment: self.at.segment,
            offset: self.end,
        }
    }
}
