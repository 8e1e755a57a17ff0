//! The `ckptdb` tool on `s3://` locations, against moto's S3 server on
//! loopback: `push`, then every read-only command on the location giving
//! exactly what it gives on the local directory, `pull` bit-exact, pushes
//! that upload only what is new, and bad locations failing in one line
//! with exit 2.

#![cfg(all(feature = "s3", feature = "cli"))]

mod common;
mod s3_support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ckptdb::ndarray::{arr0, arr1, Array2};
use ckptdb::{Db, DbOptions};
use common::{assert_one_line_error, dump, Run};
use s3_support::Moto;
use serde_json::{json, Value};

const URL: &str = "s3://cli-runs/team/run-1";

/// The environment a command runs in: the server's endpoint and moto's
/// test credentials, and a scratch home so no default cache lands outside
/// the test's directory. `None` values are removed.
struct Env {
    vars: Vec<(&'static str, Option<String>)>,
}

impl Env {
    fn new(endpoint: &str, home: &Path) -> Env {
        Env {
            vars: vec![
                ("AWS_ENDPOINT_URL", Some(endpoint.to_owned())),
                ("AWS_ALLOW_HTTP", Some("true".into())),
                ("AWS_ACCESS_KEY_ID", Some("testing".into())),
                ("AWS_SECRET_ACCESS_KEY", Some("testing".into())),
                ("AWS_REGION", Some("us-east-1".into())),
                ("AWS_ENDPOINT", None),
                ("AWS_DEFAULT_REGION", None),
                ("AWS_SESSION_TOKEN", None),
                ("CKPTDB_CACHE", None),
                ("XDG_CACHE_HOME", None),
                ("HOME", Some(home.display().to_string())),
            ],
        }
    }

    fn with(mut self, name: &'static str, value: Option<String>) -> Env {
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value));
        self
    }

    fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckptdb"));
        cmd.args(args);
        for (name, value) in &self.vars {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        let out = cmd.output().expect("the binary runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        }
    }

    /// Runs ARGS, asserting success and a silent stderr, and returns stdout.
    fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let r = self.run(args);
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        assert_eq!(r.code, 0, "ckptdb {shown:?} failed: {}", r.stderr);
        assert_eq!(r.stderr, "", "stderr of ckptdb {shown:?}");
        r.stdout
    }

    /// Runs ARGS --json and returns the document.
    fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let mut a: Vec<OsString> = args.iter().map(|s| s.as_ref().to_owned()).collect();
        a.push("--json".into());
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

fn os(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_owned()).collect()
}

/// Steps 10, 20 and 30 with tensors of three dtypes, a blob, a metric and
/// a tag on step 20, over several small segments.
fn make_db(path: &Path) {
    let db = Db::open_with(path, DbOptions::default().segment_size(64 << 10)).unwrap();
    for (i, step) in [10u64, 20, 30].into_iter().enumerate() {
        let mut tx = db.begin_step(step).unwrap();
        let w = Array2::from_shape_fn((64, 96), |(r, c)| {
            (r as f32 - 32.0) * 0.25 + c as f32 * 0.001 + i as f32
        });
        tx.put_tensor("policy/w", &w).unwrap();
        tx.put_tensor("policy/b", &arr1(&[0.5f64, -1.25, step as f64]))
            .unwrap();
        tx.put_tensor("opt/count", &arr0(step as i64)).unwrap();
        if step != 30 {
            tx.put_tensor("policy/mask", &arr1(&vec![i as u8; 40_000]))
                .unwrap();
        }
        tx.put_blob("rng", &[step as u8; 300]).unwrap();
        tx.put_metric("loss", 1.0 / step as f64).unwrap();
        tx.commit().unwrap();
    }
    db.tag(20, "best").unwrap();
}

fn segment_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
    common::segments(db)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn log_bytes(db: &Path) -> u64 {
    segment_bytes(db).iter().map(|(_, b)| b.len() as u64).sum()
}

#[test]
fn remote_locations_read_like_local_ones() {
    let Some(moto) = Moto::start() else { return };
    let started = Instant::now();
    moto.create_bucket("cli-runs");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("run.ckpt");
    make_db(&local);
    let segments = common::segments(&local).len() as u64;
    assert!(segments >= 3, "several segments: {segments}");
    let env = Env::new(&moto.endpoint(), &tmp.path().join("home"));

    // Push: every segment's bytes, as one piece each, generation 1.
    let pushed = env.json(&os(&[&"push", &local, &URL]));
    assert_eq!(
        pushed,
        json!({
            "db": local.display().to_string(),
            "location": URL,
            "generation": 1,
            "latest_step": 30,
            "pieces_uploaded": segments,
            "bytes_uploaded": log_bytes(&local),
            "objects_deleted": 0,
        })
    );

    // Every read-only command on the location, through a fresh cache,
    // prints what it prints on the directory.
    let cache = tmp.path().join("cache");
    let cache_arg = os(&[&"--cache", &cache]);
    let commands: Vec<Vec<&str>> = vec![
        vec!["show"],
        vec!["show", "10"],
        vec!["show", "tag:best"],
        vec!["show", "best:loss:min"],
        vec!["diff", "10", "20"],
        vec!["diff", "20", "latest"],
        vec!["history", "policy/w"],
        vec!["history", "policy/mask"],
        vec!["stats", "20", "policy/w"],
        vec!["verify"],
        vec!["replay"],
    ];
    for c in &commands {
        let on = |db: &dyn AsRef<std::ffi::OsStr>, json: bool| {
            let mut a = os(&[&c[0], db]);
            a.extend(c[1..].iter().map(OsString::from));
            a.extend(cache_arg.iter().cloned());
            if json {
                a.push("--json".into());
            }
            env.ok(&a)
        };
        for json in [true, false] {
            assert_eq!(on(&URL, json), on(&local, json), "{c:?} --json {json}");
        }
    }
    // Spot checks that the documents hold the database's values.
    let show = env.json(&os(&[&"show", &URL, &"tag:best", &"--cache", &cache]));
    assert_eq!(show["step"], 20);
    assert_eq!(show["tags"], json!(["best"]));
    assert_eq!(show["metrics"], json!({"loss": 0.05}));
    let history = env.json(&os(&[&"history", &URL, &"opt/count", &"--cache", &cache]));
    let steps: Vec<u64> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [10, 20, 30]);
    let verify = env.json(&os(&[&"verify", &URL, &"--cache", &cache]));
    assert_eq!(
        (verify["ok"].clone(), verify["steps"].clone()),
        (json!(true), json!(3))
    );

    // ls: the same rows; on disk the cache has the segments but no catalog.
    let mut remote_ls = env.json(&os(&[&"ls", &URL, &"--cache", &cache]));
    let mut local_ls = env.json(&os(&[&"ls", &local]));
    let catalog = std::fs::metadata(local.join("index.redb")).unwrap().len();
    let storage = |v: &Value, k: &str| v["storage"][k].as_u64().unwrap();
    assert_eq!(storage(&local_ls, "segment_bytes"), log_bytes(&local));
    assert_eq!(
        storage(&local_ls, "disk_bytes"),
        log_bytes(&local) + catalog
    );
    assert_eq!(storage(&remote_ls, "disk_bytes"), log_bytes(&local));
    remote_ls["storage"]["disk_bytes"] = Value::Null;
    local_ls["storage"]["disk_bytes"] = Value::Null;
    assert_eq!(remote_ls, local_ls);
    let rows = remote_ls["steps"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["tags"], json!(["best"]));

    // report: the same figures (with the same difference on disk).
    let report = |db: &dyn AsRef<std::ffi::OsStr>| {
        let mut v = env.json(&os(&[&"report", db, &"--cache", &cache]));
        assert_eq!(v["out"], Value::Null, "--json writes no page");
        let disk = v["storage"]["disk_bytes"].take();
        (v, disk)
    };
    let ((remote_report, remote_disk), (local_report, local_disk)) = (report(&URL), report(&local));
    assert_eq!(remote_report, local_report);
    assert_eq!(remote_disk, log_bytes(&local));
    assert_eq!(local_disk, log_bytes(&local) + catalog);
    assert_eq!(remote_report["steps"].as_array().unwrap().len(), 3);

    // export: the same file, byte for byte.
    let (a, b) = (
        tmp.path().join("a.safetensors"),
        tmp.path().join("b.safetensors"),
    );
    let from_local = env.json(&os(&[&"export", &local, &"20", &a]));
    let from_remote = env.json(&os(&[&"export", &URL, &"20", &b, &"--cache", &cache]));
    assert_eq!(from_remote["tensors"], from_local["tensors"]);
    assert_eq!(from_remote["bytes"], from_local["bytes"]);
    assert_eq!(
        from_remote["skipped"],
        json!([{"key": "rng", "reason": "a blob has no tensor form"}])
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // The cache holds exactly the local segments.
    assert_eq!(segment_bytes(&cache.join("db")), segment_bytes(&local));

    // Without --cache: $CKPTDB_CACHE/<bucket>/<prefix>, else
    // $XDG_CACHE_HOME/ckptdb/<bucket>/<prefix>, else ~/.cache/ckptdb/….
    let roots = [
        (
            env.with(
                "CKPTDB_CACHE",
                Some(tmp.path().join("cc").display().to_string()),
            ),
            tmp.path().join("cc/cli-runs/team/run-1"),
        ),
        (
            Env::new(&moto.endpoint(), &tmp.path().join("home")).with(
                "XDG_CACHE_HOME",
                Some(tmp.path().join("xdg").display().to_string()),
            ),
            tmp.path().join("xdg/ckptdb/cli-runs/team/run-1"),
        ),
        (
            Env::new(&moto.endpoint(), &tmp.path().join("home")),
            tmp.path().join("home/.cache/ckptdb/cli-runs/team/run-1"),
        ),
    ];
    for (env, dir) in &roots {
        assert_eq!(env.json(&os(&[&"ls", &URL]))["steps"], local_ls["steps"]);
        assert_eq!(
            segment_bytes(&dir.join("db")),
            segment_bytes(&local),
            "{}",
            dir.display()
        );
    }
    let env = Env::new(&moto.endpoint(), &tmp.path().join("home"));

    // pull: a local database bit-exact with the original.
    let pulled = tmp.path().join("pulled.ckpt");
    let got = env.json(&os(&[&"pull", &URL, &pulled]));
    assert_eq!(
        got,
        json!({
            "location": URL,
            "db": pulled.display().to_string(),
            "generation": 1,
            "latest_step": 30,
            "segments": segments,
            "bytes_fetched": log_bytes(&local),
        })
    );
    let (orig, copy) = (
        Db::open_read_only(&local).unwrap(),
        Db::open_read_only(&pulled).unwrap(),
    );
    assert_eq!(dump(&copy), dump(&orig));
    assert_eq!(copy.tags(), orig.tags());
    assert_eq!(copy.tags().get("best"), Some(&20));
    for step in orig.steps() {
        let (a, b) = (orig.snapshot(step).unwrap(), copy.snapshot(step).unwrap());
        for key in ["policy/w", "policy/b", "opt/count"] {
            let (ta, tb) = (a.tensor(key).unwrap(), b.tensor(key).unwrap());
            assert_eq!((ta.dtype(), ta.shape()), (tb.dtype(), tb.shape()));
            assert_eq!(
                ta.bytes().unwrap(),
                tb.bytes().unwrap(),
                "step {step} {key}"
            );
        }
    }
    drop((orig, copy));
    // Not over an existing database.
    let again = env.run(&os(&[&"pull", &URL, &pulled]));
    assert_one_line_error(&again, 2, "is not empty");

    // A second push of the same database uploads nothing.
    let text = env.ok(&os(&[&"push", &local, &URL]));
    assert_eq!(
        text,
        format!(
            "pushed {} to {URL}: generation 2 (step 30), 0 new pieces (0 B), 0 old objects deleted\n",
            local.display()
        )
    );
    // The database grows: the push uploads what it grew by, and a read
    // through the old cache sees the new step.
    let before = log_bytes(&local);
    {
        let db = Db::open_with(&local, DbOptions::default().segment_size(64 << 10)).unwrap();
        // Not while a writer holds it.
        let r = env.run(&os(&[&"push", &local, &URL]));
        assert_one_line_error(&r, 2, "is open for writing in another process");
        let mut tx = db.begin_step_from(40, 30).unwrap();
        tx.put_tensor("opt/count", &arr0(40i64)).unwrap();
        tx.put_metric("loss", 0.01).unwrap();
        tx.commit().unwrap();
    }
    let grown = env.json(&os(&[&"push", &local, &URL]));
    assert_eq!(grown["generation"], 3);
    assert_eq!(grown["latest_step"], 40);
    assert_eq!(
        grown["bytes_uploaded"].as_u64().unwrap(),
        log_bytes(&local) - before
    );
    let ls = env.json(&os(&[&"ls", &URL, &"--cache", &cache]));
    let steps: Vec<u64> = ls["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [10, 20, 30, 40]);
    assert_eq!(segment_bytes(&cache.join("db")), segment_bytes(&local));
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A signed client for one bucket's objects, to damage one in place (moto
/// refuses unsigned overwrites).
struct Objects {
    store: ckptdb::remote::object_store::aws::AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Objects {
    fn new(moto: &Moto, bucket: &str) -> Objects {
        let store = moto.store(bucket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Objects { store, runtime }
    }

    /// The keys directly under `prefix`, and its sub-prefixes.
    fn list(&self, prefix: &str) -> (Vec<String>, Vec<String>) {
        use ckptdb::remote::object_store::{path::Path as ObjectPath, ObjectStore};
        let got = self
            .runtime
            .block_on(
                self.store
                    .list_with_delimiter(Some(&ObjectPath::from(prefix))),
            )
            .unwrap();
        (
            got.objects.iter().map(|o| o.location.to_string()).collect(),
            got.common_prefixes.iter().map(|p| p.to_string()).collect(),
        )
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        use ckptdb::remote::object_store::{path::Path as ObjectPath, ObjectStoreExt, PutPayload};
        self.runtime
            .block_on(
                self.store
                    .put(&ObjectPath::from(key), PutPayload::from(bytes)),
            )
            .unwrap();
    }
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_locations_fail_in_one_line() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cli-runs");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("run.ckpt");
    make_db(&local);
    let env = Env::new(&moto.endpoint(), &tmp.path().join("home"));
    let st = tmp.path().join("a.safetensors");
    env.ok(&os(&[&"export", &local, &"10", &st]));
    let fresh = tmp.path().join("fresh");

    let cases: Vec<(Vec<OsString>, &str)> =
        vec![
        (os(&[&"ls", &"s3://no-such-bucket/x"]), "remote bucket not found"),
        (os(&[&"push", &local, &"s3://no-such-bucket/x"]), "remote bucket not found"),
        (os(&[&"ls", &"s3://"]), "remote invalid location: \"s3://\""),
        (os(&[&"ls", &"s3://Upper/x"]), "remote invalid location"),
        (os(&[&"verify", &"s3://a/b"]), "remote invalid location"),
        (os(&[&"ls", &"gs://cli-runs/x"]), "unsupported location scheme \"gs\""),
        // The bucket exists but nothing was pushed there.
        (os(&[&"ls", &"s3://cli-runs/empty"]), "no database (no root object)"),
        (os(&[&"pull", &"s3://cli-runs/empty", &fresh]), "no database (no root object)"),
        (
            os(&[&"import", &"s3://cli-runs/x", &st, &"--step", &"40"]),
            "import: s3://cli-runs/x is a remote location; import needs a local database directory",
        ),
        (
            os(&[&"compact", &"s3://cli-runs/x"]),
            "compact: s3://cli-runs/x is a remote location",
        ),
        (
            os(&[&"push", &local, &tmp.path().join("elsewhere")]),
            "push: the destination must be an s3://bucket[/prefix] location",
        ),
        (
            os(&[&"pull", &local, &fresh]),
            "pull: the source must be an s3://bucket[/prefix] location",
        ),
        (
            os(&[&"push", &"s3://cli-runs/x", &"s3://cli-runs/y"]),
            "push: s3://cli-runs/x is a remote location; push needs a local database directory",
        ),
    ];
    for (args, needle) in &cases {
        let r = env.run(args);
        assert_one_line_error(&r, 2, needle);
        assert_eq!(r.stdout, "", "{args:?}");
        // --json: one document naming the error, the same line on stderr.
        let mut a = args.clone();
        a.push("--json".into());
        let r = env.run(&a);
        assert_one_line_error(&r, 2, needle);
        let doc: Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(doc["error"].as_str().unwrap().contains(needle), "{doc}");
    }
    assert!(!fresh.exists(), "a failed pull leaves no directory");
    assert!(!tmp.path().join("elsewhere").exists());
    // Nothing was written through the refused import.
    assert_eq!(Db::open_read_only(&local).unwrap().steps(), [10, 20, 30]);

    // A remote piece whose bytes no longer match the crc32 its root
    // records: verify reports corruption (exit 1), a reader fails.
    env.ok(&os(&[&"push", &local, &"s3://cli-runs/damaged"]));
    let objects = Objects::new(&moto, "cli-runs");
    let (_, segment_dirs) = objects.list("damaged/segments");
    let (keys, _) = objects.list(&segment_dirs[0]);
    let key = keys[0].clone();
    // A first push uploads each segment whole: the piece is the segment
    // file.
    let mut parts = key.rsplit('/');
    let (piece, segment) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(piece.starts_with("00000000000000000000-"), "{key}");
    let mut bytes = std::fs::read(local.join("log").join(format!("{segment}.seg"))).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    objects.put(&key, bytes);
    let cache = tmp.path().join("damaged-cache");
    let r = env.run(&os(&[
        &"verify",
        &"s3://cli-runs/damaged",
        &"--cache",
        &cache,
    ]));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with(&format!(
            "CORRUPT: remote corrupt object: s3://cli-runs/{key}: crc32 0x"
        )),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 1);
    let doc = env.run(&os(&[
        &"verify",
        &"s3://cli-runs/damaged",
        &"--cache",
        &cache,
        &"--json",
    ]));
    assert_eq!(doc.code, 1);
    let doc: Value = serde_json::from_str(&doc.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["problems"][0]["key"], "(remote)");
    let r = env.run(&os(&[&"ls", &"s3://cli-runs/damaged", &"--cache", &cache]));
    assert_one_line_error(
        &r,
        2,
        &format!("remote corrupt object: s3://cli-runs/{key}: crc32"),
    );

    // No credentials at all: refused before any request.
    let bare = Env::new(&moto.endpoint(), &tmp.path().join("home"))
        .with("AWS_ACCESS_KEY_ID", None)
        .with("AWS_SECRET_ACCESS_KEY", None);
    let r = bare.run(&os(&[&"ls", &URL]));
    assert_one_line_error(&r, 2, "remote credentials error");
    assert!(r.stderr.contains("set AWS_ACCESS_KEY_ID"), "{}", r.stderr);

    // Connection refused: typed, after the bounded retries.
    let dead = Env::new(
        &format!("http://127.0.0.1:{}", closed_port()),
        &tmp.path().join("home"),
    );
    for args in [os(&[&"ls", &URL]), os(&[&"push", &local, &URL])] {
        let t = Instant::now();
        let r = dead.run(&args);
        assert_one_line_error(&r, 2, "remote endpoint unreachable");
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }
    // No database was written by any of it, and no cache was left behind
    // for a location that failed before opening.
    assert!(!tmp
        .path()
        .join("home/.cache/ckptdb/no-such-bucket")
        .exists());
}

#[test]
fn wrong_credentials_fail_in_one_line() {
    // One unauthenticated request creates the bucket; after that the
    // server refuses every key it did not issue.
    let Some(moto) = Moto::start_checking_credentials(1) else {
        return;
    };
    moto.create_bucket("locked");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("run.ckpt");
    make_db(&local);
    let env = Env::new(&moto.endpoint(), &tmp.path().join("home"));
    for args in [
        os(&[&"ls", &"s3://locked/x"]),
        os(&[&"push", &local, &"s3://locked/x"]),
        os(&[&"pull", &"s3://locked/x", &tmp.path().join("p")]),
    ] {
        let r = env.run(&args);
        assert_one_line_error(&r, 2, "remote credentials error");
    }
}

/// The cache of a location is locked while a command reads it.
#[test]
fn a_cache_in_use_is_refused() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("cli-runs");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("run.ckpt");
    make_db(&local);
    let env = Env::new(&moto.endpoint(), &tmp.path().join("home"));
    env.ok(&os(&[&"push", &local, &URL]));
    let cache: PathBuf = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let held = std::fs::File::create(cache.join("LOCK")).unwrap();
    held.lock().unwrap();
    let r = env.run(&os(&[&"ls", &URL, &"--cache", &cache]));
    assert_one_line_error(&r, 2, "is in use by another ckptdb process");
    drop(held);
    assert_eq!(
        env.json(&os(&[&"ls", &URL, &"--cache", &cache]))["steps"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
