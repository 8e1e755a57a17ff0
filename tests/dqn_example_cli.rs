//! The training example's command line: `--fresh` goes through the writer
//! lock, errors print their message, and a resumed run says so first.

mod common;

use std::path::Path;
use std::process::Command;

use ckptdb::Db;

fn run(db: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(common::example_binary())
        .args([
            "--db",
            db.to_str().unwrap(),
            "--quiet",
            "--save-every",
            "250",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn fresh_refuses_a_database_another_writer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let writer = Db::open(&path).unwrap();
    let mut tx = writer.begin_step(7).unwrap();
    tx.put_blob("w", b"someone else's run").unwrap();
    tx.commit().unwrap();

    let out = run(&path, &["--fresh", "--steps", "300"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "error: database {} is locked by a writer in another process",
            path.display()
        )
    );
    // The other writer's database is intact and still writable.
    assert_eq!(writer.steps(), vec![7]);
    let mut tx = writer.begin_step(8).unwrap();
    tx.put_blob("w", b"still mine").unwrap();
    tx.commit().unwrap();
    drop(writer);
    assert_eq!(Db::open_read_only(&path).unwrap().steps(), vec![7, 8]);
}

#[test]
fn a_resumed_run_says_so_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let first = run(&path, &["--steps", "250"]);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(format!("new run in {}", path.display()).as_str())
    );
    let second = run(&path, &["--steps", "500"]);
    assert!(second.status.success(), "{second:?}");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(format!("resumed from step 250 in {}", path.display()).as_str())
    );
    // `--fresh` starts over once nobody holds the database.
    let fresh = run(&path, &["--fresh", "--steps", "250"]);
    assert!(fresh.status.success(), "{fresh:?}");
    let stdout = String::from_utf8_lossy(&fresh.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(format!("new run in {}", path.display()).as_str())
    );
    assert_eq!(Db::open_read_only(&path).unwrap().steps(), vec![250]);
}
