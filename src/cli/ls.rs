//! `ckptdb ls`: one row per live step.

use serde_json::json;

use super::table::{human_bytes, iso_time, metrics, Table};
use super::Output;
use crate::{Db, Result};

pub(crate) fn run(db: &Db) -> Result<Output> {
    let infos = db.step_infos();
    let mut t = Table::new(&["STEP", "TIME (UTC)", ">BYTES", ">NEW", "METRICS", "TAGS"]);
    let mut rows = Vec::with_capacity(infos.len());
    for i in &infos {
        let time = iso_time(i.time);
        t.row(vec![
            i.step.to_string(),
            time.clone(),
            human_bytes(i.logical_bytes),
            human_bytes(i.new_bytes),
            metrics(&i.metrics),
            i.tags.join(","),
        ]);
        let time_ms = i
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        rows.push(json!({
            "step": i.step,
            "time": time,
            "time_ms": time_ms,
            "bytes": i.logical_bytes,
            "new_bytes": i.new_bytes,
            "metrics": i.metrics,
            "tags": i.tags,
        }));
    }
    let text = if t.is_empty() {
        "no steps\n".to_owned()
    } else {
        let total: u64 = infos.iter().map(|i| i.new_bytes).sum();
        format!(
            "{}{} steps, {} of payload stored\n",
            t.render(),
            infos.len(),
            human_bytes(total)
        )
    };
    Ok(Output::ok(text, serde_json::Value::Array(rows)))
}
