//! `ckptdb diff`: keys added, removed, changed and unchanged between two
//! steps, with the size of the change for tensors.
//!
//! Two entries are unchanged when they are the same stored entry (dedup
//! shares it) or have equal kind, dtype, shape and bytes. For a changed
//! tensor of unchanged dtype and shape, the report gives the largest
//! absolute elementwise difference and the relative L2 change
//! `‖b − a‖₂ / ‖a‖₂` (computed in `f64`; NaN pairs are skipped).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::select::Selector;
use super::table::{num, shape, Table};
use super::Output;
use crate::{Db, Element, EntryInfo, Kind, Result, Snapshot};

/// Largest absolute difference and relative L2 change of `b` against `a`.
pub(crate) fn change<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let (mut max_abs, mut diff2, mut norm2) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x.to_f64(), y.to_f64());
        let d = y - x;
        if !d.is_nan() {
            max_abs = max_abs.max(d.abs());
            diff2 += d * d;
        }
        if !x.is_nan() {
            norm2 += x * x;
        }
    }
    let rel = if diff2 == 0.0 {
        0.0
    } else {
        diff2.sqrt() / norm2.sqrt()
    };
    (max_abs, rel)
}

fn same_content(sa: &Snapshot, a: &EntryInfo, sb: &Snapshot, b: &EntryInfo) -> Result<bool> {
    if a.location == b.location {
        return Ok(true);
    }
    if a.kind != b.kind
        || a.dtype != b.dtype
        || a.shape != b.shape
        || a.bytes != b.bytes
        || a.crc32 != b.crc32
    {
        return Ok(false);
    }
    Ok(sa.raw_bytes(&a.key)? == sb.raw_bytes(&b.key)?)
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

pub(crate) fn run(db: &Db, sel_a: &Selector, sel_b: &Selector) -> Result<Output> {
    let (step_a, step_b) = (sel_a.resolve(db)?, sel_b.resolve(db)?);
    let (sa, sb) = (db.snapshot(step_a)?, db.snapshot(step_b)?);
    let keys: BTreeSet<&str> = sa.keys().chain(sb.keys()).collect();
    let (mut added, mut removed, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    let mut changed = Vec::new();
    let mut t = Table::new(&["", "KEY", "KIND", "WAS", "NOW", ">MAX |Δ|", ">REL L2"]);
    let describe = |e: &EntryInfo| match e.dtype {
        Some(d) => format!("{d}{}", shape(&e.shape)),
        None => format!("{} B", e.bytes),
    };
    for key in keys {
        match (sa.entry(key).ok(), sb.entry(key).ok()) {
            (None, Some(b)) => {
                t.row(vec![
                    "+".into(),
                    key.into(),
                    b.kind.name().into(),
                    String::new(),
                    describe(&b),
                ]);
                added.push(key);
            }
            (Some(a), None) => {
                t.row(vec![
                    "-".into(),
                    key.into(),
                    a.kind.name().into(),
                    describe(&a),
                ]);
                removed.push(key);
            }
            (Some(a), Some(b)) => {
                if same_content(&sa, &a, &sb, &b)? {
                    unchanged.push(key);
                    continue;
                }
                let numeric = a.kind == Kind::Tensor
                    && b.kind == Kind::Tensor
                    && a.dtype == b.dtype
                    && a.shape == b.shape;
                let (max_abs, rel) = if numeric {
                    let (ta, tb) = (sa.tensor(key)?, sb.tensor(key)?);
                    let (m, r) = with_element!(ta.dtype(), T => {
                        change(ta.as_slice::<T>()?, tb.as_slice::<T>()?)
                    });
                    (Some(m), Some(r))
                } else {
                    (None, None)
                };
                let kind = if a.kind == b.kind {
                    a.kind.name().to_owned()
                } else {
                    format!("{}→{}", a.kind.name(), b.kind.name())
                };
                t.row(vec![
                    "~".into(),
                    key.into(),
                    kind,
                    describe(&a),
                    describe(&b),
                    max_abs.map(num).unwrap_or_default(),
                    rel.map(num).unwrap_or_default(),
                ]);
                changed.push(json!({
                    "key": key,
                    "kind": b.kind.name(),
                    "old": {"kind": a.kind.name(), "dtype": a.dtype.map(|d| d.name()), "shape": a.shape, "bytes": a.bytes},
                    "new": {"kind": b.kind.name(), "dtype": b.dtype.map(|d| d.name()), "shape": b.shape, "bytes": b.bytes},
                    "max_abs_diff": max_abs.map_or(Value::Null, finite_or_null),
                    "rel_l2": rel.map_or(Value::Null, finite_or_null),
                }));
            }
            (None, None) => {}
        }
    }
    let mut text = format!(
        "step {step_a} → step {step_b}: {} added, {} removed, {} changed, {} unchanged\n",
        added.len(),
        removed.len(),
        changed.len(),
        unchanged.len()
    );
    if !t.is_empty() {
        text.push('\n');
        text.push_str(&t.render());
    }
    let json = json!({
        "a": step_a,
        "b": step_b,
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": unchanged,
    });
    Ok(Output::ok(text, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_of_vectors() {
        let (m, r) = change(&[3.0f32, 4.0], &[3.0, 5.0]);
        assert_eq!(m, 1.0);
        assert!((r - 0.2).abs() < 1e-12);
        assert_eq!(change(&[1i64, 2], &[1, 2]), (0.0, 0.0));
        let (m, r) = change(&[0.0f64], &[2.0]);
        assert_eq!(m, 2.0);
        assert!(r.is_infinite());
    }
}
