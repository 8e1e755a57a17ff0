//! `ckptdb verify`: read every live entry, check every checksum.
//!
//! Exit 0 when clean, 1 when anything is corrupt (each bad entry listed
//! with its location), 2 when the check could not run (not a database, an
//! I/O error, bad usage).

use std::path::Path;

use serde_json::json;

use super::table::{human_bytes, Table};
use super::{progress, Output, EXIT_CORRUPT, EXIT_OK};
use crate::{Db, Result};

pub(crate) fn run(path: &Path) -> Result<Output> {
    let db = match Db::open_read_only(path) {
        Ok(db) => db,
        // No root can be read: the log itself is damaged.
        Err(e) if e.is_corruption() => {
            let msg = e.to_string();
            return Ok(Output {
                text: format!("CORRUPT: no readable root: {msg}\n"),
                json: json!({
                    "ok": false, "steps": 0, "entries": 0, "bytes": 0,
                    "problems": [{"key": "(root)", "steps": [], "segment": null, "offset": null, "error": msg}],
                }),
                code: EXIT_CORRUPT,
            });
        }
        Err(e) => return Err(e),
    };
    let mut bar = None;
    let report = db.verify_all(&mut |done, total| {
        let pb = bar.get_or_insert_with(|| progress::bytes("verify", total));
        pb.set_position(done);
    })?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let problems: Vec<_> = report
        .problems
        .iter()
        .map(|p| {
            json!({
                "key": p.key,
                "steps": p.steps,
                "segment": p.location.map(|l| l.segment),
                "offset": p.location.map(|l| l.offset),
                "error": p.error.to_string(),
            })
        })
        .collect();
    let summary = format!(
        "{} steps, {} entries, {} checked",
        report.steps,
        report.entries,
        human_bytes(report.bytes)
    );
    let text = if report.is_clean() {
        format!("OK: {summary}\n")
    } else {
        let mut t = Table::new(&["KEY", "STEPS", "LOCATION", "ERROR"]);
        for p in &report.problems {
            t.row(vec![
                p.key.clone(),
                p.steps
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                p.location
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.error.to_string(),
            ]);
        }
        format!(
            "CORRUPT: {} bad of {summary}\n\n{}",
            report.problems.len(),
            t.render()
        )
    };
    Ok(Output {
        text,
        json: json!({
            "ok": report.is_clean(),
            "steps": report.steps,
            "entries": report.entries,
            "bytes": report.bytes,
            "problems": problems,
        }),
        code: if report.is_clean() {
            EXIT_OK
        } else {
            EXIT_CORRUPT
        },
    })
}
