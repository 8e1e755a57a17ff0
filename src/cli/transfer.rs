//! `ckptdb push DB s3://…` and `ckptdb pull s3://… DB`: copy a database to
//! and from object storage (cargo feature `s3`), through
//! [`Remote::push`](crate::remote::Remote::push) and
//! [`Remote::pull`](crate::remote::Remote::pull). A progress bar counts the
//! bytes moved when stderr is a terminal.

use super::location::{check_scheme, DbArg};
use super::Output;
use crate::{Error, Result};

/// The URL of a command's remote argument; a local path there is refused.
fn remote_url<'a>(arg: &'a DbArg, command: &str, role: &str) -> Result<&'a str> {
    match arg {
        DbArg::Remote(url) => {
            check_scheme(url)?;
            Ok(url)
        }
        DbArg::Local(p) => Err(Error::invalid(format!(
            "{command}: the {role} must be an s3://bucket[/prefix] location, not {}",
            p.display()
        ))),
    }
}

#[cfg(feature = "s3")]
pub(crate) fn push(db: &DbArg, to: &DbArg) -> Result<Output> {
    use super::table::human_bytes;
    use crate::remote::{Remote, RemoteOptions};
    use serde_json::json;

    let db = db.local_for("push")?;
    let url = remote_url(to, "push", "destination")?;
    let remote = Remote::open(url, RemoteOptions::from_env())?;
    // A writer appending while the bytes go up would make the remote copy
    // a cut through a moving log: hold the writer lock for the push. A
    // directory whose lock cannot be opened at all (a read-only mount)
    // has no writer either.
    let _no_writer = if db.join(crate::writer::LOCK_FILE).is_file() {
        match crate::writer::lock(db) {
            Ok(lock) => Some(lock),
            Err(Error::Locked { .. }) => {
                return Err(Error::invalid(format!(
                    "push: {} is open for writing in another process; push it once the writer has closed it",
                    db.display()
                )))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let stats =
        super::progress::with_bytes("push", |progress| remote.push_with_progress(db, progress))?;
    let location = remote.location().to_string();
    let step = stats
        .latest_step
        .map_or_else(|| "no step".to_owned(), |s| format!("step {s}"));
    let text = format!(
        "pushed {} to {location}: generation {} ({step}), {} new {} ({}), {} old {} deleted\n",
        db.display(),
        stats.generation,
        stats.pieces_uploaded,
        if stats.pieces_uploaded == 1 {
            "piece"
        } else {
            "pieces"
        },
        human_bytes(stats.bytes_uploaded),
        stats.objects_deleted,
        if stats.objects_deleted == 1 {
            "object"
        } else {
            "objects"
        },
    );
    Ok(Output::ok(
        text,
        json!({
            "db": db.display().to_string(),
            "location": location,
            "generation": stats.generation,
            "latest_step": stats.latest_step,
            "pieces_uploaded": stats.pieces_uploaded,
            "bytes_uploaded": stats.bytes_uploaded,
            "objects_deleted": stats.objects_deleted,
        }),
    ))
}

#[cfg(feature = "s3")]
pub(crate) fn pull(from: &DbArg, db: &DbArg) -> Result<Output> {
    use super::table::human_bytes;
    use crate::remote::{Remote, RemoteOptions};
    use serde_json::json;

    let url = remote_url(from, "pull", "source")?;
    let db = db.local_for("pull")?;
    let remote = Remote::open(url, RemoteOptions::from_env())?;
    let stats =
        super::progress::with_bytes("pull", |progress| remote.pull_with_progress(db, progress))?;
    let location = remote.location().to_string();
    let step = stats
        .latest_step
        .map_or_else(|| "no step".to_owned(), |s| format!("step {s}"));
    let text = format!(
        "pulled {location} into {}: generation {} ({step}), {} {}, {}\n",
        db.display(),
        stats.generation,
        stats.segments,
        if stats.segments == 1 {
            "segment"
        } else {
            "segments"
        },
        human_bytes(stats.bytes_fetched),
    );
    Ok(Output::ok(
        text,
        json!({
            "location": location,
            "db": db.display().to_string(),
            "generation": stats.generation,
            "latest_step": stats.latest_step,
            "segments": stats.segments,
            "bytes_fetched": stats.bytes_fetched,
        }),
    ))
}

#[cfg(not(feature = "s3"))]
pub(crate) fn push(db: &DbArg, to: &DbArg) -> Result<Output> {
    db.local_for("push")?;
    remote_url(to, "push", "destination")?;
    Err(Error::invalid("no S3 support in this build"))
}

#[cfg(not(feature = "s3"))]
pub(crate) fn pull(from: &DbArg, db: &DbArg) -> Result<Output> {
    remote_url(from, "pull", "source")?;
    db.local_for("pull")?;
    Err(Error::invalid("no S3 support in this build"))
}
