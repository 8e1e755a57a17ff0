//! Bad rows, bad schemas and bad calls are typed errors that leave the table
//! unchanged.

mod replay_util;

use ckptdb::replay::{Field, FieldSpec, ReplayOptions, Schema, MAX_WRITE_BATCH};
use ckptdb::{DType, Db, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;
use replay_util::*;

const ALL: [&str; 6] = [
    "obs",
    "action",
    "reward",
    "next_obs",
    "terminated",
    "truncated",
];

fn good<'a>(x: &'a Transition, name: &str) -> Field<'a> {
    match name {
        "obs" => Field::vector("obs", &x.obs),
        "action" => Field::scalar("action", &x.action),
        "reward" => Field::scalar("reward", &x.reward),
        "next_obs" => Field::vector("next_obs", &x.next_obs),
        "terminated" => Field::scalar("terminated", &x.terminated),
        _ => Field::scalar("truncated", &x.truncated),
    }
}

/// A full row of `x` with field `name` replaced by `f`.
fn row_with<'a>(x: &'a Transition, name: &str, f: Field<'a>) -> Vec<Field<'a>> {
    ALL.iter()
        .map(|&n| if n == name { f } else { good(x, n) })
        .collect()
}

fn snapshot_of(t: &ckptdb::replay::ReplayTable<'_>) -> (u64, u64, Vec<u64>) {
    (
        t.len(),
        t.total_inserted(),
        (0..t.len()).map(|i| which(&t.get(i).unwrap())).collect(),
    )
}

#[test]
fn wrong_field_dtype_or_shape_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut t = db
        .replay_table("buf", &cartpole(), ReplayOptions::new(8, 4))
        .unwrap();
    // Fill to just before a page boundary, so a wrongly accepted row would
    // also flush a page.
    push_range(&mut t, 0..11);
    let before = snapshot_of(&t);
    let x = transition(99);
    let obs3 = [0f32; 3];
    let action_f = 1.0f64;
    let action_i32 = 1i32;
    let obs_2d = [0f32; 4];
    let shape_2x2 = [2usize, 2];
    // Wrong dtype.
    let e = t
        .push(&row_with(&x, "action", Field::scalar("action", &action_f)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::DtypeMismatch {
                stored: DType::I64,
                requested: DType::F64,
                ..
            }
        ),
        "{e}"
    );
    let e = t
        .push(&row_with(
            &x,
            "action",
            Field::scalar("action", &action_i32),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::DtypeMismatch { .. }), "{e}");
    // Wrong shape.
    let e = t
        .push(&row_with(&x, "obs", Field::vector("obs", &obs3)))
        .unwrap_err();
    match e {
        Error::ShapeMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, vec![4]);
            assert_eq!(actual, vec![3]);
        }
        e => panic!("{e}"),
    }
    let e = t
        .push(&row_with(
            &x,
            "obs",
            Field::tensor("obs", &obs_2d, &shape_2x2),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // Values that do not fill the shape.
    let e = t
        .push(&row_with(&x, "obs", Field::tensor("obs", &obs3, &[4])))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // Unknown field.
    let mut row = row_with(&x, "obs", good(&x, "obs"));
    row.push(Field::scalar("bonus", &x.reward));
    assert!(matches!(t.push(&row).unwrap_err(), Error::NotFound { .. }));
    // Missing field.
    let row: Vec<Field<'_>> = ALL[..5].iter().map(|&n| good(&x, n)).collect();
    assert!(matches!(
        t.push(&row).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    // Repeated field.
    let mut row = row_with(&x, "obs", good(&x, "obs"));
    row.push(good(&x, "reward"));
    assert!(matches!(
        t.push(&row).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    // A bool byte that is not 0 or 1.
    let bad = [2u8];
    let e = t
        .push(&row_with(
            &x,
            "terminated",
            Field::raw("terminated", DType::Bool, &[], &bad),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // A packed row of the wrong size.
    assert!(matches!(
        t.push_bytes(&[0u8; 10]).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    // A batch whose columns disagree on the number of rows.
    let obs = [0f32; 8];
    let next = [0f32; 12];
    let actions = [1i64, 2];
    let rewards = [0f32; 2];
    let flags = [false; 2];
    let e = t
        .push_batch(&[
            Field::rows("obs", 2, &obs, &[4]),
            Field::vector("action", &actions),
            Field::vector("reward", &rewards),
            Field::rows("next_obs", 3, &next, &[4]),
            Field::vector("terminated", &flags),
            Field::vector("truncated", &flags),
        ])
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");

    assert_eq!(snapshot_of(&t), before);
    // And the table still works.
    push(&mut t, 11);
    assert_eq!(which(&t.get(t.len() - 1).unwrap()), 11);
}

#[test]
fn push_batch_and_push_bytes_store_the_same_rows_as_push() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    let mut t = db
        .replay_table("buf", &cartpole(), ReplayOptions::new(16, 4))
        .unwrap();
    let ts: Vec<Transition> = (0..10).map(transition).collect();
    let obs: Vec<f32> = ts.iter().flat_map(|t| t.obs).collect();
    let next: Vec<f32> = ts.iter().flat_map(|t| t.next_obs).collect();
    let action: Vec<i64> = ts.iter().map(|t| t.action).collect();
    let reward: Vec<f32> = ts.iter().map(|t| t.reward).collect();
    let term: Vec<bool> = ts.iter().map(|t| t.terminated).collect();
    let trunc: Vec<bool> = ts.iter().map(|t| t.truncated).collect();
    t.push_batch(&[
        Field::rows("obs", 10, &obs, &[4]),
        Field::vector("action", &action),
        Field::vector("reward", &reward),
        Field::rows("next_obs", 10, &next, &[4]),
        Field::vector("terminated", &term),
        Field::vector("truncated", &trunc),
    ])
    .unwrap();
    let packed = t.get(3).unwrap().bytes().to_vec();
    t.push_bytes(&packed).unwrap();
    // Named fields in another order, shapes given as tensors: the same row.
    let x = &ts[5];
    t.push(&[
        Field::scalar("truncated", &x.truncated),
        Field::tensor("next_obs", &x.next_obs, &[4]),
        Field::tensor("reward", std::slice::from_ref(&x.reward), &[]),
        Field::scalar("terminated", &x.terminated),
        Field::raw("action", DType::I64, &[], &x.action.to_le_bytes()),
        Field::tensor("obs", &x.obs, &[4]),
    ])
    .unwrap();
    let five = t.get(5).unwrap().bytes().to_vec();
    assert_eq!(t.get(t.len() - 1).unwrap().bytes(), &five[..]);
    let got: Vec<u64> = (0..t.len()).map(|i| which(&t.get(i).unwrap())).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 5]);
    // Typed access checks the dtype.
    let mut rng = StdRng::seed_from_u64(0);
    let b = t.sample_uniform(&mut rng, 4).unwrap();
    assert!(matches!(
        b.view::<f64>("obs").unwrap_err(),
        Error::DtypeMismatch { .. }
    ));
    assert!(matches!(
        b.view::<f32>("nope").unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        t.get(0).unwrap().values::<i32>("action").unwrap_err(),
        Error::DtypeMismatch { .. }
    ));
}

#[test]
fn reopening_with_another_schema_or_geometry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let opts = ReplayOptions::new(16, 4);
    {
        let db = Db::open(&path).unwrap();
        let mut t = db.replay_table("buf", &cartpole(), opts).unwrap();
        push_range(&mut t, 0..5);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    let db = Db::open(&path).unwrap();
    let other = Schema::new([FieldSpec::new("obs", DType::F64, &[4])]).unwrap();
    for (schema, o) in [
        (other, opts),
        (cartpole(), ReplayOptions::new(32, 4)),
        (cartpole(), ReplayOptions::new(16, 8)),
        (cartpole(), opts.prioritized(0.6)),
    ] {
        let e = db.replay_table("buf", &schema, o).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    assert!(db.replay_table("buf", &cartpole(), opts).is_ok());
    // The write batch is how this process writes, not part of the table.
    let t = db
        .replay_table("buf", &cartpole(), opts.write_batch(1 << 10))
        .unwrap();
    assert_eq!(t.len(), 5);
    drop(t);
    // A table the step does not hold, at a given step.
    assert!(matches!(
        db.replay_table_at("other", &cartpole(), opts, 1)
            .unwrap_err(),
        Error::NotFound { .. }
    ));
    assert!(matches!(
        db.replay_table_at("buf", &cartpole(), opts, 7).unwrap_err(),
        Error::StepNotFound { step: 7 }
    ));
    drop(db);
    let ro = Db::open_read_only(&path).unwrap();
    assert!(matches!(
        ro.replay_table("buf", &cartpole(), opts).unwrap_err(),
        Error::ReadOnly
    ));
}

#[test]
fn bad_schemas_and_options_are_refused() {
    assert!(Schema::parse("obs: f32[4], obs: i64[]").is_err());
    assert!(Schema::parse("obs: f33[4]").is_err());
    assert!(Schema::parse("obs f32[4]").is_err());
    assert!(Schema::parse("obs: f32[4] action: i64[]").is_err());
    assert!(Schema::parse("obs: f32[0]").is_err());
    assert!(Schema::parse("").is_err());
    let s = Schema::parse("obs: f32[2, 3],\naction: i64[]").unwrap();
    assert_eq!(s.to_string(), "obs: f32[2, 3], action: i64[]");
    assert_eq!(s.row_size(), 32);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("run.ckpt")).unwrap();
    for o in [
        ReplayOptions::new(0, 1),
        ReplayOptions::new(10, 0),
        ReplayOptions::new(10, 11),
        ReplayOptions::new(10, 5).prioritized(f64::NAN),
        ReplayOptions::new(10, 5).prioritized(-1.0),
        ReplayOptions::new(10, 5).write_batch(MAX_WRITE_BATCH + 1),
    ] {
        assert!(matches!(
            db.replay_table("buf", &s, o).unwrap_err(),
            Error::InvalidArgument(_)
        ));
    }
    assert!(db.replay_table("", &s, ReplayOptions::new(10, 5)).is_err());
}

#[test]
fn a_damaged_page_is_a_corruption_error_not_a_wrong_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    {
        let db = Db::open(&path).unwrap();
        let mut t = db
            .replay_table("buf", &cartpole(), ReplayOptions::new(64, 8))
            .unwrap();
        push_range(&mut t, 0..20);
        let mut tx = db.begin_step(1).unwrap();
        tx.put_replay(&mut t).unwrap();
        tx.commit().unwrap();
    }
    // Flip one byte of transition 3's observation inside its page.
    let needle: Vec<u8> = transition(3)
        .obs
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let seg = std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let db = Db::open_read_only(&path).unwrap();
    let e = db.snapshot(1).unwrap().replay("buf").unwrap_err();
    assert!(e.is_corruption(), "{e}");
}

/// Zero rows drawn from an empty table are an empty batch by every kind of
/// draw (the fuzz target `replay_table` found the prioritized draw refusing
/// them); one row is refused as from an empty table.
#[test]
fn zero_rows_from_an_empty_table_are_an_empty_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let table = db
        .replay_table(
            "buf",
            &cartpole(),
            ReplayOptions::new(8, 4).prioritized(0.6),
        )
        .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for b in [
        table.sample_uniform(&mut rng, 0).unwrap(),
        table.sample_uniform_distinct(&mut rng, 0).unwrap(),
        table.sample_prioritized(&mut rng, 0, 0.4).unwrap(),
    ] {
        assert_eq!(b.len(), 0);
        assert!(b.indices().is_empty());
    }
    assert_eq!(
        table
            .sample_prioritized(&mut rng, 0, 0.4)
            .unwrap()
            .weights(),
        Some(&[][..])
    );
    for e in [
        table.sample_uniform(&mut rng, 1).unwrap_err(),
        table.sample_prioritized(&mut rng, 1, 0.4).unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    }
}
