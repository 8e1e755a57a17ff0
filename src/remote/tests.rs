//! The remote code paths against an in-memory store wrapped in
//! [`FaultStore`]: failed, slow and duplicated uploads, a create-only race
//! for one generation, and retention of remote objects.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::fault::FaultStore;
use super::{layout, Remote};
use crate::error::{Error, RemoteErrorKind};
use crate::{Db, DbOptions};

const URL: &str = "s3://unit-test/run";

fn write_steps(dir: &Path, steps: std::ops::Range<u64>) {
    let db = Db::open_with(dir, DbOptions::default().segment_size(32 << 10)).unwrap();
    for step in steps {
        let mut tx = db.begin_step(step).unwrap();
        let bytes: Vec<u8> = (0..12_000u32)
            .map(|i| (i as u64 * 31 + step * 7) as u8)
            .collect();
        tx.put_blob("state", &bytes).unwrap();
        tx.put_metric("loss", step as f64).unwrap();
        tx.commit().unwrap();
    }
}

/// Every entry of every live step, as bytes.
fn contents(db: &Db) -> Vec<(u64, String, Vec<u8>)> {
    let mut out = Vec::new();
    for step in db.steps() {
        let snap = db.snapshot(step).unwrap();
        for e in snap.entries() {
            out.push((
                step,
                e.key.clone(),
                snap.raw_bytes(&e.key).unwrap().to_vec(),
            ));
        }
    }
    out
}

fn kind(e: &Error) -> RemoteErrorKind {
    match e {
        Error::Remote { kind, .. } => *kind,
        other => panic!("not a remote error: {other:?}"),
    }
}

fn objects(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut v: Vec<String> = rt
        .block_on(store.list(None).try_collect::<Vec<_>>())
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    v.sort();
    v
}

fn setup() -> (Arc<dyn ObjectStore>, Arc<FaultStore>, Remote) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = Arc::new(FaultStore::new(inner.clone()));
    let remote = Remote::with_store(fault.clone(), URL).unwrap();
    (inner, fault, remote)
}

#[test]
fn a_failed_upload_surfaces_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    write_steps(&db_dir, 0..4);
    let (_inner, fault, remote) = setup();
    remote.push(&db_dir).unwrap();
    write_steps(&db_dir, 4..8);
    for needle in [".piece", "roots/"] {
        fault.fail_puts_containing(Some(needle));
        let e = remote.push(&db_dir).unwrap_err();
        assert_eq!(kind(&e), RemoteErrorKind::Other, "{e}");
        assert!(e.to_string().contains("injected failure"), "{e}");
        // The remote still shows the first push, complete.
        let root = remote.newest_root().unwrap().unwrap();
        assert_eq!((root.generation, root.latest_step), (1, Some(3)));
    }
    fault.fail_puts_containing(None);
    // One transient failure: the push fails once and the next one works.
    fault.fail_next_puts(1);
    assert!(remote.push(&db_dir).is_err());
    let pushed = remote.push(&db_dir).unwrap();
    assert_eq!(pushed.generation, 2);
    let cache = tmp.path().join("cache");
    let db = remote.open_db(&cache).unwrap();
    assert_eq!(
        contents(&db),
        contents(&Db::open_read_only(&db_dir).unwrap())
    );
    assert!(fault.failed_puts() >= 3);
}

#[test]
fn slow_and_duplicated_uploads_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    write_steps(&db_dir, 0..5);
    let (_inner, fault, remote) = setup();
    fault.put_delay(Duration::from_millis(20));
    fault.duplicate_puts(true);
    remote.push(&db_dir).unwrap();
    let db = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(
        contents(&db),
        contents(&Db::open_read_only(&db_dir).unwrap())
    );
    assert_eq!(
        remote.bytes_fetched(),
        remote.newest_root().unwrap().unwrap().total_bytes()
    );
}

#[test]
fn two_writers_racing_for_a_generation_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.ckpt"), tmp.path().join("b.ckpt"));
    write_steps(&a, 0..3);
    write_steps(&b, 50..53);
    let (inner, _fault, remote_a) = setup();
    // Writer b has not seen a's root: it computes the same generation.
    let stale = Arc::new(FaultStore::new(inner.clone()));
    stale.stale_listing(true);
    let remote_b = Remote::with_store(stale.clone(), URL).unwrap();
    remote_a.push(&a).unwrap();
    let e = remote_b.push(&b).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Conflict, "{e}");
    let puts_after_conflict = stale.puts();
    // The winner's generation is intact and reads back as a's database.
    let root = remote_a.newest_root().unwrap().unwrap();
    assert_eq!((root.generation, root.latest_step), (1, Some(2)));
    let db = remote_a.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(contents(&db), contents(&Db::open_read_only(&a).unwrap()));
    assert_eq!(
        stale.puts(),
        puts_after_conflict,
        "the loser wrote nothing more"
    );
    // b's pieces are garbage no root names; the winner's next push
    // deletes them.
    let pushed = remote_a.push(&a).unwrap();
    assert!(pushed.objects_deleted > 0);
    let named: Vec<String> = [1, 2]
        .into_iter()
        .flat_map(|g| remote_a.read_root(g).unwrap().segments)
        .flat_map(|s| {
            s.pieces
                .iter()
                .map(|p| format!("run/{}", layout::piece_name(s.number, p)))
                .collect::<Vec<_>>()
        })
        .collect();
    for o in objects(&inner) {
        assert!(
            o.contains("/roots/") || named.contains(&o),
            "unnamed object {o} left"
        );
    }
}

#[test]
fn retention_deletes_only_objects_no_kept_root_names() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    write_steps(&db_dir, 0..10);
    let (inner, _fault, remote) = setup();
    remote.push(&db_dir).unwrap();
    let first = remote.newest_root().unwrap().unwrap();
    {
        let db = Db::open_with(&db_dir, DbOptions::default().segment_size(32 << 10)).unwrap();
        let mut tx = db.begin_step(10).unwrap();
        for s in 0..9 {
            tx.drop_step(s).unwrap();
        }
        tx.put_metric("loss", 10.0).unwrap();
        tx.commit().unwrap();
        db.compact().unwrap();
    }
    let local_numbers: Vec<u64> = super::local_segments(&db_dir.join("log"))
        .unwrap()
        .into_keys()
        .collect();
    let dropped: Vec<u64> = first
        .segments
        .iter()
        .map(|s| s.number)
        .filter(|n| !local_numbers.contains(n))
        .collect();
    assert!(!dropped.is_empty(), "compaction reclaimed no segment");
    remote.push(&db_dir).unwrap();
    // The first root is still kept (the newest two are), so its pieces stay.
    let piece_of = |n: u64| format!("run/segments/{n:020}/");
    let objs = objects(&inner);
    assert!(dropped
        .iter()
        .all(|&n| objs.iter().any(|o| o.starts_with(&piece_of(n)))));
    let third = remote.push(&db_dir).unwrap();
    assert_eq!(third.generation, 3);
    let objs = objects(&inner);
    for &n in &dropped {
        assert!(
            !objs.iter().any(|o| o.starts_with(&piece_of(n))),
            "segment {n} still remote"
        );
    }
    let newest = remote.newest_root().unwrap().unwrap();
    for s in &newest.segments {
        for p in &s.pieces {
            assert!(objs.contains(&format!("run/{}", layout::piece_name(s.number, p))));
        }
    }
    assert!(!objs.contains(&format!("run/{}", layout::root_name(1))));
    let db = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(db.steps(), vec![9, 10]);
    assert_eq!(
        contents(&db),
        contents(&Db::open_read_only(&db_dir).unwrap())
    );
}

#[test]
fn progress_counts_every_byte_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    write_steps(&db_dir, 0..6);
    let (_inner, _fault, remote) = setup();
    let mut calls = Vec::new();
    let pushed = remote
        .push_with_progress(&db_dir, &mut |d, t| calls.push((d, t)))
        .unwrap();
    let total = pushed.bytes_uploaded;
    assert!(total > 0);
    assert_eq!(pushed.latest_step, Some(5));
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[1].1 == total));
    // One call per piece uploaded, after the first.
    assert_eq!(calls.len() as u64, 1 + pushed.pieces_uploaded);

    // Nothing new: a single call announcing nothing to send.
    calls.clear();
    let again = remote
        .push_with_progress(&db_dir, &mut |d, t| calls.push((d, t)))
        .unwrap();
    assert_eq!((again.bytes_uploaded, again.pieces_uploaded), (0, 0));
    assert_eq!(calls, [(0, 0)]);

    // Pull: every byte of the generation, ending at the total.
    let root_bytes = remote.newest_root().unwrap().unwrap().total_bytes();
    let mut fetched = Vec::new();
    let pulled = remote
        .pull_with_progress(tmp.path().join("b.ckpt"), &mut |d, t| fetched.push((d, t)))
        .unwrap();
    assert_eq!(pulled.generation, 2);
    assert_eq!(pulled.latest_step, Some(5));
    assert_eq!(pulled.bytes_fetched, root_bytes);
    assert_eq!(fetched.last(), Some(&(root_bytes, root_bytes)));
    assert!(fetched.windows(2).all(|w| w[0].0 <= w[1].0));

    // A warm cache reports the same total, all of it found cached.
    let cache = tmp.path().join("cache");
    drop(remote.open_db(&cache).unwrap());
    let before = remote.bytes_fetched();
    let mut checked = Vec::new();
    drop(
        remote
            .open_db_with_progress(&cache, &mut |d, t| checked.push((d, t)))
            .unwrap(),
    );
    assert_eq!(remote.bytes_fetched(), before);
    assert_eq!(checked.last(), Some(&(root_bytes, root_bytes)));
}

#[test]
fn a_session_checks_each_piece_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    write_steps(&db_dir, 0..4);
    let (_inner, _fault, remote) = setup();
    let db = Db::open_read_only(&db_dir).unwrap();
    let mut session = super::PushSession::default();
    let first = session.push(&remote, &db, &mut |_, _| {}).unwrap().stats;
    assert_eq!(first.bytes_checked, 0, "nothing remote to check");
    let held = remote.newest_root().unwrap().unwrap().total_bytes();
    assert_eq!(first.bytes_uploaded, held);

    // The session's own root is newest: nothing is read back.
    write_steps(&db_dir, 4..6);
    assert!(db.refresh().unwrap());
    let second = session.push(&remote, &db, &mut |_, _| {}).unwrap().stats;
    assert_eq!(second.bytes_checked, 0);
    assert!(second.bytes_uploaded > 0);
    let held = remote.newest_root().unwrap().unwrap().total_bytes();

    // A push on its own checks every piece the remote holds.
    write_steps(&db_dir, 6..7);
    let alone = remote.push(&db_dir).unwrap();
    assert_eq!(alone.bytes_checked, held);

    // Someone else's root is newest: the session checks only the pieces
    // that root added.
    write_steps(&db_dir, 7..8);
    assert!(db.refresh().unwrap());
    let third = session.push(&remote, &db, &mut |_, _| {}).unwrap().stats;
    assert_eq!(third.bytes_checked, alone.bytes_uploaded);
    assert_eq!(third.generation, 4);
    let seen = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(
        contents(&seen),
        contents(&Db::open_read_only(&db_dir).unwrap())
    );
}

#[test]
fn a_session_still_checks_a_root_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.ckpt"), tmp.path().join("b.ckpt"));
    write_steps(&a, 0..3);
    write_steps(&b, 50..53);
    let (inner, _fault, remote) = setup();
    let db = Db::open_read_only(&a).unwrap();
    let mut session = super::PushSession::default();
    session.push(&remote, &db, &mut |_, _| {}).unwrap();
    // Another log's database appears at the location as generation 2 (its
    // objects copied in by hand, as a second writer with a stale view of
    // the remote could leave them).
    let elsewhere = "s3://unit-test/elsewhere";
    Remote::with_store(inner.clone(), elsewhere)
        .unwrap()
        .push(&b)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let other = Remote::with_store(inner.clone(), elsewhere).unwrap();
    let mut root = other.newest_root().unwrap().unwrap();
    for seg in &root.segments {
        for p in &seg.pieces {
            let name = layout::piece_name(seg.number, p);
            let bytes = rt
                .block_on(async {
                    inner
                        .get(&format!("elsewhere/{name}").into())
                        .await?
                        .bytes()
                        .await
                })
                .unwrap();
            rt.block_on(inner.put(&format!("run/{name}").into(), bytes.into()))
                .unwrap();
        }
    }
    root.generation = 2;
    rt.block_on(inner.put(
        &format!("run/{}", layout::root_name(2)).into(),
        root.encode().unwrap().into(),
    ))
    .unwrap();
    let e = session.push(&remote, &db, &mut |_, _| {}).unwrap_err();
    assert_eq!(kind(&e), RemoteErrorKind::Diverged, "{e}");
    let newest = remote.newest_root().unwrap().unwrap();
    assert_eq!((newest.generation, newest.latest_step), (2, Some(52)));
}

#[test]
fn a_database_without_a_commit_pushes_no_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    let db = Db::open_with(&db_dir, DbOptions::default().segment_size(32 << 10)).unwrap();
    // The first step is in the log, not committed.
    let mut tx = db.begin_step(0).unwrap();
    tx.put_blob("state", &vec![7u8; 300_000]).unwrap();
    let (_inner, _fault, remote) = setup();
    let pushed = remote.push(&db_dir).unwrap();
    assert_eq!(
        (pushed.generation, pushed.latest_step, pushed.bytes_uploaded),
        (1, None, 0)
    );
    let root = remote.newest_root().unwrap().unwrap();
    assert!(root.segments.is_empty());
    let seen = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(seen.steps(), Vec::<u64>::new());
    tx.commit().unwrap();
    assert_eq!(remote.push(&db_dir).unwrap().latest_step, Some(0));
    let seen = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(
        seen.snapshot(0).unwrap().blob("state").unwrap(),
        vec![7u8; 300_000]
    );
}

/// The objects the newest two roots name: their root objects and pieces.
fn named_by_kept_roots(remote: &Remote) -> Vec<String> {
    let gens = remote.list_roots().unwrap();
    let mut v: Vec<String> = gens[gens.len().saturating_sub(2)..]
        .iter()
        .flat_map(|&g| {
            let root = remote.read_root(g).unwrap();
            let pieces: Vec<String> = root
                .segments
                .iter()
                .flat_map(|s| {
                    s.pieces
                        .iter()
                        .map(|p| format!("run/{}", layout::piece_name(s.number, p)))
                })
                .collect();
            pieces
                .into_iter()
                .chain([format!("run/{}", layout::root_name(g))])
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn a_session_prunes_without_listing_once_the_remote_is_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let db_dir = tmp.path().join("a.ckpt");
    let db = Db::open_with(&db_dir, DbOptions::default().segment_size(32 << 10)).unwrap();
    let (inner, fault, remote) = setup();
    let mut session = super::PushSession::default();
    let mut lists = Vec::new();
    for step in 0..12u64 {
        // Keep the newest two steps and reclaim what the others held, so
        // every push drops pieces.
        let mut tx = db.begin_step(step).unwrap();
        let bytes: Vec<u8> = (0..12_000u32)
            .map(|i| (i as u64 * 31 + step * 7) as u8)
            .collect();
        tx.put_blob("state", &bytes).unwrap();
        if step >= 2 {
            tx.drop_step(step - 2).unwrap();
        }
        tx.commit().unwrap();
        db.compact().unwrap();
        let before = fault.lists();
        let pushed = session.push(&remote, &db, &mut |_, _| {}).unwrap().stats;
        lists.push(fault.lists() - before);
        assert_eq!(pushed.generation, step + 1);
        // Exactly what the two kept roots name is on the remote: nothing
        // dropped is left, nothing kept is gone.
        assert_eq!(objects(&inner), named_by_kept_roots(&remote), "step {step}");
    }
    // The first pushes list every object to prune (the session cannot
    // know what an earlier process left); from the third on, the only
    // listing is the one that finds the newest root.
    assert_eq!(&lists[..2], &[3, 3]);
    assert!(lists[2..].iter().all(|&n| n == 1), "{lists:?}");

    // A root the session did not write in between (a one-off push of the
    // same log): the next prune lists again.
    let mut tx = db.begin_step(12).unwrap();
    tx.put_blob("state", b"pushed elsewhere").unwrap();
    tx.commit().unwrap();
    assert_eq!(remote.push(&db_dir).unwrap().generation, 13);
    let mut tx = db.begin_step(13).unwrap();
    tx.put_blob("state", b"last").unwrap();
    tx.commit().unwrap();
    let before = fault.lists();
    session.push(&remote, &db, &mut |_, _| {}).unwrap();
    assert_eq!(fault.lists() - before, 3);
    assert_eq!(objects(&inner), named_by_kept_roots(&remote));
    let seen = remote.open_db(tmp.path().join("cache")).unwrap();
    assert_eq!(contents(&seen), contents(&db));
}
