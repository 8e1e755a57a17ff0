//! `Db::destroy` goes through the writer lock: it refuses while a writer in
//! another process (or in this one) holds the database, refuses what is not
//! a database, and otherwise removes exactly the database. Nor can a new
//! database be created inside one (it would make that one unopenable).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use ckptdb::{Db, Error};

const CHILD_ENV: &str = "CKPTDB_TEST_DESTROY_WRITER_DB";

/// The writer process: commits step 1, says so, and holds the database
/// until its stdin closes.
#[test]
fn writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // only runs as the child of the test below
    };
    let db = Db::open(&path).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("w", b"weights").unwrap();
    tx.commit().unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut tx = db.begin_step(2).unwrap();
    tx.put_blob("w", b"weights 2").unwrap();
    tx.commit().unwrap();
    println!("COMMITTED 2");
}

#[test]
fn destroy_refuses_while_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints "test writer_child ... " before the child's own output.
    while !line.contains("READY") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "the writer exited");
    }
    match Db::destroy(&path) {
        Err(Error::Locked {
            path: p,
            this_process,
        }) => {
            assert_eq!(p, path);
            assert!(!this_process);
        }
        r => panic!("destroy under a writer: {r:?}"),
    }
    // The writer goes on committing into an intact database.
    drop(child.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(rest.contains("COMMITTED 2"), "{rest}");
    let db = Db::open_read_only(&path).unwrap();
    assert_eq!(db.steps(), vec![1, 2]);
    assert_eq!(
        db.latest().unwrap().unwrap().blob("w").unwrap(),
        b"weights 2"
    );
    drop(db);

    // Once the writer is gone, destroy removes the database and only it.
    std::fs::write(dir.path().join("neighbour.txt"), b"keep").unwrap();
    Db::destroy(&path).unwrap();
    assert!(!path.exists());
    assert!(dir.path().join("neighbour.txt").exists());
    // Destroying what is already gone is not an error.
    Db::destroy(&path).unwrap();
}

#[test]
fn destroy_refuses_while_this_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    db.begin_step(1).unwrap().commit().unwrap();
    let err = Db::destroy(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Locked {
                this_process: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("in this process"), "{err}");
    // A second writer of the same process is told the same.
    assert!(matches!(
        Db::open(&path),
        Err(Error::Locked {
            this_process: true,
            ..
        })
    ));
    assert_eq!(db.steps(), vec![1]);
    drop(db);
    Db::destroy(&path).unwrap();
    assert!(!path.exists());
    // The path is free again for a new database.
    assert_eq!(Db::open(&path).unwrap().steps(), Vec::<u64>::new());
}

#[test]
fn destroy_refuses_what_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    // A directory with a foreign file.
    let foreign = dir.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("cat.jpg"), b"meow").unwrap();
    assert!(matches!(
        Db::destroy(&foreign),
        Err(Error::NotADatabase { .. })
    ));
    assert!(foreign.join("cat.jpg").exists());
    // A file.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Db::destroy(&file),
        Err(Error::NotADatabase { .. })
    ));
    assert!(file.exists());
    // A database with a foreign file in its log: nothing is removed.
    let db_path = dir.path().join("db");
    let db = Db::open(&db_path).unwrap();
    db.begin_step(1).unwrap().commit().unwrap();
    drop(db);
    std::fs::write(db_path.join("log").join("stray"), b"x").unwrap();
    assert!(matches!(
        Db::destroy(&db_path),
        Err(Error::NotADatabase { .. })
    ));
    std::fs::remove_file(db_path.join("log").join("stray")).unwrap();
    assert_eq!(Db::open_read_only(&db_path).unwrap().steps(), vec![1]);
}

#[test]
fn no_database_is_created_inside_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Db::open(&path).unwrap();
    db.begin_step(1).unwrap().commit().unwrap();
    for inner in [path.join("sub"), path.join("log").join("sub")] {
        match Db::open(&inner) {
            Err(Error::InvalidArgument(msg)) => {
                assert!(msg.contains("is inside the ckptdb database"), "{msg}")
            }
            r => panic!("{}: {r:?}", inner.display()),
        }
        assert!(!inner.exists());
    }
    drop(db);
    assert_eq!(Db::open(&path).unwrap().steps(), vec![1]);
}
