//! Helpers shared by the replay table tests.
#![allow(dead_code)]

use ckptdb::replay::{Field, ReplayTable, Row, Schema};

/// The CartPole transition schema (48 bytes per row... 4+8+4+4*4... see
/// `ROW_BYTES`).
pub fn cartpole() -> Schema {
    Schema::parse(
        "obs: f32[4], action: i64[], reward: f32[], next_obs: f32[4], terminated: bool[], truncated: bool[]",
    )
    .unwrap()
}

/// Packed size of a CartPole row.
pub const ROW_BYTES: usize = 16 + 8 + 4 + 16 + 1 + 1;

/// Transition number `i`, with every field derived from `i`.
pub struct Transition {
    pub obs: [f32; 4],
    pub action: i64,
    pub reward: f32,
    pub next_obs: [f32; 4],
    pub terminated: bool,
    pub truncated: bool,
}

pub fn transition(i: u64) -> Transition {
    let x = i as f32;
    Transition {
        obs: [x, x + 0.25, x + 0.5, x + 0.75],
        action: i as i64 * 3 - 7,
        reward: x * 0.5,
        next_obs: [x + 1.0, x + 1.25, x + 1.5, x + 1.75],
        terminated: i.is_multiple_of(7),
        truncated: i.is_multiple_of(11),
    }
}

pub fn push(table: &mut ReplayTable<'_>, i: u64) {
    let t = transition(i);
    table
        .push(&[
            Field::vector("obs", &t.obs),
            Field::scalar("action", &t.action),
            Field::scalar("reward", &t.reward),
            Field::vector("next_obs", &t.next_obs),
            Field::scalar("terminated", &t.terminated),
            Field::scalar("truncated", &t.truncated),
        ])
        .unwrap();
}

pub fn push_range(table: &mut ReplayTable<'_>, range: std::ops::Range<u64>) {
    for i in range {
        push(table, i);
    }
}

/// Which transition a row holds (checking that every field agrees).
pub fn which(row: &Row<'_>) -> u64 {
    let action: i64 = row.scalar("action").unwrap();
    let i = ((action + 7) / 3) as u64;
    let t = transition(i);
    assert_eq!(row.values::<f32>("obs").unwrap(), t.obs);
    assert_eq!(row.scalar::<f32>("reward").unwrap(), t.reward);
    assert_eq!(row.values::<f32>("next_obs").unwrap(), t.next_obs);
    assert_eq!(row.scalar::<bool>("terminated").unwrap(), t.terminated);
    assert_eq!(row.scalar::<bool>("truncated").unwrap(), t.truncated);
    i
}

/// Upper critical value of chi-square with `df` degrees of freedom at
/// p = 1e-4 (Wilson–Hilferty; accurate to well under 1% for df >= 10).
pub fn chi2_critical_1e4(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.719_016; // standard normal quantile of 1 - 1e-4
    let h = 2.0 / (9.0 * k);
    k * (1.0 - h + z * h.sqrt()).powi(3)
}

/// Pearson's chi-square statistic of `observed` against `expected` counts.
pub fn chi2(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum()
}
