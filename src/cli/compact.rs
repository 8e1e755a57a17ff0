//! `ckptdb compact`: reclaim space now. Deletes segments with nothing live
//! and copies the live entries of mostly-dead segments forward. Like
//! `import` it takes the writer lock, so it fails cleanly while a training
//! process holds the database.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget};
use serde_json::json;

use super::table::human_bytes;
use super::Output;
use crate::{Db, Result};

pub(crate) fn run(db_path: &Path, threshold: f64) -> Result<Output> {
    // Refuse a path that is not a database rather than creating one.
    drop(Db::open_read_only(db_path)?);
    let db = Db::open(db_path)?;
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_message("compacting");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let stats = db.compact_with(threshold)?;
    spinner.finish_and_clear();
    let text = format!(
        "{} -> {} ({} segments deleted, {} entries / {} copied forward)\n",
        human_bytes(stats.bytes_before),
        human_bytes(stats.bytes_after),
        stats.segments_deleted,
        stats.entries_copied,
        human_bytes(stats.bytes_copied),
    );
    Ok(Output::ok(
        text,
        json!({
            "bytes_before": stats.bytes_before,
            "bytes_after": stats.bytes_after,
            "segments_deleted": stats.segments_deleted,
            "entries_copied": stats.entries_copied,
            "bytes_copied": stats.bytes_copied,
        }),
    ))
}
