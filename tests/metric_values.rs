//! Metrics are finite numbers: NaN and ±Inf are refused with a clear
//! `InvalidArgument` on every path that takes a metric, so nothing `ls`
//! shows is a metric `best:` cannot rank.

use std::io::Write;

use ckptdb::interop::safetensors::ImportOptions;
use ckptdb::trainer::{CheckpointManager, CheckpointOptions, PendingStep};
use ckptdb::{Db, Error};

const NON_FINITE: [f64; 3] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

fn assert_refused(r: ckptdb::Result<()>, value: f64) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            assert_eq!(
                msg,
                format!(
                    "metric \"m\" is {value}; metrics must be finite (leave the metric out of this step)"
                )
            )
        }
        other => panic!("{value}: {other:?}"),
    }
}

#[test]
fn a_step_transaction_refuses_non_finite_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let mut tx = db.begin_step(1).unwrap();
    for v in NON_FINITE {
        assert_refused(tx.put_metric("m", v), v);
    }
    tx.put_metric("m", -0.5).unwrap();
    assert_eq!(tx.metrics().get("m"), Some(&-0.5));
    tx.commit().unwrap();
    assert_eq!(db.step_infos()[0].metrics["m"], -0.5);
}

#[test]
fn a_pending_step_refuses_non_finite_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let manager = CheckpointManager::open(dir.path().join("db"), CheckpointOptions::new()).unwrap();
    let mut pending = PendingStep::new();
    for v in NON_FINITE {
        assert_refused(pending.put_metric("m", v), v);
    }
    pending.put_metric("m", 2.0).unwrap();
    manager.save_async(5, pending).unwrap();
    manager.flush().unwrap();
    assert_eq!(manager.db().step_infos()[0].metrics["m"], 2.0);
    // The synchronous save goes through the transaction.
    let r = manager.save(6, |tx| tx.put_metric("m", f64::NAN));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    assert_eq!(manager.db().steps(), vec![5]);
}

#[test]
fn import_refuses_metrics_metadata_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    // JSON has no NaN or infinity: the nearest a file's metadata comes is a
    // number out of f64's range. That, and metadata that is not JSON at all,
    // is refused whole: no step is committed without the metrics its file
    // claims.
    for (name, metrics) in [
        ("huge", r#"{\"m\": 1e999}"#),
        ("not-json", "m=1"),
        ("list", "[1]"),
    ] {
        let header = format!(
            r#"{{"__metadata__":{{"metrics":"{metrics}"}},"w":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#
        );
        let file = dir.path().join(format!("{name}.safetensors"));
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(&1.0f32.to_le_bytes()).unwrap();
        drop(f);
        let r = db.import_safetensors(&file, 1, &ImportOptions::default(), &mut |_| {});
        match r {
            Err(Error::InvalidFile { ref reason, .. }) if reason.contains("\"metrics\"") => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(db.steps().is_empty());
}
