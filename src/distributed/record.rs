//! The part and global commit records, and the checks that turn a full set
//! of parts into a global commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::error::{Error, Result, ShardProblem};

/// Version of the JSON records under `global/`.
pub(crate) const RECORD_VERSION: u32 = 1;

/// One entry a rank put into its part of a global step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartEntry {
    /// A replicated tensor (every rank has the whole of it) rather than a
    /// shard.
    pub replicated: bool,
    /// True when this rank's log holds the bytes (every shard; a replicated
    /// tensor only on rank 0).
    pub stored: bool,
    pub dtype: DType,
    pub global_shape: Vec<u64>,
    pub offsets: Vec<u64>,
    /// Shape of this rank's slice.
    pub shape: Vec<u64>,
    /// crc32 of the slice's bytes.
    pub crc32: u32,
}

/// `global/<N>/part-<r>`: rank `r`'s part of global step `N`, durable in
/// its log as local step `local_step`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    pub version: u32,
    pub step: u64,
    pub rank: u32,
    pub world_size: u32,
    pub local_step: u64,
    pub entries: BTreeMap<String, PartEntry>,
}

/// One slice of a global tensor, held by `rank`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardRef {
    pub rank: u32,
    pub offsets: Vec<u64>,
    pub shape: Vec<u64>,
    pub crc32: u32,
}

/// A key of a globally committed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GlobalKey {
    pub dtype: DType,
    pub global_shape: Vec<u64>,
    pub replicated: bool,
    /// Slices that tile `global_shape` exactly, sorted by rank.
    pub shards: Vec<ShardRef>,
}

/// The committed content of a global step: everything a reader needs,
/// without the part records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommitRecord {
    pub step: u64,
    pub world_size: u32,
    /// Local step of each rank, by rank.
    pub local_steps: Vec<u64>,
    pub keys: BTreeMap<String, GlobalKey>,
}

/// `global/<N>/COMMIT`, written once: either the step's commit or the
/// verdict that it never commits (a later step committed first). One name
/// for both outcomes makes the create-only put decide between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum Verdict {
    Committed {
        version: u32,
        #[serde(flatten)]
        record: CommitRecord,
    },
    Abandoned {
        version: u32,
        /// The committed step that made this one obsolete.
        by_step: u64,
    },
}

fn shard_error(step: u64, key: &str, problem: ShardProblem) -> Error {
    Error::ShardLayout {
        step,
        key: key.to_owned(),
        problem,
    }
}

fn volume(shape: &[u64]) -> u128 {
    shape.iter().map(|&d| d as u128).product()
}

/// Checks one slice against its global shape (at put time and again at
/// the global commit).
pub(crate) fn check_bounds(
    step: u64,
    key: &str,
    global_shape: &[u64],
    offsets: &[u64],
    shape: &[u64],
) -> Result<()> {
    if offsets.len() != global_shape.len() || shape.len() != global_shape.len() {
        return Err(shard_error(
            step,
            key,
            ShardProblem::RankMismatch {
                global: global_shape.len(),
                offsets: offsets.len(),
                shard: shape.len(),
            },
        ));
    }
    for d in 0..global_shape.len() {
        let end = offsets[d].checked_add(shape[d]);
        if end.is_none_or(|e| e > global_shape[d]) {
            return Err(shard_error(
                step,
                key,
                ShardProblem::OutOfBounds {
                    offsets: offsets.to_vec(),
                    shape: shape.to_vec(),
                },
            ));
        }
    }
    Ok(())
}

fn overlaps(a: &ShardRef, b: &ShardRef) -> bool {
    (0..a.offsets.len()).all(|d| {
        a.offsets[d] < b.offsets[d] + b.shape[d] && b.offsets[d] < a.offsets[d] + a.shape[d]
    }) && volume(&a.shape) > 0
        && volume(&b.shape) > 0
}

/// Builds the commit of `step` from all `world_size` parts (sorted by
/// rank), or the typed error that keeps it from committing.
pub(crate) fn build_commit(
    step: u64,
    world_size: u32,
    parts: &[PartRecord],
) -> Result<CommitRecord> {
    let mut keys: BTreeMap<String, GlobalKey> = BTreeMap::new();
    let mut replica_crc: BTreeMap<&str, (u32, &PartEntry)> = BTreeMap::new();
    for p in parts {
        if p.world_size != world_size || p.step != step {
            return Err(Error::corruption(
                format!("global/{step}/part-{}", p.rank),
                0,
                format!(
                    "part of step {} for world size {} in step {step} of world size {world_size}",
                    p.step, p.world_size
                ),
            ));
        }
        for (key, e) in &p.entries {
            check_bounds(step, key, &e.global_shape, &e.offsets, &e.shape)?;
            let g = keys.entry(key.clone()).or_insert_with(|| GlobalKey {
                dtype: e.dtype,
                global_shape: e.global_shape.clone(),
                replicated: e.replicated,
                shards: Vec::new(),
            });
            if g.replicated != e.replicated {
                return Err(shard_error(step, key, ShardProblem::ReplicatedAndSharded));
            }
            if g.dtype != e.dtype {
                return Err(shard_error(
                    step,
                    key,
                    ShardProblem::DtypeDiffers {
                        first: g.dtype,
                        rank: p.rank,
                        dtype: e.dtype,
                    },
                ));
            }
            if g.global_shape != e.global_shape {
                return Err(shard_error(
                    step,
                    key,
                    ShardProblem::GlobalShapeDiffers {
                        first: g.global_shape.clone(),
                        rank: p.rank,
                        global_shape: e.global_shape.clone(),
                    },
                ));
            }
            if e.replicated {
                match replica_crc.get(key.as_str()) {
                    Some((crc, _)) if *crc != e.crc32 => {
                        return Err(shard_error(
                            step,
                            key,
                            ShardProblem::ReplicasDiffer { rank: p.rank },
                        ))
                    }
                    Some(_) => {}
                    None => {
                        replica_crc.insert(key, (e.crc32, e));
                    }
                }
                if e.stored {
                    g.shards.push(ShardRef {
                        rank: p.rank,
                        offsets: e.offsets.clone(),
                        shape: e.shape.clone(),
                        crc32: e.crc32,
                    });
                }
            } else {
                g.shards.push(ShardRef {
                    rank: p.rank,
                    offsets: e.offsets.clone(),
                    shape: e.shape.clone(),
                    crc32: e.crc32,
                });
            }
        }
    }
    for (key, g) in &keys {
        if g.replicated {
            if g.shards.is_empty() {
                return Err(shard_error(step, key, ShardProblem::ReplicaNotOnRankZero));
            }
            continue;
        }
        for (i, a) in g.shards.iter().enumerate() {
            for b in &g.shards[i + 1..] {
                if overlaps(a, b) {
                    return Err(shard_error(
                        step,
                        key,
                        ShardProblem::Overlap {
                            ranks: (a.rank, b.rank),
                        },
                    ));
                }
            }
        }
        // Disjoint slices inside the bounds cover the whole exactly when
        // their volumes add up to it.
        let covered: u128 = g.shards.iter().map(|s| volume(&s.shape)).sum();
        let total = volume(&g.global_shape);
        if covered != total {
            return Err(shard_error(
                step,
                key,
                ShardProblem::Gap {
                    covered: covered as u64,
                    total: total as u64,
                },
            ));
        }
    }
    Ok(CommitRecord {
        step,
        world_size,
        local_steps: parts.iter().map(|p| p.local_step).collect(),
        keys,
    })
}
