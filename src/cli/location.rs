//! Where a command finds its database: a local directory, or an
//! `s3://bucket[/prefix]` location (with the cargo feature `s3`) opened
//! read-only through a local cache.
//!
//! The cache of a location is `--cache DIR` when given, else
//! `$CKPTDB_CACHE/<bucket>/<prefix>`, else
//! `$XDG_CACHE_HOME/ckptdb/<bucket>/<prefix>` (`~/.cache` when
//! `XDG_CACHE_HOME` is unset). A command holds a lock on the cache for as
//! long as it reads the database, so two commands never rewrite a cache
//! under each other; the second one fails with a message saying so.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Db, Error, Result};

/// A database argument as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DbArg {
    /// A local database directory.
    Local(PathBuf),
    /// A URL (`scheme://...`); only `s3://` is supported, and only with
    /// the `s3` feature.
    Remote(String),
}

impl From<OsString> for DbArg {
    fn from(s: OsString) -> DbArg {
        match s.to_str() {
            Some(text) if looks_like_url(text) => DbArg::Remote(text.to_owned()),
            _ => DbArg::Local(PathBuf::from(s)),
        }
    }
}

/// `scheme://…` with an RFC 3986 scheme: a URL, never a relative path a
/// user meant (`s3:` would be an odd directory name to write on purpose).
fn looks_like_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl fmt::Display for DbArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbArg::Local(p) => write!(f, "{}", p.display()),
            DbArg::Remote(url) => f.write_str(url),
        }
    }
}

impl DbArg {
    /// The local directory of a command that writes (`import`, `compact`)
    /// or copies files (`push`, `pull`); a remote location is refused.
    pub(crate) fn local_for(&self, command: &str) -> Result<&Path> {
        match self {
            DbArg::Local(p) => Ok(p),
            DbArg::Remote(url) => {
                check_scheme(url)?;
                let hint = match command {
                    "push" | "pull" => String::new(),
                    _ => format!(" (pull it, {command} the local copy, push that)"),
                };
                Err(Error::invalid(format!(
                    "{command}: {url} is a remote location; {command} needs a local database directory{hint}"
                )))
            }
        }
    }
}

/// Refuses a URL whose scheme is not `s3`, and any URL in a build without
/// the `s3` feature, with a message saying which.
pub(crate) fn check_scheme(url: &str) -> Result<()> {
    if !url.starts_with("s3://") {
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        return Err(Error::invalid(format!(
            "{url}: unsupported location scheme {scheme:?} (a local directory or s3://bucket[/prefix])"
        )));
    }
    if cfg!(feature = "s3") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{url}: this ckptdb was built without S3 support \
             (rebuild with the cargo feature `s3`)"
        )))
    }
}

/// A database opened for reading, with the cache lock it needs held for
/// as long as it lives.
pub(crate) struct OpenDb {
    db: Db,
    _cache_lock: Option<std::fs::File>,
}

impl std::ops::Deref for OpenDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

/// Opens `arg` read-only: a local directory directly, a remote location
/// through its cache (see the module documentation).
pub(crate) fn open(arg: &DbArg, cache: Option<&Path>) -> Result<OpenDb> {
    match arg {
        DbArg::Local(path) => Ok(OpenDb {
            db: Db::open_read_only(path)?,
            _cache_lock: None,
        }),
        DbArg::Remote(url) => {
            check_scheme(url)?;
            open_remote(url, cache)
        }
    }
}

#[cfg(not(feature = "s3"))]
fn open_remote(url: &str, _cache: Option<&Path>) -> Result<OpenDb> {
    // `check_scheme` already refused every URL in this build.
    Err(Error::invalid(format!(
        "{url}: no S3 support in this build"
    )))
}

#[cfg(feature = "s3")]
fn open_remote(url: &str, cache: Option<&Path>) -> Result<OpenDb> {
    use crate::remote::{Remote, RemoteOptions};

    let remote = Remote::open(url, RemoteOptions::from_env())?;
    let dir = match cache {
        Some(dir) => dir.to_owned(),
        None => default_cache(remote.location())?,
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let lock = lock_cache(&dir)?;
    let db = super::progress::with_bytes("fetch", |progress| {
        remote.open_db_with_progress(&dir, progress)
    })?;
    Ok(OpenDb {
        db,
        _cache_lock: Some(lock),
    })
}

/// `$CKPTDB_CACHE/<bucket>/<prefix>`, else the platform cache directory's
/// `ckptdb/<bucket>/<prefix>`.
#[cfg(feature = "s3")]
fn default_cache(location: &crate::remote::Location) -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let root = if let Some(dir) = var("CKPTDB_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        dir.join("ckptdb")
    } else if let Some(home) = var("HOME") {
        PathBuf::from(home).join(".cache").join("ckptdb")
    } else {
        return Err(Error::invalid(format!(
            "{location}: no cache directory (pass --cache DIR or set CKPTDB_CACHE)"
        )));
    };
    let mut dir = root.join(&location.bucket);
    for part in location.prefix.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    Ok(dir)
}

/// An exclusive lock on `dir/LOCK`, or an error saying another process
/// uses the cache.
#[cfg(feature = "s3")]
fn lock_cache(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::invalid(format!(
            "the cache {} is in use by another ckptdb process (wait for it, or pass --cache DIR)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        for url in ["s3://b/x", "s3://", "gs://b", "S3://b", "file:///tmp/x"] {
            assert_eq!(DbArg::from(OsString::from(url)), DbArg::Remote(url.into()));
        }
        for path in [
            "run.ckpt",
            "./s3:/b",
            "/tmp/a://b",
            "://x",
            "s3:/b",
            "1x://y",
        ] {
            assert_eq!(
                DbArg::from(OsString::from(path)),
                DbArg::Local(path.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn writers_refuse_remote_locations() {
        let e = DbArg::Remote("s3://bkt/x".into())
            .local_for("import")
            .unwrap_err()
            .to_string();
        if cfg!(feature = "s3") {
            assert!(
                e.contains("import: s3://bkt/x is a remote location; import needs a local"),
                "{e}"
            );
        } else {
            assert!(e.contains("built without S3 support"), "{e}");
        }
        let e = DbArg::Remote("gs://bkt/x".into())
            .local_for("compact")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported location scheme \"gs\""), "{e}");
        assert_eq!(
            DbArg::Local("a".into()).local_for("import").unwrap(),
            Path::new("a")
        );
    }
}
