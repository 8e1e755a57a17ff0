//! Helpers shared by the integration tests: deterministic content,
//! whole-database comparison, and running the built `ckptdb` binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

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

mod scratch;
#[allow(unused_imports)]
pub use scratch::scratch_dir;

/// What one run of the tool produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout parsed as the one JSON document `--json` promises.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// Runs `ckptdb ARGS` (stdin closed, stdout and stderr captured: neither is
/// a terminal).
pub fn ckptdb<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ckptdb"))
        .args(args)
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs `ckptdb ARGS --json`, asserting success and a silent stderr (no
/// progress bar when stderr is not a terminal), and returns the document.
pub fn json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let mut a: Vec<std::ffi::OsString> = args.iter().map(|s| s.as_ref().to_owned()).collect();
    a.push("--json".into());
    let r = ckptdb(&a);
    assert_eq!(r.code, 0, "ckptdb {a:?} failed: {}", r.stderr);
    assert_eq!(r.stderr, "", "stderr of ckptdb {a:?} is not empty");
    r.json()
}

/// Asserts a failed run printed exactly one error line and no backtrace.
pub fn assert_one_line_error(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "stderr: {}", r.stderr);
    assert!(
        r.stderr.starts_with("ckptdb: error: "),
        "stderr: {}",
        r.stderr
    );
    assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// Every file under `dir`, as sorted relative paths.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Opens the database for writing right after this process closed it.
///
/// The write lock is an `flock`, which belongs to the open file description:
/// a process another test thread is spawning at that moment shares it
/// between its fork and its exec, so for that instant the lock still looks
/// held. Retry briefly instead of failing on that window.
pub fn open_writer(path: &Path) -> ckptdb::Db {
    for _ in 0..200 {
        match ckptdb::Db::open(path) {
            Err(ckptdb::Error::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.unwrap(),
        }
    }
    panic!("{} stayed locked", path.display())
}

/// The training example's binary, built by `cargo test` next to the test
/// binaries.
pub fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile_dir = deps.parent().unwrap().parent().unwrap();
    let exe = profile_dir.join("examples").join("dqn_cartpole");
    assert!(exe.exists(), "{} is not built", exe.display());
    exe
}
