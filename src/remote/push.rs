//! One push, and what a run of pushes from one process remembers between
//! them.
//!
//! A push copies the newest local root: it uploads the committed bytes the
//! newest remote root lacks, then writes the next generation's root
//! create-only. Before it builds on the remote's pieces it checks that the
//! local log holds the same bytes, or a writer that continued another log
//! would publish a root naming bytes that are not its own.
//!
//! [`PushSession`] makes that check once per piece rather than once per
//! push: committed bytes never change in place and a piece never changes
//! once written, so a piece this session uploaded, or read back and
//! compared, stays proven. When the remote's newest root is the one this
//! session wrote, nothing is read back; when someone else wrote it, only
//! the pieces the session's own last root does not name are. In the same
//! way the segments each manifest references are
//! walked once (manifests never change either), and the root objects the
//! session wrote are not fetched back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};

use super::{layout, local_segments, range_crc, Progress, PushStats, Remote, KEEP_ROOTS};
use super::{Piece, RemoteSegment, RootObject};
use crate::error::{Error, RemoteErrorKind, Result};
use crate::format::Location as LogLocation;
use crate::record::Manifest;
use crate::Db;

/// What [`PushSession::push`] copied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pushed {
    pub stats: PushStats,
    /// The local root's generation that went up.
    pub local_generation: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct PushSession {
    /// The roots this session wrote, newest last, at most [`KEEP_ROOTS`].
    /// Every piece the newest names was uploaded or checked by this
    /// session before the root went up.
    written: Vec<RootObject>,
    /// The segments each live step's manifest and entries lie in, by the
    /// manifest's location.
    manifest_segments: HashMap<LogLocation, BTreeSet<u64>>,
    /// The last push succeeded, pruning included: the remote then holds
    /// exactly `written` and the pieces they name, so the next prune needs
    /// no listing (see [`PushSession::push_root`]).
    pruned: bool,
}

impl PushSession {
    /// Pushes `db`'s current root (a read-only handle: refresh it first to
    /// see newer commits; or the writer's own handle) to `remote`.
    ///
    /// Reclamation deletes a segment only after a durable root stopped
    /// naming it, so a segment that vanishes under the push means a newer
    /// root exists: the push moves to it and starts again (as reads do,
    /// see `Db::read_current`), a few times at most.
    pub(crate) fn push(
        &mut self,
        remote: &Remote,
        db: &Db,
        progress: Progress<'_>,
    ) -> Result<Pushed> {
        let mut tries = 0;
        loop {
            let before = db.generation();
            let pushed = self.push_root(remote, db, progress);
            // A failed push may leave pieces no root names: the next prune
            // lists the remote to find them.
            self.pruned = pushed.is_ok();
            match pushed {
                Err(e) if db.segments.is_vanished(&e) && tries < 20 => {
                    db.refresh()?;
                    if db.generation() == before {
                        return Err(e);
                    }
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// One attempt of [`PushSession::push`].
    fn push_root(&mut self, remote: &Remote, db: &Db, progress: Progress<'_>) -> Result<Pushed> {
        let log_dir = db.path().join("log");
        // One root for the whole push, even while the writer commits on.
        let (local_generation, committed, live) = {
            let view = db.read_view();
            match &view.root {
                Some(root) => (
                    root.record.generation,
                    Some(root.committed_end()),
                    root.record
                        .live
                        .iter()
                        .map(|l| (l.step, l.manifest.unwrap_or(root.at)))
                        .collect::<Vec<_>>(),
                ),
                None => (0, None, Vec::new()),
            }
        };
        let latest_step = live.last().map(|&(step, _)| step);
        let local = local_segments(&log_dir)?;
        // Reclamation may have deleted a segment the root names since the
        // root was read: that root must not go up without it, so the push
        // fails as the read of that segment would.
        if let Some(gone) = self
            .needed_segments(db, committed, &live)?
            .into_iter()
            .find(|n| !local.contains_key(n))
        {
            let path = crate::log::segment_path(&log_dir, gone);
            return Err(Error::io(
                "open",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let newest = remote.list_roots()?.last().copied();
        // The remote's roots are exactly the ones this session wrote when
        // the newest is ours, ours are consecutive generations (no other
        // writer's root among them) and the last push pruned.
        let only_ours = self.pruned
            && newest.is_some()
            && newest == self.written.last().map(|r| r.generation)
            && self
                .written
                .windows(2)
                .all(|w| w[1].generation == w[0].generation + 1);
        let fetched;
        let prior = match newest {
            Some(g) => match self.written.last() {
                Some(ours) if ours.generation == g => Some(ours),
                _ => {
                    fetched = remote.read_root(g)?;
                    Some(&fetched)
                }
            },
            None => None,
        };
        let proven = self.written.last();
        let prior_segments: BTreeMap<u64, &RemoteSegment> = prior
            .iter()
            .flat_map(|r| r.segments.iter().map(|s| (s.number, s)))
            .collect();
        let mut stats = PushStats {
            generation: prior.map_or(1, |r| r.generation + 1),
            latest_step,
            bytes_uploaded: 0,
            pieces_uploaded: 0,
            bytes_checked: 0,
            objects_deleted: 0,
        };
        // First every segment's plan: the remote pieces it keeps (checked
        // against the local bytes unless proven) and the tail the remote
        // lacks. Only committed bytes go up: nothing past the root's end,
        // no segment after the root's, none before the first root.
        let mut plans = Vec::with_capacity(local.len());
        for (&number, path) in &local {
            let Some(end) = committed else { break };
            if number > end.segment {
                break;
            }
            let size = fs::metadata(path)
                .map_err(|e| Error::io("stat", path, e))?
                .len();
            let len = if number == end.segment {
                size.min(end.offset)
            } else {
                size
            };
            let mut pieces = Vec::new();
            if let Some(seg) = prior_segments.get(&number) {
                let mut file: Option<File> = None;
                for p in &seg.pieces {
                    let mut same = p.offset + p.len <= len;
                    if same && !proven.is_some_and(|r| names(r, number, p)) {
                        let f = match &mut file {
                            Some(f) => f,
                            None => file
                                .insert(File::open(path).map_err(|e| Error::io("open", path, e))?),
                        };
                        same = range_crc(f, path, p.offset, p.len)? == p.crc32;
                        stats.bytes_checked += p.len;
                    }
                    if !same {
                        return Err(Error::remote(
                            RemoteErrorKind::Diverged,
                            format!(
                                "{}: segment {number} bytes {}..{} differ from {}",
                                remote.location,
                                p.offset,
                                p.offset + p.len,
                                path.display()
                            ),
                        ));
                    }
                    pieces.push(*p);
                }
            }
            let have = pieces.last().map_or(0, |p: &Piece| p.offset + p.len);
            plans.push((number, path, pieces, have, len));
        }
        let total: u64 = plans
            .iter()
            .map(|&(_, _, _, have, len)| len.saturating_sub(have))
            .sum();
        progress(0, total);
        let mut segments = Vec::with_capacity(plans.len());
        for (number, path, mut pieces, have, len) in plans {
            if len > have {
                let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
                let done = stats.bytes_uploaded;
                let crc =
                    remote.upload_piece(&mut file, path, number, have, len - have, &mut |n| {
                        progress(done + n, total)
                    })?;
                pieces.push(Piece {
                    offset: have,
                    len: len - have,
                    crc32: crc,
                });
                stats.bytes_uploaded += len - have;
                stats.pieces_uploaded += 1;
            }
            if !pieces.is_empty() {
                segments.push(RemoteSegment { number, pieces });
            }
        }
        let root = RootObject {
            format: layout::ROOT_FORMAT,
            generation: stats.generation,
            latest_step,
            segments,
        };
        remote.put_root(&root)?;
        self.written.push(root);
        let dropped = (self.written.len() > KEEP_ROOTS).then(|| self.written.remove(0));
        // When the remote held only this session's roots, it now holds
        // `written`, the dropped root and their pieces: the prune needs no
        // listing of every object. Otherwise (a new session, a failed
        // push, another writer's root) it lists them.
        stats.objects_deleted = match dropped {
            Some(d) if only_ours => remote.prune_dropped(&d, &self.written)?,
            _ => remote.prune(&self.written)?,
        };
        Ok(Pushed {
            stats,
            local_generation,
        })
    }

    /// The segments the root needs: the one it ends in, and every segment
    /// a live step's manifest or entries lie in. A manifest is read only
    /// the first time this session meets it.
    fn needed_segments(
        &mut self,
        db: &Db,
        committed: Option<LogLocation>,
        live: &[(u64, LogLocation)],
    ) -> Result<BTreeSet<u64>> {
        let Some(committed) = committed else {
            self.manifest_segments.clear();
            return Ok(BTreeSet::new());
        };
        let mut needed = BTreeSet::from([committed.segment]);
        let mut walked = HashMap::with_capacity(live.len());
        for &(_, at) in live {
            let segments = match self.manifest_segments.remove(&at) {
                Some(s) => s,
                None => {
                    let manifest = manifest_at(db, at, committed)?;
                    let mut s: BTreeSet<u64> = manifest.walk().map(|(_, e)| e.at.segment).collect();
                    s.insert(at.segment);
                    s
                }
            };
            needed.extend(&segments);
            walked.insert(at, segments);
        }
        // Manifests of steps no longer live are forgotten.
        self.manifest_segments = walked;
        Ok(needed)
    }
}

/// Whether `root` names piece `p` of segment `number`.
fn names(root: &RootObject, number: u64, p: &Piece) -> bool {
    root.segments
        .binary_search_by_key(&number, |s| s.number)
        .is_ok_and(|i| root.segments[i].pieces.contains(p))
}

/// The manifest at `at`: the one the handle has decoded, else read from
/// the log (checked) without touching the handle's cache.
fn manifest_at(
    db: &Db,
    at: LogLocation,
    committed: LogLocation,
) -> Result<std::sync::Arc<Manifest>> {
    if let Some(m) = db.read_view().manifests.get(&at) {
        return Ok(m.clone());
    }
    Ok(std::sync::Arc::new(db.load_manifest(at, committed)?))
}
