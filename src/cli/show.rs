//! `ckptdb show`: every entry of one step.

use serde_json::{json, Value};

use super::select::Selector;
use super::table::{human_bytes, iso_time, metrics, shape, truncate, Table};
use super::Output;
use crate::{Db, Kind, Result, Snapshot, Tensor};

/// Tensors with at most this many elements have their values printed.
const SMALL_TENSOR: u64 = 8;

/// The elements of a small tensor, as text.
fn small_tensor_text(t: &Tensor<'_>) -> Result<String> {
    with_element!(t.dtype(), T => {
        let s = t.as_slice::<T>()?;
        let items: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        Ok(if t.shape().is_empty() {
            items.join("")
        } else {
            format!("[{}]", items.join(", "))
        })
    })
}

fn replay_summary(snap: &Snapshot) -> Vec<Value> {
    snap.manifest()
        .replay
        .iter()
        .map(|(name, t)| {
            let pages = t.pages.iter().flatten().count() + usize::from(t.partial.is_some());
            let bytes: u64 = t
                .pages
                .iter()
                .flatten()
                .chain(t.partial.iter())
                .chain(t.side.iter())
                .map(|e| e.len)
                .sum();
            json!({"name": name, "pages": pages, "bytes": bytes})
        })
        .collect()
}

pub(crate) fn run(db: &Db, sel: &Selector) -> Result<Output> {
    let snap = sel.snapshot(db)?;
    let mut t = Table::new(&["KEY", "KIND", "DTYPE", "SHAPE", ">BYTES", "VALUE"]);
    let mut entries = Vec::with_capacity(snap.len());
    for e in snap.entries() {
        let dtype = e.dtype.map(|d| d.name().to_owned());
        let mut obj = json!({
            "key": e.key,
            "kind": e.kind.name(),
            "dtype": dtype,
            "shape": e.shape,
            "bytes": e.bytes,
            "segment": e.location.segment,
            "offset": e.location.offset,
            "crc32": e.crc32,
        });
        let shown = match e.kind {
            Kind::Value => {
                let raw = snap.raw_bytes(&e.key)?;
                let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
                let text = String::from_utf8_lossy(raw).into_owned();
                obj["value"] = v;
                truncate(&text, 60)
            }
            Kind::Tensor => {
                let tensor = snap.tensor(&e.key)?;
                if tensor.len() <= SMALL_TENSOR {
                    truncate(&small_tensor_text(&tensor)?, 60)
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        t.row(vec![
            e.key.clone(),
            e.kind.name().to_owned(),
            dtype.unwrap_or_default(),
            if e.kind == Kind::Tensor {
                shape(&e.shape)
            } else {
                String::new()
            },
            human_bytes(e.bytes),
            shown,
        ]);
        entries.push(obj);
    }
    let replay = replay_summary(&snap);
    let mut text = format!(
        "step {}  committed {}  {} entries, {}\n",
        snap.step(),
        iso_time(snap.time()),
        snap.len(),
        human_bytes(snap.logical_bytes())
    );
    if !snap.metrics().is_empty() {
        text.push_str(&format!("metrics: {}\n", metrics(snap.metrics())));
    }
    if !snap.tags().is_empty() {
        text.push_str(&format!("tags: {}\n", snap.tags().join(", ")));
    }
    text.push('\n');
    text.push_str(&t.render());
    if !replay.is_empty() {
        let mut r = Table::new(&["REPLAY TABLE", ">PAGES", ">BYTES"]);
        for v in &replay {
            r.row(vec![
                v["name"].as_str().unwrap_or_default().to_owned(),
                v["pages"].to_string(),
                human_bytes(v["bytes"].as_u64().unwrap_or(0)),
            ]);
        }
        text.push('\n');
        text.push_str(&r.render());
    }
    let json = json!({
        "step": snap.step(),
        "time": iso_time(snap.time()),
        "metrics": snap.metrics(),
        "tags": snap.tags(),
        "bytes": snap.logical_bytes(),
        "entries": entries,
        "replay_tables": replay,
    });
    Ok(Output::ok(text, json))
}
