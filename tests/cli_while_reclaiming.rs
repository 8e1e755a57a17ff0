//! The read-only commands stay right while a writer in another process
//! commits under `keep_last(2)` and reclaims the space of dropped steps in
//! 1 MiB segments: `verify` never calls the healthy database corrupt (exit
//! 0 every time), and `ls`, `show`, `history` and `stats` never fail,
//! although segments they need vanish under them.

#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use ckptdb::ndarray::Array1;
use ckptdb::trainer::{CheckpointManager, CheckpointOptions};
use ckptdb::{Db, DbOptions};
use common::{ckptdb, content};

const CHILD_ENV: &str = "CKPTDB_TEST_RECLAIMING_WRITER_DB";
/// Rounds of the five commands; each round spans several commits.
const ROUNDS: usize = 12;
/// The writer stops here even if the reader never tells it to.
const MAX_STEPS: u64 = 3000;
/// 64 Ki f32: a step of "w" is 256 KiB, so a 1 MiB segment holds about
/// four steps and reclamation deletes or copies one every few commits.
const W_LEN: usize = 64 << 10;

fn weights(step: u64) -> Array1<f32> {
    Array1::from_iter((0..W_LEN).map(|i| (step * 1_000_003 + i as u64) as f32))
}

/// The writer process: commits until the stop file appears (or
/// `MAX_STEPS`), reporting each acknowledged commit on stdout.
#[test]
fn reclaiming_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child of the test below
    };
    let path = Path::new(&path);
    let stop = path.with_extension("stop");
    let db = Db::open_with(path, DbOptions::default().segment_size(1 << 20)).unwrap();
    let m = CheckpointManager::new(Arc::new(db), CheckpointOptions::new().keep_last(2));
    for s in 1..=MAX_STEPS {
        m.save(s, |tx| {
            tx.put_tensor("w", &weights(s))?;
            // Shared by every step: deduplicated, so its segment stays live
            // while the ones around it are reclaimed.
            tx.put_blob("const", &content(0, "const", 4096))?;
            tx.put_metric("loss", 1.0 / s as f64)
        })
        .unwrap();
        println!("ACK {s}");
        if stop.exists() {
            return;
        }
        // Leave the shared cores to the reader now and then.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Ends the writer when the test fails, before its directory is removed.
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let r = ckptdb(args);
    assert_eq!(
        r.code, 0,
        "ckptdb {args:?} failed on a healthy database:\n{}{}",
        r.stdout, r.stderr
    );
    r.stdout
}

#[test]
fn read_only_commands_never_fail_while_a_writer_reclaims() {
    let dir = common::scratch_dir();
    let path = dir.path().join("run.ckpt");
    let mut child = Writer(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reclaiming_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let acks = std::thread::spawn(move || {
        for line in out.lines() {
            if let Some(s) = line.unwrap().strip_prefix("ACK ") {
                // The receiver may be gone once the rounds are over.
                let _ = tx.send(s.trim().parse().unwrap());
            }
        }
    });
    // Start once the writer has filled a few segments.
    let mut acked = 0;
    while acked < 8 {
        acked = rx.recv().expect("the writer commits");
    }
    let first = acked;

    let p = path.as_os_str();
    let mut verified = 0;
    for _ in 0..ROUNDS {
        let text = run_ok(&["verify".as_ref(), p]);
        assert!(text.starts_with("OK: "), "{text}");
        verified += 1;
        // ls shows at most the two kept steps and the one being saved
        // (retention drops in the commit that adds a step).
        let v = common::json(&["ls".as_ref(), p]);
        let rows = v.as_array().or_else(|| v["steps"].as_array()).unwrap();
        assert!(!rows.is_empty() && rows.len() <= 2, "{v}");
        let show = run_ok(&["show".as_ref(), p]);
        assert!(show.contains("const"), "{show}");
        let history = run_ok(&["history".as_ref(), p, "w".as_ref()]);
        assert!(!history.trim().is_empty());
        run_ok(&["stats".as_ref(), p, "latest".as_ref(), "w".as_ref()]);
        while let Ok(s) = rx.try_recv() {
            acked = s;
        }
    }
    std::fs::write(path.with_extension("stop"), b"").unwrap();
    assert!(child.0.wait().unwrap().success(), "the writer failed");
    acks.join().unwrap();
    while let Ok(s) = rx.try_recv() {
        acked = s;
    }
    assert_eq!(verified, ROUNDS);
    // The commands ran while the writer moved on and reclaimed: each round
    // spanned commits.
    assert!(
        acked >= first + ROUNDS as u64,
        "the writer committed only steps {first}..={acked} during {ROUNDS} rounds"
    );

    // The final state: the last two steps, exact.
    let db = Db::open_read_only(&path).unwrap();
    assert_eq!(db.steps(), vec![acked - 1, acked]);
    for s in db.steps() {
        let snap = db.snapshot(s).unwrap();
        let w = snap.tensor("w").unwrap();
        assert_eq!(w.as_slice::<f32>().unwrap(), weights(s).as_slice().unwrap());
        assert_eq!(snap.blob("const").unwrap(), &content(0, "const", 4096)[..]);
    }
    let text = run_ok(&["verify".as_ref(), p]);
    assert!(text.starts_with("OK: "), "{text}");
}
