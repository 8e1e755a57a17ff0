//! The one error type of the crate.
//!
//! Every failure a caller can see is a variant of [`Error`]. Variants carry
//! enough context to print one clear line (which file, which offset, which
//! key), and [`std::error::Error::source`] exposes the underlying I/O or
//! catalog error where there is one.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dtype::DType;

/// A specialized `Result` for ckptdb operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ckptdb.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on `path`.
    Io {
        /// What the engine was doing ("write", "fdatasync", …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error the operating system returned.
        source: io::Error,
    },
    /// Bytes on disk do not have the structure the format requires.
    Corruption {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Offset of the structure that failed to parse.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A payload or header does not match its stored crc32.
    ChecksumMismatch {
        /// The segment file holding the entry.
        path: PathBuf,
        /// Offset of the entry in that file.
        offset: u64,
        /// The entry's key, or a description of the structure.
        key: String,
        /// The crc32 recorded for the bytes.
        expected: u32,
        /// The crc32 of the bytes as found.
        actual: u32,
    },
    /// No live step with this number.
    StepNotFound {
        /// The step asked for.
        step: u64,
    },
    /// The step exists but holds no entry under this key.
    KeyNotFound {
        /// The step searched.
        step: u64,
        /// The key asked for.
        key: String,
    },
    /// Something else named by the caller does not exist (a tag, a replay
    /// table, a metric).
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A typed access asked for another element type than the one stored.
    DtypeMismatch {
        /// The entry's key.
        key: String,
        /// The dtype stored in the database.
        stored: DType,
        /// The dtype the caller asked for.
        requested: DType,
    },
    /// A shape does not match what it must match.
    ShapeMismatch {
        /// What was being checked.
        what: String,
        /// The shape that was required.
        expected: Vec<u64>,
        /// The shape that was given or found.
        actual: Vec<u64>,
    },
    /// A payload is not aligned for its element type (a damaged or foreign
    /// file; ckptdb itself always writes payloads 64-byte aligned).
    Misaligned {
        /// The entry's key.
        key: String,
        /// The payload's offset in its segment.
        offset: u64,
        /// The alignment the element type needs.
        align: usize,
    },
    /// A writer holds the write lock of the database.
    Locked {
        /// The database directory.
        path: PathBuf,
        /// True when the holder is this very process: another open [`Db`]
        /// (or `CheckpointManager`) of the same database. Share that handle
        /// instead of opening the database twice.
        ///
        /// [`Db`]: crate::Db
        this_process: bool,
    },
    /// A file was written by a newer (or unknown) version of the format.
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// The path is not a ckptdb database (or holds files that are not ours).
    NotADatabase {
        /// The path given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A file given to ckptdb to read (not part of a database) is not a
    /// valid file of its format.
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// The format it should have had ("safetensors").
        format: &'static str,
        /// Offset of the structure that is wrong.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An argument is out of its domain: a non-monotonic step, a bad key, a
    /// value too large for the format's limits.
    InvalidArgument(String),
    /// A stored serde value does not deserialize into the requested type.
    Value {
        /// The entry's key.
        key: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// The operation needs a writer, but the database was opened read-only.
    ReadOnly,
    /// An earlier I/O error during a commit left the writer in an unknown
    /// state. Nothing more is written; reopen the database to recover the
    /// last committed state.
    Poisoned {
        /// The error that poisoned the writer (also [`source`]).
        ///
        /// [`source`]: std::error::Error::source
        cause: Arc<Error>,
    },
    /// A thread doing the engine's work (a background commit of
    /// [`crate::trainer::CheckpointManager::save_async`]) panicked; what it
    /// was doing did not complete.
    Panicked {
        /// What the thread was doing.
        what: String,
    },
    /// Commits that were durable are missing from the log (a segment was
    /// cut, damaged or deleted after they were acknowledged): the log now
    /// shows an older state. The writer refuses to open; `verify` reports it;
    /// a read-only open reports it through [`crate::Db::lost_commits`].
    LostCommits {
        /// The database directory.
        path: PathBuf,
        /// What was lost.
        lost: LostCommits,
    },
    /// The derived catalog (`index.redb`) failed. The log is unaffected;
    /// reopening rebuilds the catalog.
    Catalog(CatalogError),
    /// A multi-rank run was opened with another world size than the one
    /// recorded when it was created.
    WorldSizeMismatch {
        /// The run's root directory.
        root: PathBuf,
        /// The world size the run was created with.
        recorded: u32,
        /// The world size given now.
        given: u32,
    },
    /// The slices of a key in one global step do not form one tensor: the
    /// step does not commit.
    ShardLayout {
        /// The global step.
        step: u64,
        /// The key.
        key: String,
        /// What is wrong.
        problem: ShardProblem,
    },
    /// A create-only record exists with other content than this process
    /// would have written (a second writer of the same rank or step).
    CommitConflict {
        /// The record's name under the run's root.
        record: String,
        /// What differs.
        reason: String,
    },
    /// An operation on a remote object store (`s3://…`) failed.
    Remote {
        /// What kind of failure, for callers that handle some kinds.
        kind: RemoteErrorKind,
        /// What was being done, and on which location.
        what: String,
        /// The object-store client's error, where there is one.
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
}

/// Why the slices of a key do not form one global tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardProblem {
    /// Offsets, slice shape and global shape have different ranks.
    RankMismatch {
        /// Dimensions of the global shape.
        global: usize,
        /// Number of offsets.
        offsets: usize,
        /// Dimensions of the slice.
        shard: usize,
    },
    /// The slice reaches past the global shape.
    OutOfBounds {
        /// The slice's offsets.
        offsets: Vec<u64>,
        /// The slice's shape.
        shape: Vec<u64>,
    },
    /// Two slices share elements.
    Overlap {
        /// The ranks holding them.
        ranks: (u32, u32),
    },
    /// The slices leave elements of the global tensor uncovered.
    Gap {
        /// Elements covered.
        covered: u64,
        /// Elements of the global tensor.
        total: u64,
    },
    /// A slice has another dtype than its siblings.
    DtypeDiffers {
        /// The dtype of the first slice.
        first: DType,
        /// The rank whose slice differs.
        rank: u32,
        /// Its dtype.
        dtype: DType,
    },
    /// A slice names another global shape than its siblings.
    GlobalShapeDiffers {
        /// The global shape of the first slice.
        first: Vec<u64>,
        /// The rank whose slice differs.
        rank: u32,
        /// The global shape it names.
        global_shape: Vec<u64>,
    },
    /// One rank put the key as a shard, another as a replicated tensor.
    ReplicatedAndSharded,
    /// Ranks put different contents under one replicated key.
    ReplicasDiffer {
        /// A rank whose copy differs from rank 0's (or the first's).
        rank: u32,
    },
    /// A replicated key was put by other ranks but not by rank 0, which
    /// stores replicated tensors.
    ReplicaNotOnRankZero,
    /// One rank put two slices of the key in one step.
    DuplicateShard {
        /// The rank.
        rank: u32,
    },
}

impl fmt::Display for ShardProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardProblem::RankMismatch {
                global,
                offsets,
                shard,
            } => write!(
                f,
                "global shape has {global} dimensions, offsets {offsets}, the slice {shard}"
            ),
            ShardProblem::OutOfBounds { offsets, shape } => write!(
                f,
                "slice at {offsets:?} of shape {shape:?} reaches past the global shape"
            ),
            ShardProblem::Overlap { ranks: (a, b) } => {
                write!(f, "the slices of ranks {a} and {b} overlap")
            }
            ShardProblem::Gap { covered, total } => {
                write!(f, "the slices cover {covered} of {total} elements (a gap)")
            }
            ShardProblem::DtypeDiffers { first, rank, dtype } => {
                write!(f, "rank {rank} put {dtype}, another rank {first}")
            }
            ShardProblem::GlobalShapeDiffers {
                first,
                rank,
                global_shape,
            } => write!(
                f,
                "rank {rank} names global shape {global_shape:?}, another rank {first:?}"
            ),
            ShardProblem::ReplicatedAndSharded => {
                f.write_str("put as a shard by one rank and as a replicated tensor by another")
            }
            ShardProblem::ReplicasDiffer { rank } => {
                write!(
                    f,
                    "rank {rank}'s replicated copy differs from another rank's"
                )
            }
            ShardProblem::ReplicaNotOnRankZero => {
                f.write_str("replicated tensor not put by rank 0, which stores it")
            }
            ShardProblem::DuplicateShard { rank } => {
                write!(f, "rank {rank} put two slices in one step")
            }
        }
    }
}

/// Durable commits the log no longer holds, as far as the evidence tells
/// (the writer's catalog, written after each commit was durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostCommits {
    /// How many durable commits are missing.
    pub commits: u64,
    /// Steps those commits added that the log no longer has.
    pub lost_steps: Vec<u64>,
    /// The newest step the log still holds, from which work would continue.
    pub kept_step: Option<u64>,
}

impl LostCommits {
    /// The one explanation the writer, a read-only open and `verify` give:
    /// what was lost and what each way forward costs.
    pub fn explain(&self, db: &std::path::Path) -> String {
        let plural = |n: usize, one: &str, many: &str| {
            if n == 1 {
                one.to_owned()
            } else {
                many.to_owned()
            }
        };
        let steps = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let what = match self.lost_steps.len() {
            0 => format!(
                "{} durable {} missing from the log (they added no step: they dropped or tagged steps)",
                self.commits,
                plural(self.commits as usize, "commit is", "commits are"),
            ),
            n => format!(
                "{} durable {} missing from the log: {} {} lost",
                self.commits,
                plural(self.commits as usize, "commit is", "commits are"),
                plural(n, "step", "steps"),
                steps(&self.lost_steps),
            ),
        };
        let from = match self.kept_step {
            Some(s) => format!("continue from step {s}"),
            None => "start from an empty database".to_owned(),
        };
        let gone = if self.lost_steps.is_empty() {
            String::new()
        } else {
            format!(" ({} gone for good)", steps(&self.lost_steps))
        };
        format!(
            "{what}. Either restore the missing or damaged segment files under {}/log from a \
             backup to get them back, or delete {}/index.redb to accept the loss and {from}{gone}",
            db.display(),
            db.display(),
        )
    }
}

/// The kinds of [`Error::Remote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The location is not of the form `s3://bucket[/prefix]`.
    InvalidUrl,
    /// The bucket does not exist.
    BucketNotFound,
    /// No credentials were given, or the store refused them.
    Credentials,
    /// The endpoint could not be reached (refused, timed out) within the
    /// retry budget.
    Unreachable,
    /// A create-only root object already exists: another writer owns that
    /// generation.
    Conflict,
    /// The location holds no database (no root object), or an object a
    /// root names is missing.
    NotFound,
    /// A remote object does not have the structure or checksum it must.
    Corrupt,
    /// The local database and the remote copy hold different bytes for the
    /// same segment range, so neither is a prefix of the other.
    Diverged,
    /// Any other failure of the object store.
    Other,
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteErrorKind::InvalidUrl => "invalid location",
            RemoteErrorKind::BucketNotFound => "bucket not found",
            RemoteErrorKind::Credentials => "credentials error",
            RemoteErrorKind::Unreachable => "endpoint unreachable",
            RemoteErrorKind::Conflict => "create-only conflict",
            RemoteErrorKind::NotFound => "not found",
            RemoteErrorKind::Corrupt => "corrupt object",
            RemoteErrorKind::Diverged => "diverged from local database",
            RemoteErrorKind::Other => "object store error",
        })
    }
}

impl Error {
    #[cfg(feature = "s3")]
    pub(crate) fn remote(kind: RemoteErrorKind, what: impl Into<String>) -> Error {
        Error::Remote {
            kind,
            what: what.into(),
            source: None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    /// True for errors that mean bytes on disk are damaged (as opposed to a
    /// bad argument or an I/O failure).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. }
                | Error::ChecksumMismatch { .. }
                | Error::Misaligned { .. }
                | Error::LostCommits { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            Error::Corruption {
                path,
                offset,
                reason,
            } => write!(f, "corruption in {} at offset {offset}: {reason}", path.display()),
            Error::ChecksumMismatch {
                path,
                offset,
                key,
                expected,
                actual,
            } => write!(
                f,
                "checksum mismatch for {key} in {} at offset {offset}: stored {expected:08x}, computed {actual:08x}",
                path.display()
            ),
            Error::StepNotFound { step } => write!(f, "step {step} not found"),
            Error::KeyNotFound { step, key } => write!(f, "key {key:?} not found in step {step}"),
            Error::NotFound { what } => write!(f, "{what} not found"),
            Error::DtypeMismatch {
                key,
                stored,
                requested,
            } => write!(f, "dtype mismatch for {key:?}: stored {stored}, requested {requested}"),
            Error::ShapeMismatch {
                what,
                expected,
                actual,
            } => write!(f, "shape mismatch for {what}: expected {expected:?}, got {actual:?}"),
            Error::Misaligned { key, offset, align } => write!(
                f,
                "payload of {key:?} at offset {offset} is not aligned to {align} bytes"
            ),
            Error::Locked {
                path,
                this_process: true,
            } => write!(
                f,
                "database {} is already open for writing in this process; share that handle \
                 (e.g. CheckpointManager::new(Arc::new(db), options)) instead of opening it again",
                path.display()
            ),
            Error::Locked { path, .. } => write!(
                f,
                "database {} is locked by a writer in another process",
                path.display()
            ),
            Error::IncompatibleVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}; this build reads versions up to {supported}",
                path.display()
            ),
            Error::NotADatabase { path, reason } => {
                write!(f, "{} is not a ckptdb database: {reason}", path.display())
            }
            Error::InvalidFile {
                path,
                format,
                offset,
                reason,
            } => write!(
                f,
                "{} is not a valid {format} file: {reason} (at byte {offset})",
                path.display()
            ),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::Value { key, source } => write!(f, "value {key:?} does not decode: {source}"),
            Error::ReadOnly => write!(f, "the database is open read-only"),
            Error::Poisoned { cause } => write!(
                f,
                "the writer is poisoned by an earlier error ({cause}); reopen the database"
            ),
            Error::Panicked { what } => write!(f, "{what} panicked"),
            Error::LostCommits { path, lost } => f.write_str(&lost.explain(path)),
            Error::Catalog(e) => write!(f, "catalog error: {e}"),
            Error::WorldSizeMismatch {
                root,
                recorded,
                given,
            } => write!(
                f,
                "{} was created for world size {recorded}, not {given}",
                root.display()
            ),
            Error::ShardLayout { step, key, problem } => {
                write!(f, "global step {step}, key {key:?}: {problem}")
            }
            Error::CommitConflict { record, reason } => {
                write!(f, "record {record} exists with other content: {reason}")
            }
            Error::Remote { kind, what, source } => {
                write!(f, "remote {kind}: {what}")?;
                match source {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Value { source, .. } => Some(source),
            Error::Catalog(e) => Some(e),
            Error::Poisoned { cause } => Some(cause.as_ref()),
            Error::Remote {
                source: Some(e), ..
            } => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// A failure of the derived catalog (`index.redb`). Opaque: the catalog's
/// storage engine is an implementation detail, reachable only as
/// [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct CatalogError(Box<redb::Error>);

impl CatalogError {
    /// The catalog's file does not hold what the catalog wrote.
    pub(crate) fn corrupted(what: String) -> CatalogError {
        CatalogError(Box::new(redb::Error::Corrupted(what)))
    }

    /// Another handle of this process has the catalog's file open.
    pub(crate) fn is_already_open(&self) -> bool {
        matches!(*self.0, redb::Error::DatabaseAlreadyOpen)
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CatalogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Turns a catalog engine error into an [`Error::Catalog`]; the catalog's
/// module maps every engine call through it (`.map_err(catalog)?`), so no
/// engine type appears in the public `From` impls of [`Error`].
pub(crate) fn catalog(e: impl Into<redb::Error>) -> Error {
    Error::Catalog(CatalogError(Box::new(e.into())))
}

impl Error {
    /// A copy of this error to keep as the cause of a poisoned writer,
    /// while the original is returned to the caller that hit it. The
    /// errors that poison a writer (I/O, a panic, an earlier poisoning)
    /// are copied exactly; an I/O error keeps its kind, its OS error code
    /// and its message. Any other error is kept as its message.
    pub(crate) fn replicate(&self) -> Error {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Error::Poisoned { cause } => Error::Poisoned {
                cause: Arc::clone(cause),
            },
            Error::Panicked { what } => Error::Panicked { what: what.clone() },
            other => Error::Io {
                op: "commit",
                path: PathBuf::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}
