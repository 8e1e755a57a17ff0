//! The database on a real S3-compatible server (moto on loopback): push,
//! pull, and read-only opens through a cache in another process, bit-exact,
//! with the bytes fetched counted; bad locations fail typed and bounded.

mod common;
mod s3_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckptdb::remote::{Remote, RemoteOptions};
use ckptdb::{Db, DbOptions, Error, RemoteErrorKind};
use common::{content, dump};
use s3_support::Moto;

/// Commits steps `from..to` with a tensor, a blob and a metric each.
fn write_steps(dir: &Path, from: u64, to: u64) {
    let db = Db::open_with(dir, DbOptions::default().segment_size(64 << 10)).unwrap();
    for step in from..to {
        let mut tx = db.begin_step(step).unwrap();
        let w: Vec<f32> = content(step, "w", 4096 * 4)
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) % 1.0e6)
            .collect();
        tx.put_tensor("policy/w", &ndarray::Array1::from(w))
            .unwrap();
        tx.put_blob(
            "optim/state",
            &content(step, "optim", 20_000 + step as usize),
        )
        .unwrap();
        tx.put_metric("loss", 1.0 / (step + 1) as f64).unwrap();
        tx.commit().unwrap();
    }
}

fn log_bytes(dir: &Path) -> u64 {
    common::segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn kind(e: &Error) -> RemoteErrorKind {
    match e {
        Error::Remote { kind, .. } => *kind,
        other => panic!("not a remote error: {other:?}"),
    }
}

/// The child half of `round_trip_through_another_process`: opens the
/// remote from the cache it is given and writes what it read.
#[test]
fn child_open_remote() {
    let Ok(endpoint) = std::env::var("CKPTDB_TEST_CHILD_ENDPOINT") else {
        return;
    };
    let url = std::env::var("CKPTDB_TEST_CHILD_URL").unwrap();
    let cache = std::env::var("CKPTDB_TEST_CHILD_CACHE").unwrap();
    let out = std::env::var("CKPTDB_TEST_CHILD_OUT").unwrap();
    let options = RemoteOptions::default()
        .endpoint(endpoint)
        .allow_http(true)
        .credentials("testing", "testing")
        .retries(2, Duration::from_secs(10));
    let remote = Remote::open(&url, options).unwrap();
    let db = remote.open_db(&cache).unwrap();
    assert!(db.is_read_only());
    let text = format!("{}\n{:?}", remote.bytes_fetched(), dump(&db));
    std::fs::write(out, text).unwrap();
}

/// Runs `child_open_remote` in a new process; returns (bytes fetched, dump).
fn open_in_child(moto: &Moto, url: &str, cache: &Path, out: &Path) -> (u64, String) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_open_remote", "--test-threads", "1"])
        .env("CKPTDB_TEST_CHILD_ENDPOINT", moto.endpoint())
        .env("CKPTDB_TEST_CHILD_URL", url)
        .env("CKPTDB_TEST_CHILD_CACHE", cache)
        .env("CKPTDB_TEST_CHILD_OUT", out)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let text = std::fs::read_to_string(out).unwrap();
    let (n, rest) = text.split_once('\n').unwrap();
    (n.parse().unwrap(), rest.to_owned())
}

#[test]
fn round_trip_through_another_process() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ckpt-runs");
    let tmp = tempfile::tempdir().unwrap();
    let (local, cache) = (tmp.path().join("run.ckpt"), tmp.path().join("cache"));
    write_steps(&local, 0, 12);
    assert!(common::segments(&local).len() > 3, "several segments");
    let url = "s3://ckpt-runs/team/run-1";
    let remote = Remote::open(url, moto.options()).unwrap();
    let pushed = remote.push(&local).unwrap();
    assert_eq!(pushed.generation, 1);
    assert_eq!(pushed.bytes_uploaded, log_bytes(&local));
    let root = remote.newest_root().unwrap().unwrap();
    assert_eq!(root.latest_step, Some(11));
    assert_eq!(root.total_bytes(), log_bytes(&local));

    let expected = format!("{:?}", dump(&Db::open_read_only(&local).unwrap()));
    // A fresh cache in another process: every step bit-exact, every byte
    // of the log fetched once.
    let (fetched, got) = open_in_child(&moto, url, &cache, &tmp.path().join("out1"));
    assert_eq!(got, expected);
    assert_eq!(fetched, log_bytes(&local));
    // The same cache again: nothing fetched.
    let (fetched, got) = open_in_child(&moto, url, &cache, &tmp.path().join("out2"));
    assert_eq!((fetched, got == expected), (0, true));

    // More steps: the second push uploads only what the log grew by, and
    // the cache fetches only that.
    let before = log_bytes(&local);
    write_steps(&local, 12, 16);
    let pushed = remote.push(&local).unwrap();
    assert_eq!(pushed.generation, 2);
    assert_eq!(pushed.bytes_uploaded, log_bytes(&local) - before);
    let expected = format!("{:?}", dump(&Db::open_read_only(&local).unwrap()));
    let (fetched, got) = open_in_child(&moto, url, &cache, &tmp.path().join("out3"));
    assert_eq!(got, expected);
    assert_eq!(fetched, log_bytes(&local) - before);

    // An unchanged database pushes no bytes but a new generation.
    let pushed = remote.push(&local).unwrap();
    assert_eq!((pushed.generation, pushed.bytes_uploaded), (3, 0));
}

#[test]
fn pull_gives_a_database_a_writer_continues() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("pull-test");
    let tmp = tempfile::tempdir().unwrap();
    let (local, pulled) = (tmp.path().join("a.ckpt"), tmp.path().join("b.ckpt"));
    write_steps(&local, 0, 6);
    let remote = Remote::open("s3://pull-test", moto.options()).unwrap();
    // Nothing pushed yet: a typed "not found", and no directory made.
    assert_eq!(
        kind(&remote.pull(&pulled).unwrap_err()),
        RemoteErrorKind::NotFound
    );
    assert!(!pulled.exists());
    remote.push(&local).unwrap();
    assert_eq!(remote.pull(&pulled).unwrap(), 1);
    let expected = dump(&Db::open_read_only(&local).unwrap());
    assert_eq!(dump(&Db::open_read_only(&pulled).unwrap()), expected);
    // Not into a non-empty directory.
    assert!(matches!(
        remote.pull(&pulled),
        Err(Error::InvalidArgument(_))
    ));
    // The pulled copy is an ordinary database: a writer continues it.
    write_steps(&pulled, 6, 8);
    let db = Db::open_read_only(&pulled).unwrap();
    assert_eq!(db.steps(), (0..8).collect::<Vec<_>>());
}

#[test]
fn a_diverged_local_database_is_refused() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("diverge");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.ckpt"), tmp.path().join("b.ckpt"));
    write_steps(&a, 0, 3);
    write_steps(&b, 100, 103);
    let remote = Remote::open("s3://diverge/x", moto.options()).unwrap();
    remote.push(&a).unwrap();
    assert_eq!(
        kind(&remote.push(&b).unwrap_err()),
        RemoteErrorKind::Diverged
    );
    // Nothing of b became visible.
    let root = remote.newest_root().unwrap().unwrap();
    assert_eq!((root.generation, root.latest_step), (1, Some(2)));
}

#[test]
fn bad_locations_fail_typed_and_bounded() {
    let Some(moto) = Moto::start() else { return };
    let started = Instant::now();
    // Malformed URLs, before any request.
    for url in ["ckpt-runs/x", "s3://", "s3://UPPER/x", "s3://a/x"] {
        assert_eq!(
            kind(&Remote::open(url, moto.options()).unwrap_err()),
            RemoteErrorKind::InvalidUrl,
            "{url}"
        );
    }
    // A bucket that does not exist.
    let e = Remote::open("s3://no-such-bucket/x", moto.options()).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::BucketNotFound, "{e}");
    // No credentials at all: refused before any request.
    let bare = RemoteOptions::default()
        .endpoint(moto.endpoint())
        .allow_http(true);
    assert_eq!(
        kind(&Remote::open("s3://b-x/x", bare).unwrap_err()),
        RemoteErrorKind::Credentials
    );
    // Connection refused on a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = RemoteOptions::default()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .allow_http(true)
        .credentials("testing", "testing")
        .retries(2, Duration::from_secs(5));
    let e = Remote::open("s3://ckpt-runs/x", dead).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Unreachable, "{e}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded wait");
}

#[test]
fn wrong_credentials_are_refused() {
    // One unauthenticated request creates the bucket; after that the
    // server checks every key, and knows none.
    let Some(moto) = Moto::start_checking_credentials(1) else {
        return;
    };
    moto.create_bucket("locked");
    let e = Remote::open("s3://locked/x", moto.options()).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Credentials, "{e}");
}
