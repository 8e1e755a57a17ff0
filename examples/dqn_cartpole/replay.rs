//! The replay buffer is a ckptdb replay table: transitions go into pages in
//! the database file as they are pushed, every checkpoint records the table,
//! and a restored run samples exactly the transitions it had.

use ckptdb::replay::{Field, ReplayOptions, ReplayTable, Schema};
use ndarray::{Ix1, Ix2};
use rand::Rng;

use crate::agent::Batch;

/// The table's name in the database.
pub const TABLE: &str = "replay";
/// Rows per page: a page of CartPole transitions is about 45 KiB.
const PAGE_ROWS: u64 = 1024;

pub fn schema() -> ckptdb::Result<Schema> {
    Schema::parse("obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[]")
}

pub fn options(capacity: u64) -> ReplayOptions {
    ReplayOptions::new(capacity, PAGE_ROWS)
}

pub fn push(
    table: &mut ReplayTable<'_>,
    obs: [f32; 4],
    action: i64,
    reward: f32,
    next_obs: [f32; 4],
    terminated: bool,
) -> ckptdb::Result<()> {
    table.push(&[
        Field::vector("obs", &obs),
        Field::scalar("action", &action),
        Field::scalar("reward", &reward),
        Field::vector("next_obs", &next_obs),
        Field::scalar("terminated", &terminated),
    ])
}

/// A uniform batch, read straight from the table's mapped pages.
pub fn sample(
    table: &ReplayTable<'_>,
    n: usize,
    rng: &mut impl Rng,
) -> Result<Batch, Box<dyn std::error::Error>> {
    let b = table.sample_uniform(rng, n)?;
    Ok(Batch {
        obs: b.array::<f32>("obs")?.into_dimensionality::<Ix2>()?,
        action: b.array::<i64>("action")?.into_dimensionality::<Ix1>()?,
        reward: b.array::<f32>("reward")?.into_dimensionality::<Ix1>()?,
        next_obs: b.array::<f32>("next_obs")?.into_dimensionality::<Ix2>()?,
        terminated: b
            .array::<bool>("terminated")?
            .into_dimensionality::<Ix1>()?,
    })
}
