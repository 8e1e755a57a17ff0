//! Whole-database verification: every live entry of every live step, read
//! and checked once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::format::{
    EntryHeader, Kind, Location, ALIGN, MAX_HEADER_LEN, MAX_RECORD_LEN, SEGMENT_HEADER_LEN,
};
use crate::log::{list_segments, read_at, segment_path};
use crate::record::EntryRef;

/// One thing [`Db::verify_all`] found wrong.
#[derive(Debug)]
pub struct Problem {
    /// The entry's key, `replay:<table>/…` for replay data, or `(manifest)`
    /// when a step's manifest itself failed to load.
    pub key: String,
    /// The live steps that reference the entry.
    pub steps: Vec<u64>,
    /// Where the bad entry (or manifest) is stored, when known.
    pub location: Option<Location>,
    /// What was wrong.
    pub error: Error,
}

/// The result of [`Db::verify_all`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Live steps examined.
    pub steps: usize,
    /// Distinct entries read (an entry shared by several steps counts once).
    pub entries: u64,
    /// Payload bytes read and checksummed.
    pub bytes: u64,
    /// Everything that failed; empty when the database is intact.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing failed.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Db {
    /// Walks the entry chain of every segment (looking for damage that
    /// recovery would mistake for a torn tail, see `scan_segment`) and
    /// then reads every entry of every live step — each stored entry once, even
    /// when dedup shares it among many steps and keys — and checks its
    /// header against the manifest and its payload against its crc32, in
    /// log order (so the files are read front to back). A manifest that
    /// fails to load is reported too.
    ///
    /// Errors that are not about one entry (the root cannot be read at all)
    /// are returned as `Err`; everything per entry goes into the report.
    /// `progress(done, total)` is called with payload bytes as they are
    /// checked.
    ///
    /// A writer reclaiming space deletes segments this walk needs; then the
    /// walk starts again on the newer root (see `Db::read_current`), so a
    /// healthy database is never reported damaged. A segment the live root
    /// names that is missing is a problem (corruption). Durable commits
    /// missing from the log ([`Db::lost_commits`]) are a problem too.
    pub fn verify_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut tries = 0;
        loop {
            let before = self.generation();
            let mut report = self.read_current(|| self.verify_once(progress))?;
            let vanished = |r: &VerifyReport| {
                r.problems
                    .iter()
                    .position(|p| self.segments.is_vanished(&p.error))
            };
            let Some(first) = vanished(&report) else {
                return Ok(self.with_lost_commits(report));
            };
            self.refresh()?;
            if self.generation() == before {
                report.problems = report
                    .problems
                    .into_iter()
                    .map(|mut p| {
                        if self.segments.is_vanished(&p.error) {
                            p.error = self.segments.missing_named(p.error);
                        }
                        p
                    })
                    .collect();
                return Ok(self.with_lost_commits(report));
            }
            tries += 1;
            if tries > 20 {
                // The writer keeps reclaiming faster than this walk runs.
                return Err(report.problems.swap_remove(first).error);
            }
        }
    }

    /// Adds the durable commits missing from the log to `report`.
    fn with_lost_commits(&self, mut report: VerifyReport) -> VerifyReport {
        if let Some(lost) = self.lost_commits() {
            report.problems.insert(
                0,
                Problem {
                    key: "(log)".into(),
                    steps: lost.lost_steps.clone(),
                    location: None,
                    error: Error::LostCommits {
                        path: self.path().to_owned(),
                        lost: lost.clone(),
                    },
                },
            );
        }
        report
    }

    fn verify_once(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let (steps, committed) = {
            let view = self.read_view();
            let steps: Vec<(u64, Option<Location>)> = view
                .record()
                .map(|r| {
                    r.live
                        .iter()
                        .map(|l| (l.step, view.manifest_location(l.step)))
                        .collect()
                })
                .unwrap_or_default();
            (steps, view.committed())
        };
        report.steps = steps.len();
        for id in list_segments(self.segments.log_dir())? {
            let path = segment_path(self.segments.log_dir(), id);
            if let Some(p) = scan_segment(&path, id)? {
                report.problems.push(p);
            }
        }
        let Some(committed) = committed else {
            return Ok(report);
        };
        let mut distinct: BTreeMap<Location, (String, EntryRef, Vec<u64>)> = BTreeMap::new();
        for (step, at) in steps {
            let manifest = match self.manifest(step) {
                Ok((_, m)) => m,
                Err(error) => {
                    report.problems.push(Problem {
                        key: "(manifest)".into(),
                        steps: vec![step],
                        location: at,
                        error,
                    });
                    continue;
                }
            };
            for (key, e) in manifest.entry_refs_keyed() {
                distinct
                    .entry(e.at)
                    .or_insert_with(|| (key, e.clone(), Vec::new()))
                    .2
                    .push(step);
            }
        }
        let total: u64 = distinct.values().map(|(_, e, _)| e.len).sum();
        for (at, (key, e, steps)) in distinct {
            let checked = self
                .segments
                .map_all(std::iter::once(&e), committed)
                .and_then(|maps| self.segments.payload_fresh(&maps, &e));
            if let Err(error) = checked {
                report.problems.push(Problem {
                    key,
                    steps,
                    location: Some(at),
                    error,
                });
            }
            report.entries += 1;
            report.bytes += e.len;
            progress(report.bytes, total);
        }
        Ok(report)
    }
}

/// Finds damage in the middle of a segment's entry chain.
///
/// Recovery reads a segment as a chain of entries and takes the first entry
/// that does not decode as the end of the log (a torn write). That is right
/// at the tail, where an interrupted append leaves garbage, but damage in
/// the middle of the chain looks the same, and hides every commit after it:
/// readers fall back to an older root (or none), and a writer's recovery
/// would cut the rest of the log off.
///
/// A crash can leave holes in the one transaction that was being written
/// (pages reach the disk in any order until the commit's `fdatasync`), so
/// intact entries after a break are not proof of damage by themselves. But
/// the writer appends nothing after a commit record until that record is
/// synced, and syncing it made every earlier byte durable. So the chain is
/// walked to where it breaks, the remaining bytes are searched at every
/// 64-byte boundary for entry headers whose crc32 holds, and the break is
/// reported when an intact commit record is followed by another intact
/// entry: everything before that commit was durable, so the break is
/// damage, not a torn tail. A commit record whose header is intact but
/// whose payload is not (recovery stops there too) counts as such a commit.
fn scan_segment(path: &Path, id: u64) -> Result<Option<Problem>> {
    let file = match File::open(path) {
        Ok(f) => f,
        // Reclaimed since it was listed; if a live step needed it, reading
        // that step's entries reports it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut off = SEGMENT_HEADER_LEN;
    let mut last_seq = None;
    let mut broken_commit_end = None;
    let why = loop {
        if off >= len {
            return Ok(None);
        }
        let bytes = read_at(&file, path, off, MAX_HEADER_LEN.min((len - off) as usize))?;
        let header = match EntryHeader::decode(&bytes) {
            Ok(h) => h,
            Err(e) => break e.to_string(),
        };
        if last_seq.is_some_and(|s| header.seq <= s) {
            break format!("sequence number {} does not increase", header.seq);
        }
        let Some(end) = off.checked_add(header.entry_size()).filter(|&e| e <= len) else {
            break "entry runs past the end of the segment".to_owned();
        };
        // Recovery also stops at a commit record whose payload is damaged.
        if header.kind == Kind::Commit && header.payload_len <= MAX_RECORD_LEN {
            let payload = read_at(
                &file,
                path,
                off + header.payload_offset(),
                header.payload_len as usize,
            )?;
            if crc32fast::hash(&payload) != header.payload_crc {
                // The record's header is intact, so it was written whole:
                // anything intact after it means it had been synced.
                broken_commit_end = Some(end);
                break "commit record fails its checksum".to_owned();
            }
        }
        off = end;
        last_seq = Some(header.seq);
    };
    const CHUNK: u64 = 4 << 20;
    let mut commit_end: Option<u64> = broken_commit_end;
    let mut pos = off + ALIGN;
    while pos + ALIGN <= len {
        let want = (CHUNK + MAX_HEADER_LEN as u64).min(len - pos) as usize;
        let bytes = read_at(&file, path, pos, want)?;
        let mut i = 0usize;
        while (i as u64) < CHUNK && i + ALIGN as usize <= bytes.len() {
            let at = pos + i as u64;
            i += ALIGN as usize;
            let tail = &bytes[i - ALIGN as usize..];
            if !tail.starts_with(b"CKPE") {
                continue;
            }
            let Ok(h) = EntryHeader::decode(tail) else {
                continue;
            };
            if let Some(ce) = commit_end.filter(|&ce| at >= ce) {
                return Ok(Some(Problem {
                    key: "(log)".into(),
                    steps: Vec::new(),
                    location: Some(Location {
                        segment: id,
                        offset: off,
                    }),
                    error: Error::corruption(
                        path,
                        off,
                        format!(
                            "the entry chain breaks here ({why}), but intact entries follow \
                             (a commit record ending at {ce}, more at {at}): the commits after \
                             this point are invisible"
                        ),
                    ),
                }));
            }
            if h.kind == Kind::Commit && commit_end.is_none() {
                commit_end = at.checked_add(h.entry_size());
            }
        }
        pos += CHUNK;
    }
    Ok(None)
}
