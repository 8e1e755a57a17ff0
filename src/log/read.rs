//! Reading committed entries through memory maps.
//!
//! A [`Segments`] caches one map per segment, shared by every snapshot of a
//! database, and remembers which payloads this process has already checked.
//! Maps only ever cover committed bytes (`crate::mmap` explains why that
//! makes them sound): a segment older than the root's is mapped whole, the
//! root's own segment up to the end of the root record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::crc::payload_crc32;
use super::segment_path;
use crate::error::{Error, Result};
use crate::format::{EntryHeader, Location};
use crate::mmap::Mapping;
use crate::record::EntryRef;

/// Maps of the segments a set of entries lives in.
pub(crate) type SegmentMaps = BTreeMap<u64, Arc<Mapping>>;

/// Shared map cache and the set of payloads already checked.
#[derive(Debug)]
pub(crate) struct Segments {
    log_dir: PathBuf,
    maps: Mutex<HashMap<u64, Arc<Mapping>>>,
    verified: Mutex<HashSet<Location>>,
}

impl Segments {
    pub(crate) fn new(log_dir: PathBuf) -> Segments {
        Segments {
            log_dir,
            maps: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// A map of `segment` covering at least `[0, need)`.
    pub(crate) fn map(&self, segment: u64, need: u64, committed: Location) -> Result<Arc<Mapping>> {
        let path = segment_path(&self.log_dir, segment);
        if let Some(m) = self.lock_maps().get(&segment) {
            if m.len() >= need {
                return Ok(m.clone());
            }
        }
        let len = if segment < committed.segment {
            std::fs::metadata(&path)
                .map_err(|e| Error::io("stat", &path, e))?
                .len()
        } else if segment == committed.segment {
            committed.offset
        } else {
            return Err(Error::corruption(&path, 0, "entry lies beyond the root"));
        };
        if len < need {
            return Err(Error::corruption(
                &path,
                need,
                format!("segment holds {len} committed bytes, an entry ends at {need}"),
            ));
        }
        let m = Arc::new(Mapping::map(&path, len).map_err(|e| Error::io("mmap", &path, e))?);
        self.lock_maps().insert(segment, m.clone());
        Ok(m)
    }

    /// True for the error of reading a segment file that does not exist
    /// (any step of reading it: `stat`, `open`, `mmap`).
    pub(crate) fn is_vanished(&self, e: &Error) -> bool {
        matches!(e, Error::Io { path, source, .. }
            if source.kind() == std::io::ErrorKind::NotFound
                && path.parent() == Some(self.log_dir.as_path()))
    }

    /// The corruption a vanished segment (see [`Segments::is_vanished`])
    /// is when the live root names it.
    pub(crate) fn missing_named(&self, e: Error) -> Error {
        match e {
            Error::Io { path, .. } if self.is_vanished(&e) => Error::corruption(
                path,
                0,
                "the segment is missing, but the newest commit names it",
            ),
            e => e,
        }
    }

    /// Maps every segment that `entries` live in.
    pub(crate) fn map_all<'a>(
        &self,
        entries: impl Iterator<Item = &'a EntryRef>,
        committed: Location,
    ) -> Result<SegmentMaps> {
        let mut need: BTreeMap<u64, u64> = BTreeMap::new();
        for e in entries {
            let end = e.at.offset.saturating_add(e.disk_size());
            let n = need.entry(e.at.segment).or_default();
            *n = (*n).max(end);
        }
        need.into_iter()
            .map(|(seg, end)| Ok((seg, self.map(seg, end, committed)?)))
            .collect()
    }

    /// Drops cached maps of segments not in `keep` (snapshots holding them
    /// keep their own references).
    pub(crate) fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.lock_maps().retain(|id, _| keep(*id));
    }

    fn lock_maps(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Mapping>>> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_verified(&self, at: Location) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&at)
    }

    fn set_verified(&self, at: Location) {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(at);
    }

    /// The payload of `e`, from `maps`. The header found at the entry's
    /// location must match the reference; with `verify`, the payload's crc32
    /// is checked the first time this process reads it.
    pub(crate) fn payload<'m>(
        &self,
        maps: &'m SegmentMaps,
        e: &EntryRef,
        verify: bool,
    ) -> Result<&'m [u8]> {
        let path = || segment_path(&self.log_dir, e.at.segment);
        let map = maps
            .get(&e.at.segment)
            .ok_or_else(|| Error::corruption(path(), e.at.offset, "segment not mapped"))?;
        let bytes = map.bytes();
        let start = usize::try_from(e.at.offset)
            .ok()
            .filter(|&s| s < bytes.len())
            .ok_or_else(|| Error::corruption(path(), e.at.offset, "entry outside the segment"))?;
        let header = EntryHeader::decode(&bytes[start..])
            .map_err(|err| Error::corruption(path(), e.at.offset, err.to_string()))?;
        if header.key != e.stored_key
            || header.kind != e.kind
            || header.dtype != e.dtype
            || header.shape != e.shape
            || header.payload_len != e.len
            || header.payload_crc != e.crc
        {
            return Err(Error::corruption(
                path(),
                e.at.offset,
                format!(
                    "entry header does not match the manifest (found {:?})",
                    header.key
                ),
            ));
        }
        let p_start = e.at.offset + header.payload_offset();
        let p_end = p_start
            .checked_add(header.payload_len)
            .filter(|&end| end <= bytes.len() as u64)
            .ok_or_else(|| {
                Error::corruption(path(), e.at.offset, "payload runs past the segment")
            })?;
        let payload = &bytes[p_start as usize..p_end as usize];
        if verify && !self.is_verified(e.at) {
            let actual = payload_crc32(payload);
            if actual != e.crc {
                return Err(Error::ChecksumMismatch {
                    path: path(),
                    offset: e.at.offset,
                    key: e.stored_key.clone(),
                    expected: e.crc,
                    actual,
                });
            }
            self.set_verified(e.at);
        }
        Ok(payload)
    }

    /// True when this process already checked `e`'s crc32.
    pub(crate) fn is_payload_verified(&self, e: &EntryRef) -> bool {
        self.is_verified(e.at)
    }

    /// Compares a crc32 the caller computed over `e`'s payload (fused
    /// with its own pass over the bytes) against the recorded one, with the
    /// same error and the same once-per-process bookkeeping as a checked
    /// [`Segments::payload`].
    pub(crate) fn check_payload_crc(&self, e: &EntryRef, actual: u32) -> Result<()> {
        self.compare_crc(e, actual)?;
        self.set_verified(e.at);
        Ok(())
    }

    fn compare_crc(&self, e: &EntryRef, actual: u32) -> Result<()> {
        if actual != e.crc {
            return Err(Error::ChecksumMismatch {
                path: segment_path(&self.log_dir, e.at.segment),
                offset: e.at.offset,
                key: e.stored_key.clone(),
                expected: e.crc,
                actual,
            });
        }
        Ok(())
    }

    /// Reads `e` and checks its crc32 now, whether or not this process
    /// checked it before (what `verify` needs).
    pub(crate) fn payload_fresh(&self, maps: &SegmentMaps, e: &EntryRef) -> Result<()> {
        let payload = self.payload(maps, e, false)?;
        self.compare_crc(e, payload_crc32(payload))
    }
}
