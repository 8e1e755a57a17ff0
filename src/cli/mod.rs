//! The `ckptdb` command-line tool: offline inspection, verification, diff,
//! safetensors / npy interop, and (cargo feature `s3`) copies to and from
//! object storage.
//!
//! Every command opens the database read-only (so it works while a
//! training process holds it for writing) except `import` and `compact`,
//! which take the writer lock. Read-only commands also take an
//! `s3://bucket[/prefix]` location, read through a local cache
//! ([`location`]).
//! Every command prints either aligned human-readable text or, with
//! `--json`, exactly one JSON document on stdout. Errors are one line on
//! stderr (and, with `--json`, `{"error": "..."}` on stdout).
//!
//! Exit codes: 0 success; 1 `verify` found corruption; 2 usage errors and
//! every other error.

mod compact;
mod diff;
mod export;
mod history;
mod import;
mod location;
mod ls;
mod progress;
mod replay;
mod report;
mod select;
mod show;
mod stats;
mod table;
mod transfer;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::Result;
use location::{DbArg, OpenDb};
pub use select::Selector;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code of `verify` when something is corrupt.
pub const EXIT_CORRUPT: i32 = 1;
/// Exit code for usage errors and every other error.
pub const EXIT_ERROR: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "ckptdb",
    version,
    about = "Inspect, verify, diff and convert ckptdb checkpoint databases",
    long_about = "Inspect, verify, diff and convert ckptdb checkpoint databases.\n\n\
        SEL names a step: a step number, `latest` (the default), `best:METRIC` \
        (highest value, also `best:METRIC:max`; `best:METRIC:min` for lowest), or \
        `tag:NAME`.\n\n\
        Every command but `import` and `compact` opens the database read-only and \
        works while a training process is writing to it; those two take the writer \
        lock and fail while a training process holds it.\n\n\
        DB may also be an s3://bucket[/prefix] location for every read-only command \
        (in a build with the cargo feature `s3`): the newest generation pushed there \
        is fetched into a local cache (only what the cache lacks, every piece checked \
        against its crc32) and read from it. The cache is --cache DIR, else \
        $CKPTDB_CACHE/BUCKET/PREFIX, else $XDG_CACHE_HOME/ckptdb/BUCKET/PREFIX \
        (~/.cache/ckptdb/... without XDG_CACHE_HOME). `push` and `pull` copy a \
        database up and down. Credentials, region and endpoint come from \
        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, \
        AWS_ENDPOINT_URL and AWS_ALLOW_HTTP.\n\n\
        Exit codes: 0 success, 1 `verify` found corruption, 2 usage or other errors."
)]
struct Cli {
    /// Print exactly one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The local cache directory of an s3:// location (default: see above).
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One row per live step: step, time, sizes, metrics, tags.
    Ls {
        /// The database directory or s3:// location.
        db: DbArg,
        /// Draw this metric as a sparkline under the table.
        #[arg(long, value_name = "METRIC")]
        plot: Option<String>,
    },
    /// Every entry of a step: key, kind, dtype, shape, size; values printed.
    Show {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The step.
        #[arg(default_value = "latest")]
        sel: Selector,
    },
    /// Statistics and a histogram of one tensor.
    Stats {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The step.
        sel: Selector,
        /// The tensor's key.
        key: String,
        /// Number of histogram bins.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
        bins: u16,
    },
    /// What changed between two steps.
    Diff {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The older step.
        a: Selector,
        /// The newer step.
        b: Selector,
    },
    /// The live steps at which a key's content changed.
    History {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The key.
        key: String,
    },
    /// Read every live entry and check every checksum (exit 1 if corrupt).
    Verify {
        /// The database directory or s3:// location.
        db: DbArg,
    },
    /// Write a step's tensors as a safetensors file or a tree of .npy files.
    Export {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The step.
        sel: Selector,
        /// The output file (safetensors) or directory (npy-dir).
        out: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = export::Format::Safetensors)]
        format: export::Format,
        /// Export only keys starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Remove the prefix from the exported names.
        #[arg(long)]
        strip_prefix: bool,
        /// Replace an existing safetensors file.
        #[arg(long)]
        force: bool,
    },
    /// Commit every tensor of a safetensors file as a new step.
    Import {
        /// The database directory (created if it does not exist).
        db: DbArg,
        /// The safetensors file.
        file: PathBuf,
        /// The step to commit (greater than every committed step).
        #[arg(long)]
        step: u64,
        /// Prepended to every tensor name to form its key.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keep the newest step's entries and add the file's tensors to them.
        #[arg(long)]
        from_latest: bool,
    },
    /// Replay tables of a step: schema, capacity, length, total inserted;
    /// with TABLE, that table and its newest rows.
    Replay {
        /// The database directory or s3:// location.
        db: DbArg,
        /// One table to show with its rows (default: list every table).
        table: Option<String>,
        /// The step.
        #[arg(long, default_value = "latest")]
        step: Selector,
        /// How many of the newest rows to print.
        #[arg(long, default_value_t = 5)]
        sample: u64,
    },
    /// A self-contained HTML page of metric curves, tensor heatmaps,
    /// first NaN/Inf steps, storage and replay fill.
    Report {
        /// The database directory or s3:// location.
        db: DbArg,
        /// The page to write (default `report.html`; with `--json`, only
        /// when given).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Only tensor keys starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only live steps in this range: `SEL..SEL`, either end optional.
        #[arg(long, value_name = "SEL..SEL")]
        steps: Option<report::StepRange>,
        /// A metric whose best value is its lowest (a loss); repeatable.
        /// Other metrics' best is their highest, as for `best:METRIC`.
        #[arg(long = "min", value_name = "METRIC")]
        lower_is_better: Vec<String>,
    },
    /// Reclaim space now; prints the log's size before and after.
    Compact {
        /// The database directory.
        db: DbArg,
        /// Copy a sealed segment's live entries forward when its live
        /// fraction is below this (0 only deletes dead segments).
        #[arg(long, default_value_t = crate::DEFAULT_LIVE_THRESHOLD)]
        threshold: f64,
    },
    /// Upload a closed database to s3://bucket[/prefix]: only the bytes the
    /// remote lacks, then a new generation naming them.
    Push {
        /// The local database directory.
        db: DbArg,
        /// The location, s3://bucket[/prefix].
        to: DbArg,
    },
    /// Copy the newest generation at s3://bucket[/prefix] into a new local
    /// database directory (which must not exist or be empty).
    Pull {
        /// The location, s3://bucket[/prefix].
        from: DbArg,
        /// The local database directory to create.
        db: DbArg,
    },
}

/// What a command produced: text for people, a JSON document for programs,
/// and the exit code.
pub(crate) struct Output {
    pub text: String,
    pub json: serde_json::Value,
    pub code: i32,
}

impl Output {
    pub(crate) fn ok(text: String, json: serde_json::Value) -> Output {
        Output {
            text,
            json,
            code: EXIT_OK,
        }
    }
}

/// Opens a directory or an `s3://` location read-only (a location through
/// its cache, `cache` or the default one); durable commits missing from the
/// log are said on stderr (the command still shows what the log holds).
pub(crate) fn open_read_only(db: &DbArg, cache: Option<&Path>) -> Result<OpenDb> {
    let opened = location::open(db, cache)?;
    if let Some(lost) = opened.lost_commits() {
        eprintln!(
            "ckptdb: warning: {}",
            lost.explain(Path::new(&db.to_string()))
        );
    }
    Ok(opened)
}

fn run(cli: Cli) -> Result<Output> {
    let cache = cli.cache.as_deref();
    let open = |db: &DbArg| open_read_only(db, cache);
    match cli.command {
        Command::Ls { db, plot } => ls::run(&*open(&db)?, plot.as_deref()),
        Command::Show { db, sel } => show::run(&*open(&db)?, &sel),
        Command::Stats { db, sel, key, bins } => {
            stats::run(&*open(&db)?, &sel, &key, bins as usize)
        }
        Command::Diff { db, a, b } => diff::run(&*open(&db)?, &a, &b),
        Command::History { db, key } => history::run(&*open(&db)?, &key),
        Command::Verify { db } => verify::run(&db, cache),
        Command::Export {
            db,
            sel,
            out,
            format,
            prefix,
            strip_prefix,
            force,
        } => export::run(
            &*open(&db)?,
            &sel,
            &out,
            export::Options {
                format,
                prefix,
                strip_prefix,
                force,
            },
        ),
        Command::Import {
            db,
            file,
            step,
            prefix,
            from_latest,
        } => import::run(db.local_for("import")?, &file, step, prefix, from_latest),
        Command::Report {
            db,
            out,
            prefix,
            steps,
            lower_is_better,
        } => report::run(
            &db,
            cache,
            report::Options {
                out,
                prefix,
                steps,
                lower_is_better,
                json: cli.json,
            },
        ),
        Command::Compact { db, threshold } => compact::run(db.local_for("compact")?, threshold),
        Command::Replay {
            db,
            table,
            step,
            sample,
        } => replay::run(&*open(&db)?, &step, table.as_deref(), sample),
        Command::Push { db, to } => transfer::push(&db, &to),
        Command::Pull { from, db } => transfer::pull(&from, &db),
    }
}

/// Writes `s` to stdout; a closed pipe (`ckptdb ls | head`) is not an error.
fn print_stdout(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// With `--json`, a failure still prints one JSON document on stdout:
/// `{"error": "..."}` (the same line also goes to stderr).
fn print_json_error(msg: &str) {
    let _ = print_stdout(&format!("{}\n", serde_json::json!({ "error": msg })));
}

/// An error as the one line the tool prints. An object-store error keeps
/// its kind and what was being done, and of the client's long report only
/// the cause: the server's error code and message, or the innermost error
/// (`Connection refused`), and how often the request was retried.
pub(crate) fn error_line(e: &crate::Error) -> String {
    let line = match e {
        crate::Error::Remote {
            kind,
            what,
            source: Some(source),
        } => {
            let mut chain = Vec::new();
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cur {
                chain.push(c.to_string());
                cur = c.source();
            }
            let all = chain.join(" ");
            let tag = |name: &str| {
                let open = format!("<{name}>");
                let start = all.find(&open)? + open.len();
                let len = all[start..].find(&format!("</{name}>"))?;
                Some(all[start..start + len].trim().to_owned())
            };
            let mut cause = match (tag("Code"), tag("Message")) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code,
                _ => chain.last().cloned().unwrap_or_default(),
            };
            if let Some(at) = all.find("after ") {
                let retries: String = all[at..].split(',').next().unwrap_or("").to_owned();
                if retries.ends_with(" retries") || retries.ends_with(" retry") {
                    cause = format!("{cause} ({retries})");
                }
            }
            format!("remote {kind}: {what}: {cause}")
        }
        e => e.to_string(),
    };
    // One line, whatever a message held.
    line.replace(['\n', '\r'], " ")
}

/// Runs the tool on the process arguments and returns the exit code.
pub fn main() -> i32 {
    // No input may panic; if a bug does, print one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("ckptdb: internal error: {msg}");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return EXIT_OK;
            }
            if std::env::args_os().any(|a| a == "--json") {
                // clap's own first line ("unexpected argument 'x' found"),
                // not only the kind of error.
                let rendered = e.to_string();
                let detail = rendered
                    .lines()
                    .next()
                    .map(|l| l.trim_start_matches("error: ").trim())
                    .filter(|l| !l.is_empty())
                    .unwrap_or("invalid usage");
                print_json_error(&format!("usage: {detail}"));
            }
            return EXIT_ERROR;
        }
    };
    let json = cli.json;
    let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let line = error_line(&e);
            eprintln!("ckptdb: error: {line}");
            if json {
                print_json_error(&line);
            }
            return EXIT_ERROR;
        }
        Err(_) => {
            if json {
                print_json_error("internal error");
            }
            return EXIT_ERROR;
        }
    };
    let text = if json {
        let mut s = serde_json::to_string_pretty(&out.json).unwrap_or_else(|_| "null".into());
        s.push('\n');
        s
    } else {
        out.text
    };
    if let Err(e) = print_stdout(&text) {
        eprintln!("ckptdb: error: writing output: {e}");
        return EXIT_ERROR;
    }
    out.code
}
