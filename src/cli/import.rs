//! `ckptdb import`: commit every tensor of a safetensors file as one step.
//! The only command that writes; it takes the database's writer lock, so
//! it fails cleanly while a training process holds the database.

use std::path::Path;

use serde_json::json;

use super::table::human_bytes;
use super::{progress, Output};
use crate::interop::safetensors::{read_header, ImportOptions};
use crate::{Db, Result};

pub(crate) fn run(
    db_path: &Path,
    file: &Path,
    step: u64,
    prefix: String,
    from_latest: bool,
) -> Result<Output> {
    // Validate the file before creating or locking anything.
    let (_, header) = read_header(file)?;
    let keys = header.keys(&prefix)?;
    let total = header
        .tensors
        .iter()
        .map(|t| t.data_offsets.1 - t.data_offsets.0)
        .sum();
    let db = Db::open(db_path)?;
    let pb = progress::bytes("import", total);
    let info = db.import_safetensors(
        file,
        step,
        &ImportOptions::new()
            .prefix(prefix.as_str())
            .from_latest(from_latest),
        &mut |n| pb.set_position(n),
    )?;
    pb.finish_and_clear();
    let text = format!(
        "committed step {} with {} tensors from {} ({}, {} new)\n",
        info.step,
        keys.len(),
        file.display(),
        human_bytes(info.logical_bytes),
        human_bytes(info.new_bytes)
    );
    Ok(Output::ok(
        text,
        json!({
            "step": info.step,
            "tensors": keys,
            "bytes": info.logical_bytes,
            "new_bytes": info.new_bytes,
            "metrics": info.metrics,
        }),
    ))
}
