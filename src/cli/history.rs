//! `ckptdb history`: the live steps at which a key's content changed.

use serde_json::json;

use super::table::{human_bytes, iso_time, shape, Table};
use super::Output;
use crate::{Db, Result};

pub(crate) fn run(db: &Db, key: &str) -> Result<Output> {
    let steps = db.history(key)?;
    let mut t = Table::new(&["STEP", "TIME (UTC)", "KIND", "DTYPE", "SHAPE", ">BYTES"]);
    let mut rows = Vec::with_capacity(steps.len());
    for &step in &steps {
        let snap = db.snapshot(step)?;
        let e = snap.entry(key)?;
        let dtype = e.dtype.map(|d| d.name().to_owned());
        t.row(vec![
            step.to_string(),
            iso_time(snap.time()),
            e.kind.name().to_owned(),
            dtype.clone().unwrap_or_default(),
            if e.dtype.is_some() {
                shape(&e.shape)
            } else {
                String::new()
            },
            human_bytes(e.bytes),
        ]);
        rows.push(json!({
            "step": step,
            "kind": e.kind.name(),
            "dtype": dtype,
            "shape": e.shape,
            "bytes": e.bytes,
        }));
    }
    let text = t.render();
    Ok(Output::ok(text, json!({"key": key, "changes": rows})))
}
