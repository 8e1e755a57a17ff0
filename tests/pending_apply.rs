//! A pending step is a batch of puts that a transaction applies: checked
//! when each put is made, written in order (a later put of a key wins) next
//! to the transaction's own puts, and read back exactly.

use ckptdb::ndarray::{arr2, Array1, Array2};
use ckptdb::trainer::PendingStep;
use ckptdb::{DType, Db, Error};

#[test]
fn a_batch_applied_to_a_transaction_commits_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();

    let w = arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let mut batch = PendingStep::new();
    // A transposed view is not in standard layout: copied row-major.
    batch.put_tensor("w_t", &w.t()).unwrap();
    batch
        .put_tensor_owned("b", Array1::from(vec![7i64, -8]))
        .unwrap();
    batch
        .put_tensor_raw("flags", DType::Bool, &[3], &[1, 0, 1])
        .unwrap();
    batch.put_blob("rng", b"state").unwrap();
    batch.put_value("config", &("lr", 0.5)).unwrap();
    batch.put_blob("over", b"first").unwrap();
    batch.put_blob("over", b"second").unwrap();
    batch.put_metric("loss", 0.25).unwrap();

    let mut tx = db.begin_step(1).unwrap();
    tx.put_blob("own", b"direct").unwrap();
    tx.apply(batch).unwrap();
    tx.commit().unwrap();

    let snap = db.snapshot(1).unwrap();
    let w_t = snap.tensor("w_t").unwrap();
    let w_t = w_t.view::<f32>().unwrap();
    assert_eq!(w_t.shape(), &[3, 2]);
    assert_eq!(
        w_t.iter().copied().collect::<Vec<_>>(),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    assert_eq!(
        snap.tensor("b").unwrap().view::<i64>().unwrap().as_slice(),
        Some(&[7i64, -8][..])
    );
    let flags = snap.tensor("flags").unwrap();
    assert_eq!(flags.bytes().unwrap(), &[1, 0, 1]);
    assert_eq!(snap.blob("rng").unwrap(), b"state");
    assert_eq!(snap.blob("over").unwrap(), b"second");
    assert_eq!(snap.blob("own").unwrap(), b"direct");
    assert_eq!(
        snap.value::<(String, f64)>("config").unwrap(),
        ("lr".into(), 0.5)
    );
    assert_eq!(snap.metrics().get("loss"), Some(&0.25));
}

#[test]
fn a_bad_put_fails_when_it_is_made_not_when_the_batch_is_applied() {
    let mut batch = PendingStep::new();
    let cases: Vec<(&str, ckptdb::Result<()>)> = vec![
        (
            "short bytes",
            batch.put_tensor_raw("x", DType::F32, &[2, 2], &[0; 15]),
        ),
        (
            "bool byte 2",
            batch.put_tensor_raw("x", DType::Bool, &[2], &[0, 2]),
        ),
        (
            "overflowing shape",
            batch.put_tensor_raw("x", DType::U8, &[u64::MAX, 2], &[]),
        ),
        ("key with ..", batch.put_blob("../etc", b"x")),
        (
            "rank over the limit",
            batch.put_tensor_raw("x", DType::U8, &[1; 40], &[0]),
        ),
    ];
    for (what, r) in cases {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
    }
    assert_eq!(batch.byte_len(), 0, "nothing refused is held");

    // The same checks on the transaction itself.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    let r = tx.put_tensor_raw("x", DType::F32, &[2, 2], &[0; 15]);
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let empty: Array2<f32> = Array2::zeros((0, 4));
    tx.put_tensor("empty", &empty).unwrap();
    tx.commit().unwrap();
    let snap = db.snapshot(1).unwrap();
    assert_eq!(snap.keys().collect::<Vec<_>>(), ["empty"]);
}
