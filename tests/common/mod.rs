//! Running the built `ckptdb` binary from tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
