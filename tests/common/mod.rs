//! Helpers shared by the integration tests: deterministic content and
//! whole-database comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckptdb::{Db, Kind};

/// Deterministic bytes for (step, key): a cheap xorshift stream.
pub fn content(step: u64, key: &str, len: usize) -> Vec<u8> {
    let mut x = step.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(
        key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        }),
    ) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Everything a step holds, read back through the public API.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDump {
    pub entries: BTreeMap<String, (Kind, Vec<u8>)>,
    pub metrics: BTreeMap<String, f64>,
}

/// Reads every live step of `db` completely.
pub fn dump(db: &Db) -> BTreeMap<u64, StepDump> {
    db.steps()
        .into_iter()
        .map(|s| {
            let snap = db.snapshot(s).expect("live step must load");
            let entries = snap
                .entries()
                .map(|e| {
                    let bytes = snap.raw_bytes(&e.key).expect("entry must read").to_vec();
                    (e.key, (e.kind, bytes))
                })
                .collect();
            (
                s,
                StepDump {
                    entries,
                    metrics: snap.metrics().clone(),
                },
            )
        })
        .collect()
}

/// Copies a database directory (files only, one level of subdirectories).
pub fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("log")).unwrap();
    for name in ["index.redb", "LOCK"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
    for e in std::fs::read_dir(from.join("log")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("log").join(e.file_name())).unwrap();
    }
}

/// The segment files of a database, ascending.
pub fn segments(db: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(db.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A scratch directory on tmpfs when the machine has one: sweeps that open
/// a database thousands of times would otherwise spend their time in fsync.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}
