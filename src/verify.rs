//! Whole-database verification: every live entry of every live step, read
//! and checked once.

use std::collections::BTreeMap;

use crate::db::Db;
use crate::error::Error;
use crate::format::Location;
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
    /// Reads every entry of every live step — each stored entry once, even
    /// when dedup shares it among many steps and keys — and checks its
    /// header against the manifest and its payload against its crc32, in
    /// log order (so the files are read front to back). A manifest that
    /// fails to load is reported too.
    ///
    /// Errors that are not about one entry (the root cannot be read at all)
    /// are returned as `Err`; everything per entry goes into the report.
    /// `progress(done, total)` is called with payload bytes as they are
    /// checked.
    pub fn verify_all(&self, progress: &mut dyn FnMut(u64, u64)) -> crate::Result<VerifyReport> {
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
