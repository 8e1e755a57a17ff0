//! `push_batch` stores exactly what pushing the same rows one at a time
//! stores, across page boundaries and a wrap of the ring, fields of every
//! width included.

use ckptdb::replay::{Field, ReplayOptions, Schema};
use ckptdb::Db;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn a_batch_stores_the_rows_pushed_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db")).unwrap();
    let schema = Schema::parse(
        "obs: f32[3], action: i64[], flag: bool[], code: u16[2], empty: u8[0], \
             pos: f64[2], tag: i16[]",
    )
    .unwrap();
    // Prioritized: a batch also gives each new row the maximum priority.
    let opts = ReplayOptions::new(50, 7).prioritized(0.6);
    let mut one = db.replay_table("one", &schema, opts).unwrap();
    let mut batch = db.replay_table("batch", &schema, opts).unwrap();
    let n = 64usize;
    let obs: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.25).collect();
    let action: Vec<i64> = (0..n as i64).map(|i| i * 1000 - 7).collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 3 == 1).collect();
    let code: Vec<u16> = (0..n * 2).map(|i| (i * 37) as u16).collect();
    let pos: Vec<f64> = (0..n * 2).map(|i| i as f64 * -1.5).collect();
    let tag: Vec<i16> = (0..n as i16).map(|i| i * 3 - 100).collect();
    for r in 0..n {
        one.push(&[
            Field::vector("obs", &obs[r * 3..r * 3 + 3]),
            Field::scalar("action", &action[r]),
            Field::scalar("flag", &flag[r]),
            Field::vector("code", &code[r * 2..r * 2 + 2]),
            Field::vector::<u8>("empty", &[]),
            Field::vector("pos", &pos[r * 2..r * 2 + 2]),
            Field::scalar("tag", &tag[r]),
        ])
        .unwrap();
    }
    // In uneven batches, so that batches end inside pages.
    let mut at = 0;
    for size in [5usize, 1, 20, 38] {
        let rows = at..at + size;
        batch
            .push_batch(&[
                Field::rows("obs", size, &obs[rows.start * 3..rows.end * 3], &[3]),
                Field::vector("action", &action[rows.clone()]),
                Field::vector("flag", &flag[rows.clone()]),
                Field::rows("code", size, &code[rows.start * 2..rows.end * 2], &[2]),
                Field::rows::<u8>("empty", size, &[], &[0]),
                Field::rows("pos", size, &pos[rows.start * 2..rows.end * 2], &[2]),
                Field::vector("tag", &tag[rows.clone()]),
            ])
            .unwrap();
        at += size;
    }
    assert_eq!(at, n);
    assert_eq!(batch.total_inserted(), n as u64);
    assert_eq!(batch.len(), 50);
    for i in 0..50 {
        let (a, b) = (one.get(i).unwrap(), batch.get(i).unwrap());
        assert_eq!(a.bytes(), b.bytes(), "row {i}");
        assert_eq!(a.index(), b.index());
    }
    let mut rng_one = StdRng::seed_from_u64(7);
    let mut rng_batch = StdRng::seed_from_u64(7);
    let (s1, s2) = (
        one.sample_prioritized(&mut rng_one, 200, 0.4).unwrap(),
        batch.sample_prioritized(&mut rng_batch, 200, 0.4).unwrap(),
    );
    assert_eq!(s1.indices(), s2.indices());
    assert_eq!(s1.weights(), s2.weights());
    // Spot-check decoded values of the newest row (serial 63).
    let last = batch.get(49).unwrap();
    assert_eq!(last.values::<f32>("obs").unwrap(), obs[189..192]);
    assert_eq!(last.scalar::<i64>("action").unwrap(), 62_993);
    assert!(!last.scalar::<bool>("flag").unwrap());
    assert_eq!(last.values::<u16>("code").unwrap(), code[126..128]);
    assert_eq!(last.values::<f64>("pos").unwrap(), pos[126..128]);
    assert_eq!(last.scalar::<i16>("tag").unwrap(), 63 * 3 - 100);
}
