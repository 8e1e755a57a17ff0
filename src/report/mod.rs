//! A run at a glance: how the stored state evolved over the live steps.
//!
//! [`Db::run_report`] gathers, for a range of live steps and a key prefix,
//! every tensor's L2 norm, NaN/Inf counts and relative change from the
//! previous step, the first step at which each key went bad, the metric
//! curves, the storage accounting and the replay tables' fill. The CLI's
//! `ckptdb report` renders it as a page; it is plain data (serde) for
//! anything else.
//!
//! # How the tensors are read
//!
//! Work is planned before anything is read, by entry location: dedup makes
//! one stored entry stand for a key at many steps (and for several keys),
//! and a location is summarized exactly once however many cells show it.
//! A cell whose entry is the previous step's has a change of exactly 0
//! without reading anything. A cell whose entry differs needs
//! `‖w_t − w_{t−1}‖`, which takes both tensors; so a key's successive
//! versions form one job that streams them side by side, a block at a time:
//! each block is hashed for the crc32 check, summarized, and compared with
//! the same block of the version before while that block is still in
//! cache. Every stored byte is read from memory once, as by `verify`,
//! instead of once for the crc32, once as the new version and once more as
//! the old one.
//!
//! The jobs run on a few scoped threads pulling from one shared counter;
//! each keeps only its results (a few numbers per version), so memory stays
//! bounded by the number of cells, not by the size of the tensors.

pub mod stats;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::format::{Kind, Location};
use crate::gc::StorageUsage;
use crate::snapshot::{EntryInfo, Snapshot};
use crate::trainer::policy::{best_steps, Candidate};
use crate::trainer::MetricMode;
use crate::{DType, Db};
pub use stats::{relative_change, summarize, summarize_change, TensorSummary};

/// Which part of the database a report covers.
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    prefix: String,
    steps: Option<RangeInclusive<u64>>,
    threads: usize,
    lower_is_better: Vec<String>,
}

impl ReportOptions {
    /// Every key of every live step, one worker thread per core.
    pub fn new() -> ReportOptions {
        ReportOptions::default()
    }

    /// Only keys starting with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> ReportOptions {
        self.prefix = prefix.into();
        self
    }

    /// Only live steps in `steps`.
    pub fn steps(mut self, steps: RangeInclusive<u64>) -> ReportOptions {
        self.steps = Some(steps);
        self
    }

    /// Worker threads; 0 (the default) picks the number of cores.
    pub fn threads(mut self, threads: usize) -> ReportOptions {
        self.threads = threads;
        self
    }

    /// Metrics whose best value is the lowest (a loss); every other
    /// metric's best is its highest, as for `best:METRIC`.
    pub fn lower_is_better(mut self, metrics: Vec<String>) -> ReportOptions {
        self.lower_is_better = metrics;
        self
    }
}

/// One live step of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRow {
    /// The step number.
    pub step: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The step's size (payload bytes of all its entries).
    pub bytes: u64,
    /// Payload bytes its commit wrote.
    pub new_bytes: u64,
    /// Payload bytes it shares with earlier steps (`bytes − new_bytes`).
    pub shared_bytes: u64,
    /// Its metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Tags naming it.
    pub tags: Vec<String>,
}

/// One metric over the steps that have it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricCurve {
    /// The metric's name.
    pub name: String,
    /// `(step, value)` for every covered step holding the metric.
    pub points: Vec<(u64, f64)>,
    /// The step `best:NAME` (or, for a metric listed in
    /// [`ReportOptions::lower_is_better`], `best:NAME:min`) picks: the
    /// highest (lowest) non-NaN value, the newest among equals.
    pub best_step: Option<u64>,
    /// True when the lowest value is the best.
    pub lower_is_better: bool,
}

/// One tensor at one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Elements, NaN and Inf counts, sum of squares.
    #[serde(flatten)]
    pub summary: TensorSummary,
    /// L2 norm of the finite elements.
    pub l2: f64,
    /// `‖w_t − w_prev‖ / ‖w_prev‖` from the previous covered step, when the
    /// key held a tensor of the same dtype and shape there.
    pub rel_change: Option<f64>,
    /// True when the entry is the previous step's (stored once, shared).
    pub shared: bool,
}

/// One key across the covered steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyRow {
    /// The key.
    pub key: String,
    /// Its first path component (`policy` of `policy/fc1.weight`), the
    /// heatmap's grouping.
    pub group: String,
    /// One cell per covered step; `None` where the key holds no tensor.
    pub cells: Vec<Option<Cell>>,
}

/// The first covered step at which a key held a NaN or an infinity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstBad {
    /// The key.
    pub key: String,
    /// The step.
    pub step: u64,
    /// NaN elements at that step.
    pub nan: u64,
    /// Infinite elements at that step.
    pub inf: u64,
}

/// One replay table at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayPoint {
    /// The step.
    pub step: u64,
    /// Transitions held.
    pub len: u64,
    /// Transitions ever pushed.
    pub total_inserted: u64,
}

/// A bin of a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge.
    pub from: f64,
    /// Upper edge.
    pub to: f64,
    /// Values in `[from, to)` (the last bin includes `to`).
    pub count: u64,
}

/// One replay table over the covered steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayCurve {
    /// The table's name.
    pub table: String,
    /// Its capacity.
    pub capacity: u64,
    /// True for prioritized tables.
    pub prioritized: bool,
    /// Fill at every covered step holding the table.
    pub points: Vec<ReplayPoint>,
    /// For a prioritized table, the distribution of the priority weights
    /// `p^α` held at the newest covered step.
    pub priorities: Vec<Bin>,
}

/// Everything `ckptdb report` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// The key prefix covered.
    pub prefix: String,
    /// The covered steps, ascending.
    pub steps: Vec<StepRow>,
    /// One curve per metric, by name.
    pub metrics: Vec<MetricCurve>,
    /// Every tensor key under the prefix, sorted.
    pub keys: Vec<KeyRow>,
    /// Keys that held NaN or Inf, by first bad step, then key.
    pub first_bad: Vec<FirstBad>,
    /// The whole database's storage (not only the covered steps).
    pub storage: StorageUsage,
    /// `storage.logical_bytes / storage.live_bytes`.
    pub dedup_ratio: f64,
    /// Replay tables, by name.
    pub replay: Vec<ReplayCurve>,
    /// Distinct stored tensors summarized.
    pub entries_read: u64,
    /// Payload bytes streamed to do it.
    pub bytes_read: u64,
}

/// Bins of the priority histogram.
const PRIORITY_BINS: usize = 20;

/// Reading a run of consecutive versions of one key (same dtype and
/// shape, each a different stored entry from the one before) side by side.
struct Job {
    key: String,
    /// The versions' step indices, in step order.
    members: Vec<usize>,
    /// Per member: this job summarizes (and checks the crc32 of) its entry;
    /// false when another job already does.
    summarize: Vec<bool>,
    /// Per member: this job computes the change from the member before.
    change: Vec<bool>,
    bytes: u64,
}

#[derive(Clone)]
struct JobOut {
    summaries: Vec<Option<TensorSummary>>,
    deltas: Vec<Option<f64>>,
}

/// Elements of each version streamed per turn: small enough that a block of
/// the previous version is still in cache when the next version's block
/// is compared with it, so every stored byte comes from memory once.
const BLOCK_BYTES: usize = 64 << 10;

// Streamed blocks must not cut the stats kernels' own blocks, or the sums
// would depend on how the report streams.
const _: () = assert!((BLOCK_BYTES / 8).is_multiple_of(stats::LANES));
const _: () = assert!((BLOCK_BYTES / 4).is_multiple_of(stats::F32_BLOCK));

impl Db {
    /// Gathers the report for `options`. `progress(done, total)` is called
    /// with payload bytes streamed, from the calling thread.
    pub fn run_report(
        &self,
        options: &ReportOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RunReport> {
        let infos: Vec<_> = self
            .step_infos()
            .into_iter()
            .filter(|i| options.steps.as_ref().is_none_or(|r| r.contains(&i.step)))
            .collect();
        let snaps = infos
            .iter()
            .map(|i| self.snapshot(i.step))
            .collect::<Result<Vec<Snapshot>>>()?;
        let storage = self.storage_usage()?;

        // Per key, its tensor entry at every covered step.
        let mut grid: BTreeMap<String, Vec<Option<EntryInfo>>> = BTreeMap::new();
        for (si, snap) in snaps.iter().enumerate() {
            for key in snap.keys_with_prefix(&options.prefix) {
                let Ok(e) = snap.entry(key) else { continue };
                if e.kind != Kind::Tensor || e.dtype.is_none() {
                    continue;
                }
                grid.entry(key.to_owned())
                    .or_insert_with(|| vec![None; snaps.len()])[si] = Some(e);
            }
        }

        let (jobs, by_pair, by_loc) = plan(&grid);
        let total: u64 = jobs.iter().map(|j| j.bytes).sum();
        let outs = run_jobs(&snaps, &jobs, options.threads, total, progress)?;

        let mut keys = Vec::with_capacity(grid.len());
        let mut first_bad = Vec::new();
        for (key, col) in grid {
            let mut cells = Vec::with_capacity(col.len());
            let mut bad_seen = false;
            for (si, e) in col.iter().enumerate() {
                let Some(e) = e else {
                    cells.push(None);
                    continue;
                };
                let summary = by_loc
                    .get(&e.location)
                    .and_then(|&(j, m)| outs[j].summaries[m])
                    .unwrap_or_default();
                let prev = si.checked_sub(1).and_then(|p| col[p].as_ref());
                let comparable = prev.filter(|p| p.dtype == e.dtype && p.shape == e.shape);
                let shared = prev.is_some_and(|p| p.location == e.location);
                let rel_change = comparable.and_then(|p| {
                    if shared {
                        return Some(0.0);
                    }
                    let d = by_pair
                        .get(&(p.location, e.location))
                        .and_then(|&(j, m)| outs[j].deltas[m])?;
                    let ps = by_loc
                        .get(&p.location)
                        .and_then(|&(j, m)| outs[j].summaries[m])?;
                    Some(relative_change(d, &ps))
                });
                if summary.has_non_finite() && !bad_seen {
                    bad_seen = true;
                    first_bad.push(FirstBad {
                        key: key.clone(),
                        step: infos[si].step,
                        nan: summary.nan,
                        inf: summary.inf,
                    });
                }
                cells.push(Some(Cell {
                    dtype: e.dtype.unwrap_or(DType::U8),
                    shape: e.shape.clone(),
                    summary,
                    l2: summary.l2(),
                    rel_change,
                    shared,
                }));
            }
            let group = key.split('/').next().unwrap_or_default().to_owned();
            keys.push(KeyRow { key, group, cells });
        }
        first_bad.sort_by(|a, b| (a.step, &a.key).cmp(&(b.step, &b.key)));

        let replay = replay_curves(&snaps)?;
        let mut metrics: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        for i in &infos {
            for (name, &v) in &i.metrics {
                metrics.entry(name.clone()).or_default().push((i.step, v));
            }
        }
        // The best step is chosen as retention and `best:` choose it.
        let candidates: Vec<Candidate<'_>> = infos
            .iter()
            .map(|i| Candidate {
                step: i.step,
                metrics: &i.metrics,
            })
            .collect();
        let metrics = metrics
            .into_iter()
            .map(|(name, points)| {
                let lower = options.lower_is_better.contains(&name);
                MetricCurve {
                    best_step: best_steps(
                        &candidates,
                        &name,
                        if lower {
                            MetricMode::Min
                        } else {
                            MetricMode::Max
                        },
                        1,
                    )
                    .first()
                    .copied(),
                    lower_is_better: lower,
                    name,
                    points,
                }
            })
            .collect();
        let steps = infos
            .into_iter()
            .map(|i| StepRow {
                step: i.step,
                time_ms: i
                    .time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                bytes: i.logical_bytes,
                new_bytes: i.new_bytes,
                shared_bytes: i.logical_bytes.saturating_sub(i.new_bytes),
                metrics: i.metrics,
                tags: i.tags,
            })
            .collect();
        Ok(RunReport {
            prefix: options.prefix.clone(),
            steps,
            metrics,
            keys,
            first_bad,
            dedup_ratio: storage.dedup_ratio(),
            storage,
            replay,
            entries_read: by_loc.len() as u64,
            bytes_read: total,
        })
    }
}

/// The step `best:METRIC` picks among `points`: highest (with `lower`,
/// lowest) value, newest among equals, NaN never.
type PairIndex = HashMap<(Location, Location), (usize, usize)>;
type LocIndex = HashMap<Location, (usize, usize)>;

/// The jobs reading `grid`, and which (job, member) answers each pair of
/// consecutive entries and each location.
///
/// A key's cells are cut into chains of comparable versions (a cell sharing
/// the previous cell's entry adds nothing; a gap or a dtype or shape change
/// starts a new chain). Each location is summarized once and each distinct
/// pair compared once; a chain is then cut where a member is needed for
/// neither, so dedup across keys reads nothing twice.
fn plan(grid: &BTreeMap<String, Vec<Option<EntryInfo>>>) -> (Vec<Job>, PairIndex, LocIndex) {
    let mut jobs = Vec::new();
    let mut by_pair: PairIndex = HashMap::new();
    let mut by_loc: LocIndex = HashMap::new();
    for (key, col) in grid {
        let mut chain: Vec<(usize, &EntryInfo)> = Vec::new();
        for (si, c) in col.iter().enumerate() {
            let Some(c) = c else {
                flush(key, &mut chain, &mut jobs, &mut by_pair, &mut by_loc);
                continue;
            };
            match chain.last() {
                Some((_, last)) if last.location == c.location => continue,
                Some((_, last)) if last.dtype == c.dtype && last.shape == c.shape => {}
                Some(_) => flush(key, &mut chain, &mut jobs, &mut by_pair, &mut by_loc),
                None => {}
            }
            chain.push((si, c));
        }
        flush(key, &mut chain, &mut jobs, &mut by_pair, &mut by_loc);
    }
    (jobs, by_pair, by_loc)
}

/// Turns one chain into jobs (see [`plan`]) and empties it.
fn flush(
    key: &str,
    chain: &mut Vec<(usize, &EntryInfo)>,
    jobs: &mut Vec<Job>,
    by_pair: &mut PairIndex,
    by_loc: &mut LocIndex,
) {
    let n = chain.len();
    let mut sum = vec![false; n];
    let mut change = vec![false; n];
    for i in 0..n {
        let loc = chain[i].1.location;
        if let Entry::Vacant(slot) = by_loc.entry(loc) {
            slot.insert((usize::MAX, 0));
            sum[i] = true;
        }
        if i > 0 {
            let pair = (chain[i - 1].1.location, loc);
            if let Entry::Vacant(slot) = by_pair.entry(pair) {
                slot.insert((usize::MAX, 0));
                change[i] = true;
            }
        }
    }
    let read = |i: usize| sum[i] || change[i] || (i + 1 < n && change[i + 1]);
    let mut i = 0;
    while i < n {
        if !read(i) {
            i += 1;
            continue;
        }
        let j = jobs.len();
        let mut job = Job {
            key: key.to_owned(),
            members: Vec::new(),
            summarize: Vec::new(),
            change: Vec::new(),
            bytes: 0,
        };
        while i < n && read(i) {
            let (si, e) = chain[i];
            let m = job.members.len();
            if sum[i] {
                by_loc.insert(e.location, (j, m));
            }
            // A change needs the member before, which `read` kept in this
            // job; the first member of a job never has one.
            let ch = change[i] && m > 0;
            if ch {
                by_pair.insert((chain[i - 1].1.location, e.location), (j, m));
            }
            job.members.push(si);
            job.summarize.push(sum[i]);
            job.change.push(ch);
            job.bytes += e.bytes;
            i += 1;
        }
        jobs.push(job);
    }
    chain.clear();
}

/// Runs `jobs` on scoped worker threads while the calling thread reports
/// progress. The first error stops the other workers.
fn run_jobs(
    snaps: &[Snapshot],
    jobs: &[Job],
    threads: usize,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<JobOut>> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(jobs.len())
    .max(1);
    let next = AtomicUsize::new(0);
    let done_bytes = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let outs: Vec<OnceLock<Result<JobOut>>> = jobs.iter().map(|_| OnceLock::new()).collect();
    progress(0, total);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = run_job(snaps, &jobs[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    let _ = outs[i].set(r);
                    done_bytes.fetch_add(jobs[i].bytes, Ordering::Relaxed);
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            progress(done_bytes.load(Ordering::Relaxed), total);
            std::thread::park_timeout(Duration::from_millis(50));
        }
    });
    progress(done_bytes.load(Ordering::Relaxed), total);
    outs.into_iter()
        .map(|o| {
            o.into_inner().unwrap_or(Ok(JobOut {
                summaries: Vec::new(),
                deltas: Vec::new(),
            }))
        })
        .collect()
}

/// Streams the job's versions block by block: each block of a version is
/// hashed (when this job checks it), summarized and compared with the same
/// block of the version before while that one is still in cache. Pages are
/// read unverified and the crc32 is checked at the end, so a corrupt entry
/// still fails the report, after one pass over its bytes instead of two.
fn run_job(snaps: &[Snapshot], job: &Job) -> Result<JobOut> {
    let tensors = job
        .members
        .iter()
        .map(|&si| snaps[si].tensor(&job.key))
        .collect::<Result<Vec<_>>>()?;
    let n = tensors.len();
    let Some(first) = tensors.first() else {
        return Ok(JobOut {
            summaries: Vec::new(),
            deltas: Vec::new(),
        });
    };
    with_element!(first.dtype(), T => {
        let slices = tensors
            .iter()
            .map(|t| t.as_slice_unverified::<T>())
            .collect::<Result<Vec<_>>>()?;
        // The payloads' bytes, for the crc32: the slices cover them exactly.
        let bytes: Vec<&[u8]> = slices.iter().map(|s| bytemuck::cast_slice(s)).collect();
        let mut hashers: Vec<Option<crc32fast::Hasher>> = (0..n)
            .map(|i| (job.summarize[i] && !tensors[i].is_verified()).then(crc32fast::Hasher::new))
            .collect();
        // Versions of one shape hold as many elements; if a payload says
        // otherwise there is no element-wise change to report.
        let change: Vec<bool> = (0..n)
            .map(|i| job.change[i] && slices[i].len() == slices[i - 1].len())
            .collect();
        let size = std::mem::size_of::<T>();
        // A multiple of the lanes and of the f32 block (see the assertion
        // by `BLOCK_BYTES`), so blocks add up as one pass would.
        let block = (BLOCK_BYTES / size.max(1)).max(stats::LANES);
        let longest = slices.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut accs = vec![stats::Accumulator::default(); n];
        let mut start = 0;
        while start < longest {
            for i in 0..n {
                let s = slices[i];
                if start >= s.len() {
                    continue;
                }
                let end = (start + block).min(s.len());
                if let Some(h) = &mut hashers[i] {
                    h.update(&bytes[i][start * size..end * size]);
                }
                if change[i] {
                    accs[i].add_change(&slices[i - 1][start..end], &s[start..end]);
                } else if job.summarize[i] {
                    accs[i].add(&s[start..end]);
                }
            }
            start += block;
        }
        // An empty payload never enters the loop; its hasher holds the crc
        // of zero bytes, as recorded.
        for (t, h) in tensors.iter().zip(hashers) {
            if let Some(h) = h {
                t.check_crc(h.finalize())?;
            }
        }
        Ok(JobOut {
            summaries: (0..n)
                .map(|i| job.summarize[i].then(|| accs[i].summary()))
                .collect(),
            deltas: (0..n)
                .map(|i| change[i].then(|| accs[i].delta_sum_squares()))
                .collect(),
        })
    })
}

/// Fill per step of every replay table, and the priority distribution of
/// prioritized tables at the newest step holding them.
fn replay_curves(snaps: &[Snapshot]) -> Result<Vec<ReplayCurve>> {
    let mut curves: BTreeMap<String, ReplayCurve> = BTreeMap::new();
    for snap in snaps {
        for name in snap.replay_tables() {
            let view = snap.replay(&name)?;
            let c = curves.entry(name.clone()).or_insert_with(|| ReplayCurve {
                table: name.clone(),
                capacity: view.capacity(),
                prioritized: false,
                points: Vec::new(),
                priorities: Vec::new(),
            });
            c.capacity = view.capacity();
            c.points.push(ReplayPoint {
                step: snap.step(),
                len: view.len(),
                total_inserted: view.total_inserted(),
            });
            c.prioritized = view.options().alpha.is_some();
            c.priorities = if c.prioritized {
                let weights: Vec<f64> = (0..view.len())
                    .filter_map(|slot| view.priority_weight(slot))
                    .collect();
                histogram(&weights, PRIORITY_BINS)
            } else {
                Vec::new()
            };
        }
    }
    Ok(curves.into_values().collect())
}

/// `bins` equal-width bins over the finite values' range (one bin when they
/// are all equal; none when there are none).
fn histogram(values: &[f64], bins: usize) -> Vec<Bin> {
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return Vec::new();
    }
    let n = if hi > lo { bins } else { 1 };
    let width = (hi - lo) / n as f64;
    let mut out: Vec<Bin> = (0..n)
        .map(|i| Bin {
            from: lo + width * i as f64,
            to: if i + 1 == n {
                hi
            } else {
                lo + width * (i + 1) as f64
            },
            count: 0,
        })
        .collect();
    for &v in values.iter().filter(|v| v.is_finite()) {
        let i = if width > 0.0 {
            (((v - lo) / width) as usize).min(n - 1)
        } else {
            0
        };
        out[i].count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ndarray::Array1;

    /// Longer than one block, and not a multiple of the lanes.
    const LONG: usize = 3 * BLOCK_BYTES / 4 + 5;

    fn long(seed: u32) -> Vec<f32> {
        (0..LONG as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 10_007) as f32 * 1e-3 - 5.0)
            .collect()
    }

    fn cell<'r>(r: &'r RunReport, key: &str, si: usize) -> Option<&'r Cell> {
        r.keys.iter().find(|k| k.key == key).unwrap().cells[si].as_ref()
    }

    /// `a` changes, stays, comes back to an earlier version, changes shape
    /// and disappears; `b` holds `a`'s contents (stored once, by dedup) at
    /// every step. Every figure is the one-pass summary of the tensors
    /// written here, bit for bit, however the blocks and jobs cut them.
    #[test]
    fn chained_versions_match_one_pass_figures_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("db")).unwrap();
        let mut v1 = long(1);
        v1[17] = f32::NAN;
        v1[LONG - 1] = f32::NEG_INFINITY;
        let v2 = long(2);
        let short: Vec<f32> = (0..7).map(|i| i as f32).collect();
        let steps: [Option<&[f32]>; 6] = [
            Some(&v1),
            Some(&v2),
            Some(&v2),
            Some(&v1),
            Some(&short),
            None,
        ];
        for (si, v) in steps.iter().enumerate() {
            let mut tx = db.begin_step(si as u64 + 1).unwrap();
            if let Some(v) = v {
                for key in ["a", "b"] {
                    tx.put_tensor(key, &Array1::from(v.to_vec())).unwrap();
                }
            }
            tx.put_tensor("c", &Array1::from(vec![1u8; 3])).unwrap();
            tx.commit().unwrap();
        }
        for threads in [1, 3] {
            let r = db
                .run_report(
                    &ReportOptions {
                        threads,
                        ..Default::default()
                    },
                    &mut |_, _| {},
                )
                .unwrap();
            for key in ["a", "b"] {
                for (si, v) in steps.iter().enumerate() {
                    let c = cell(&r, key, si);
                    let Some(v) = v else {
                        assert!(c.is_none());
                        continue;
                    };
                    let c = c.unwrap();
                    assert_eq!(c.summary, summarize(v), "{key} at {si}");
                    let prev = si.checked_sub(1).and_then(|p| steps[p]);
                    let want = prev.filter(|p| p.len() == v.len()).map(|p| {
                        let (_, d) = summarize_change(p, v);
                        relative_change(d.unwrap(), &summarize(p))
                    });
                    assert_eq!(c.rel_change, want, "{key} at {si}");
                }
            }
            assert_eq!(cell(&r, "a", 2).map(|c| c.shared), Some(true));
            assert_eq!(cell(&r, "c", 3).unwrap().rel_change, Some(0.0));
            // One summary per stored entry, however many cells show it.
            let mut locations = std::collections::HashSet::new();
            for step in 1..=steps.len() as u64 {
                let snap = db.snapshot(step).unwrap();
                for key in ["a", "b", "c"] {
                    if let Ok(e) = snap.entry(key) {
                        locations.insert(e.location);
                    }
                }
            }
            assert_eq!(r.entries_read, locations.len() as u64);
            assert!(r.entries_read < 11, "{}", r.entries_read);
            let first: Vec<_> = r
                .first_bad
                .iter()
                .map(|f| (f.key.as_str(), f.step))
                .collect();
            assert_eq!(first, [("a", 1), ("b", 1)]);
        }
    }

    /// A flipped payload byte fails the report with the checksum error a
    /// checked read gives, though the bytes are hashed during the stats
    /// pass rather than before it.
    #[test]
    fn a_corrupt_version_fails_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let marker = 1234.5677f32;
        {
            let db = Db::open(&path).unwrap();
            for step in 1..=3u64 {
                let mut tx = db.begin_step(step).unwrap();
                let mut v = long(step as u32);
                if step == 2 {
                    v[LONG - 3] = marker;
                }
                tx.put_tensor("w", &Array1::from(v)).unwrap();
                tx.commit().unwrap();
            }
        }
        let mut flipped = 0;
        let mut stack = vec![path.clone()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let mut bytes = std::fs::read(&p).unwrap();
            if let Some(at) = bytes.windows(4).position(|w| w == marker.to_le_bytes()) {
                bytes[at] ^= 1;
                std::fs::write(&p, bytes).unwrap();
                flipped += 1;
            }
        }
        assert_eq!(flipped, 1);
        let db = Db::open(&path).unwrap();
        let err = db
            .run_report(&ReportOptions::default(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, crate::Error::ChecksumMismatch { ref key, .. } if key == "w"),
            "{err:?}"
        );
    }

    #[test]
    fn best_step_is_the_newest_highest() {
        let best = |points: &[(u64, f64)], mode| {
            let maps: Vec<BTreeMap<String, f64>> = points
                .iter()
                .map(|&(_, v)| BTreeMap::from([("m".to_owned(), v)]))
                .collect();
            let c: Vec<Candidate<'_>> = points
                .iter()
                .zip(&maps)
                .map(|(&(step, _), metrics)| Candidate { step, metrics })
                .collect();
            best_steps(&c, "m", mode, 1).first().copied()
        };
        let points = [(1, 2.0), (2, 5.0), (3, 5.0), (4, 1.0), (5, 1.0)];
        assert_eq!(best(&points, MetricMode::Max), Some(3));
        assert_eq!(best(&points, MetricMode::Min), Some(5));
        assert_eq!(best(&[(1, f64::NAN)], MetricMode::Max), None);
        assert_eq!(best(&[(1, f64::NAN), (2, -1.0)], MetricMode::Min), Some(2));
    }

    #[test]
    fn histogram_bins_cover_the_range() {
        let h = histogram(&[0.0, 1.0, 2.0, 3.0, 4.0, f64::NAN], 4);
        assert_eq!(h.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 1, 1, 2]);
        assert_eq!((h[0].from, h[3].to), (0.0, 4.0));
        let h = histogram(&[2.0, 2.0], 4);
        assert_eq!((h.len(), h[0].count), (1, 2));
        assert!(histogram(&[], 4).is_empty());
    }
}
