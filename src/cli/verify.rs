//! `ckptdb verify`: read every live entry, check every checksum.
//!
//! Exit 0 when clean, 1 when anything is corrupt (each bad entry listed
//! with its location, durable commits missing from the log said plainly),
//! 2 when the check could not run (not a database, an I/O error, bad usage,
//! a writer reclaiming space faster than the check could finish).

use std::path::Path;

use serde_json::json;

use super::location::{self, DbArg};
use super::table::{human_bytes, Table};
use super::{progress, Output, EXIT_CORRUPT, EXIT_OK};
use crate::{Error, RemoteErrorKind, Result};

pub(crate) fn run(db: &DbArg, cache: Option<&Path>) -> Result<Output> {
    let db = match location::open(db, cache) {
        Ok(db) => db,
        // No root can be read: the log itself is damaged.
        Err(e) if e.is_corruption() => return Ok(unreadable("(root)", "no readable root: ", &e)),
        // A remote piece or root does not match what its root records.
        Err(
            e @ Error::Remote {
                kind: RemoteErrorKind::Corrupt,
                ..
            },
        ) => return Ok(unreadable("(remote)", "", &e)),
        Err(e) => return Err(e),
    };
    let report = progress::with_bytes("verify", |progress| db.verify_all(progress))?;
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
    // Steps examined that hold a problem (a lost commit's steps are not in
    // the log, so they are not among them).
    let bad_steps: std::collections::BTreeSet<u64> = report
        .problems
        .iter()
        .filter(|p| !matches!(p.error, crate::Error::LostCommits { .. }))
        .flat_map(|p| p.steps.iter().copied())
        .collect();
    let summary = format!(
        "{} entries, {} checked",
        report.entries,
        human_bytes(report.bytes)
    );
    let text = if report.is_clean() {
        format!("OK: {} steps, {summary}\n", report.steps)
    } else {
        // Lost commits are said in a sentence of their own: the table's
        // columns are for damaged entries.
        let mut lost = String::new();
        let mut t = Table::new(&["KEY", "STEPS", "LOCATION", "ERROR"]);
        for p in &report.problems {
            if let crate::Error::LostCommits { .. } = p.error {
                lost.push_str(&format!("{}\n", p.error));
                continue;
            }
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
        let n = report.problems.len();
        let mut text = format!(
            "CORRUPT: {} of {} steps damaged, {n} {} ({summary})\n",
            bad_steps.len(),
            report.steps,
            if n == 1 { "problem" } else { "problems" },
        );
        if !lost.is_empty() {
            text.push('\n');
            text.push_str(&lost);
        }
        if !t.is_empty() {
            text.push('\n');
            text.push_str(&t.render());
        }
        text
    };
    Ok(Output {
        text,
        json: json!({
            "ok": report.is_clean(),
            "steps": report.steps,
            "bad_steps": bad_steps,
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

/// The report of a database that could not be opened because something it
/// is made of is damaged.
fn unreadable(key: &str, lead: &str, e: &Error) -> Output {
    let msg = super::error_line(e);
    Output {
        text: format!("CORRUPT: {lead}{msg}\n"),
        json: json!({
            "ok": false, "steps": 0, "bad_steps": [], "entries": 0, "bytes": 0,
            "problems": [{"key": key, "steps": [], "segment": null, "offset": null, "error": msg}],
        }),
        code: EXIT_CORRUPT,
    }
}
